#!/usr/bin/env bash
# Large values: what they leave on disk, and how fast a member that lost its
# volume gets them back by snapshot.
#
#   bench/large-values.sh [--puts N] [--value-size BYTES] [--keys N] [--quota BYTES]
#
# 1. Starts a cluster in a box (3 pods on loopback) with --quota-bytes
#    (default 300 MB, so a 75 MB history budget), puts --puts values of
#    --value-size bytes over --keys keys (default 400 of 1 MB over 100: 100 MB
#    live), waits 5 s, and prints each pod's data dir by part (sled's segments
#    and blobs, the WAL, the reserve file).
# 2. With a put load running (4 workers, small values, 12 s), pod 2 loses its
#    volume: SIGSTOP, its data dir removed, SIGKILL. The box restarts it on
#    an empty dir and the leader sends it a snapshot. Prints the snapshot's
#    bytes, the time from the leader freezing it to pod 2 installing it (from
#    their log lines), the rate, and the put load's latency meanwhile.
#
# Not run in CI. Only processes it started are stopped, by PID; its temp dir
# is removed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

PUTS=400
VALUE_SIZE=1000000
KEYS=100
QUOTA=300000000
while [ $# -gt 0 ]; do
  case "$1" in
    --puts) PUTS=$2; shift 2 ;;
    --value-size) VALUE_SIZE=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --quota) QUOTA=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cargo build --release --quiet -p kvstore -p kvstore-client
KVSTORE="$ROOT/target/release/kvstore"
KVCTL="$ROOT/target/release/kvctl"

WORK=$(mktemp -d /tmp/large-values.XXXXXX)
BOX=""
LOAD=""
cleanup() {
  for pid in $LOAD $BOX; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $LOAD $BOX; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

BASE_IP=127.0.76.10
EP=127.0.76.10:7379,127.0.76.11:7379,127.0.76.12:7379
"$KVSTORE" local --dir "$WORK/box" --base-ip $BASE_IP --fresh --log-level info \
  -- --quota-bytes "$QUOTA" >"$WORK/box.log" 2>&1 &
BOX=$!
for _ in $(seq 1 150); do
  "$KVCTL" --endpoints $EP status >/dev/null 2>&1 && break
  sleep 0.2
done

echo "== $PUTS puts of $VALUE_SIZE bytes over $KEYS keys, --quota-bytes $QUOTA"
"$KVCTL" --endpoints $EP bench --op put --keyspace "$KEYS" --value-size "$VALUE_SIZE" \
  --ops "$PUTS" --warmup 0 --timeout 30 | tail -n 4
sleep 5
printf '%-10s %8s %8s %8s %8s %8s\n' pod total_MB sled_db blobs wal reserve
for n in 0 1 2; do
  dir="$WORK/box/kvstore-$n"
  mb() { if [ -e "$1" ]; then du -sm "$1" | cut -f1; else echo 0; fi; }
  printf '%-10s %8s %8s %8s %8s %8s\n' "kvstore-$n" "$(mb "$dir")" "$(mb "$dir/state/db")" \
    "$(mb "$dir/state/blobs")" "$(mb "$dir/wal")" "$(mb "$dir/reserve")"
done

echo "== pod 2 loses its volume under a put load"
POD2=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print([p['pid'] for p in s['pods'] if p['ordinal']==2][0])" "$WORK/box/state.json")
"$KVCTL" --endpoints $EP bench --op put --keyspace 1000 --concurrency 4 --duration 12 \
  --ops 1000000 --warmup 0 --json >"$WORK/load.json" 2>/dev/null &
LOAD=$!
sleep 2
kill -STOP "$POD2"
rm -rf "$WORK/box/kvstore-2"
kill -KILL "$POD2"
for _ in $(seq 1 1200); do
  grep -q "installed a snapshot" "$WORK/box/kvstore-2.log" 2>/dev/null && break
  sleep 0.05
done
wait "$LOAD" || true
LOAD=""
python3 - "$WORK" <<'PY'
import datetime, glob, json, re, sys

work = sys.argv[1]
lines = []
for f in glob.glob(work + "/box/kvstore-*.log"):
    lines += open(f, errors="replace").read().splitlines()

def first(pattern):
    for line in lines:
        if pattern in line:
            stamp = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line).group(1)
            return datetime.datetime.fromisoformat(stamp), line
    sys.exit(f"no log line with {pattern!r}")

froze, _ = first("froze a snapshot")
received, line = first("received a snapshot")
installed, _ = first("installed a snapshot")
size = int(re.search(r"bytes=(\d+)", line).group(1))
took = (installed - froze).total_seconds()
print(f"snapshot {size / 1e6:.0f} MB: frozen -> received {(received - froze).total_seconds():.2f} s, "
      f"-> installed {took:.2f} s = {size / 1e6 / took:.0f} MB/s")
load = json.load(open(work + "/load.json"))
lat = load["latency_ms"]
print(f"put load meanwhile (4 workers, 12 s): {load['ops_per_s']:.0f} ops/s, "
      f"p99 {lat['p99']} ms, max {lat['max']} ms, errors {load.get('errors') or 'none'}")
PY
