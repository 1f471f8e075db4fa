#!/usr/bin/env bash
# kvstore against etcd, side by side, in one run on this machine.
#
#   bench/vs-etcd.sh [--rounds N] [--ops N] [--cases "put:1 put:64 ... watch:100"]
#
# Both stores run 3 members on loopback addresses, on the same disk, and are
# driven by the same closed-loop load generator (`kvctl bench`, which speaks
# each store's own gRPC API): 8-byte keys, 256-byte values, --ops operations
# per case (default 20,000), every request to the leader. Each case starts a
# fresh cluster of each store, runs, records the members' RSS, and stops it;
# the two stores alternate within a round (and which goes first alternates
# between rounds) so that drift on a shared machine hits both alike. The
# table gives the median over the rounds (default 2).
#
# Installs the reference (Debian's etcd-server) if `etcd` is missing. Not run
# in CI (CI runs a small `kvctl bench` smoke test instead). Only processes it
# started are stopped, by PID; its temp dir is removed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

ROUNDS=2
OPS=20000
CASES="put:1 put:64 put:256 get-linearizable:64 get-serializable:64 txn:64 watch:100"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --ops) OPS=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if ! command -v etcd >/dev/null 2>&1; then
  echo "installing the reference: Debian's etcd-server" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >&2
fi
ETCD_VERSION=$(etcd --version | head -n1)

cargo build --release --quiet -p kvstore -p kvstore-client
KVSTORE="$ROOT/target/release/kvstore"
KVCTL="$ROOT/target/release/kvctl"

WORK=$(mktemp -d /tmp/vs-etcd.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Addresses of this run only (every 127.x address is loopback on Linux).
ETCD_IP=(127.0.77.1 127.0.77.2 127.0.77.3)
KV_BASE=127.0.78.10

# rss_mib PID...: the largest resident set among the PIDs, in MiB.
rss_mib() {
  local max=0 kb
  for pid in "$@"; do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    if [ "${kb:-0}" -gt "$max" ]; then max=$kb; fi
  done
  echo $(( max / 1024 ))
}

# wait_for CMD...: retries CMD for up to 30 s.
wait_for() {
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "timed out waiting for: $*" >&2
  return 1
}

start_etcd() {
  local dir=$1 cluster="" i
  for i in 0 1 2; do
    cluster="${cluster:+$cluster,}e$i=http://${ETCD_IP[$i]}:2380"
  done
  MEMBER_PIDS=()
  for i in 0 1 2; do
    etcd --name "e$i" --data-dir "$dir/e$i" \
      --listen-client-urls "http://${ETCD_IP[$i]}:2379" \
      --advertise-client-urls "http://${ETCD_IP[$i]}:2379" \
      --listen-peer-urls "http://${ETCD_IP[$i]}:2380" \
      --initial-advertise-peer-urls "http://${ETCD_IP[$i]}:2380" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "vs-etcd-$$" \
      --logger zap --log-level error >"$dir/e$i.log" 2>&1 &
    MEMBER_PIDS+=($!)
    PIDS+=($!)
  done
  ENDPOINTS="${ETCD_IP[0]}:2379,${ETCD_IP[1]}:2379,${ETCD_IP[2]}:2379"
  wait_for "$KVCTL" bench --backend etcd --endpoints "$ENDPOINTS" --op put --ops 1 --warmup 0 --json
}

start_kvstore() {
  local dir=$1
  "$KVSTORE" local --dir "$dir" --base-ip "$KV_BASE" --fresh --log-level warn >"$dir.log" 2>&1 &
  SUPERVISOR=$!
  PIDS+=($!)
  wait_for "$KVSTORE" local endpoints --dir "$dir"
  ENDPOINTS=$("$KVSTORE" local endpoints --dir "$dir")
  wait_for "$KVCTL" bench --backend kvstore --endpoints "$ENDPOINTS" --op put --ops 1 --warmup 0 --json
  # The pods' PIDs, from the box's state file.
  mapfile -t MEMBER_PIDS < <(python3 -c 'import json,sys; print("\n".join(str(p["pid"]) for p in json.load(open(sys.argv[1]))["pods"]))' "$dir/state.json")
}

stop_members() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# run_case STORE OP CONCURRENCY ROUND: one fresh cluster, one bench run;
# appends the JSON result (with the members' peak RSS) to results.jsonl.
run_case() {
  local store=$1 op=$2 conc=$3 round=$4 dir="$WORK/$1-$2-$3-$4"
  mkdir -p "$dir"
  local bench_op=$op consistency=linearizable load=(--concurrency "$conc" --ops "$OPS")
  case "$op" in
    get-linearizable) bench_op=get ;;
    get-serializable) bench_op=get; consistency=serializable ;;
    # watch:N is N watchers of one prefix while a writer puts 1,000/s for
    # 5 s; latency is the delivery latency of each event.
    watch) load=(--watchers "$conc" --rate 1000 --ops 5000) ;;
  esac
  if [ "$store" = etcd ]; then start_etcd "$dir"; else start_kvstore "$dir/box"; fi
  local out
  out=$("$KVCTL" bench --backend "$store" --endpoints "$ENDPOINTS" --op "$bench_op" \
    --consistency "$consistency" "${load[@]}" --connections 1 \
    --duration 120 --warmup 1 --keyspace 10000 --key-size 8 --value-size 256 --json)
  local rss
  rss=$(rss_mib "${MEMBER_PIDS[@]}")
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(store=sys.argv[2], case=sys.argv[3], conc=int(sys.argv[4]), round=int(sys.argv[5]), rss_mib=int(sys.argv[6])); print(json.dumps(r))' \
    "$out" "$store" "$op" "$conc" "$round" "$rss" >>"$WORK/results.jsonl"
  if [ "$store" = etcd ]; then
    stop_members "${MEMBER_PIDS[@]}"
  else
    stop_members "$SUPERVISOR"
  fi
  # The next run must not pay for this one's writeback: drop its data and
  # let the disk settle (measured: without this, whichever store ran second
  # lost up to a quarter of its put throughput).
  rm -rf "$dir"
  sync
  sleep 2
  printf '  %-8s %-18s c=%-4s %s\n' "$store" "$op" "$conc" \
    "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); l=r["latency_ms"]; print("%.0f ops/s  p50 %.2f ms  p99 %.2f ms  errors %d" % (r["ops_per_s"], l["p50"], l["p99"], sum(r["errors"].values())))' "$out")" >&2
}

echo "kvstore $(git rev-parse --short HEAD) vs $ETCD_VERSION; $(nproc) cores; $ROUNDS rounds of $OPS ops per case" >&2
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round" >&2
  for c in $CASES; do
    op=${c%%:*}; conc=${c##*:}
    if [ $((round % 2)) = 1 ]; then order="etcd kvstore"; else order="kvstore etcd"; fi
    for store in $order; do run_case "$store" "$op" "$conc" "$round"; done
  done
done

# Every run's figures, kept for a second look (the table is made from them).
mkdir -p "$ROOT/target"
cp "$WORK/results.jsonl" "$ROOT/target/vs-etcd-results.jsonl"
python3 "$ROOT/bench/table.py" "$WORK/results.jsonl" "$ETCD_VERSION"
echo "each run's figures: target/vs-etcd-results.jsonl" >&2
