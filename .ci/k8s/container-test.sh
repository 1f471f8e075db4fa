#!/usr/bin/env bash
# Container-level StatefulSet test: the image built from the real Dockerfile,
# run as three "pods" the way the StatefulSet in k8s/ runs them, then broken
# the ways a cluster breaks, then scaled 3 -> 5 -> 3.
#
# No container registry is reachable here, so no base image can be pulled.
# The test makes its own runtime base instead: a `docker import` of the glibc
# files the binaries need (what `ldd` lists) plus /etc/passwd with the
# distroless nonroot user 65532. It then builds the Dockerfile's real runtime
# stage on that base, with BINARIES=prebuilt taking the binaries from a
# build context that holds only them (the Rust builder stage is not run;
# BuildKit builds only the stages the target needs).
#
# The pods: hostnames kvstore-0..2 (kvstore-3..4 while scaled up), one named
# volume each mounted at the data dir, a private network (--internal: no way out, like the NetworkPolicy)
# whose DNS gives each container its per-pod name in the Kubernetes form
# kvstore-N.kvstore-headless.default.svc.cluster.local, and a shared name
# kvstore.default.svc.cluster.local listing the running pods (the client
# Service). Read-only root filesystem, all capabilities dropped, no new
# privileges, user 65532, the memory limit of the manifest.
#
# TLS on, as issue 13 asks of this test: a CA made for the run
# (.ci/k8s/ctest-certs.py, Python's cryptography in a venv of its own,
# KVSTORE_CTEST_VENV, default .ci/venv-ctest, pinned in
# .ci/k8s/ctest-requirements.txt) issues each pod a peer certificate for its
# stable name (what k8s/components/tls gives it) and a client-port
# certificate (the stable name, the client Service's name, localhost,
# 127.0.0.1), and kvctl a client certificate. The pods run mutual TLS on the
# peer port and require client certificates on the client port; every kvctl
# the test runs presents one, and a plaintext or certificate-less kvctl is
# refused. Each pod's files are on a volume of its own (written through a
# never-started holder container, like spec.replicas below).
#
# The ops port (7381, plain HTTP, KVSTORE_OPS_LISTEN as in the manifest) is
# scraped the way Prometheus does it, from another container on the
# network: no image with curl or Python can be pulled, so the test compiles
# .ci/k8s/ctest-http.rs (std only) with rustc and runs it in an image
# imported from the same glibc base. It checks /healthz, /readyz and
# /metrics of every pod, that exactly one pod reports kvstore_is_leader 1
# (the leader kvctl names), and that after the leader's kill the survivors'
# kvstore_leader_changes_total rose.
#
# spec.replicas: one more named volume, mounted read-only in every pod at
# /statefulset, holds the file desired-replicas, which every pod reads
# (KVSTORE_REPLICAS_SOURCE=file:/statefulset/desired-replicas) as it would
# read spec.replicas from the API. The test writes it (`docker cp` through a
# never-started holder container, so a remote engine works too) where
# `kubectl scale` would change spec.replicas. KVSTORE_REPLICAS stays 3, the
# count the set was created with, in every pod, as in the manifest.
#
# Steps (every wait bounded):
#   1. all three Ready, one leader; plaintext and certificate-less clients
#      refused; /healthz, /readyz and /metrics of every pod; acknowledged
#      writes
#   2. `docker kill` the leader while a writer runs: the next ordinal leads
#      and writes continue, the survivors' /metrics show the new leader and
#      more leader changes; `docker start` it on its volume: it catches up
#      and leads again
#   3. `docker network disconnect` a follower: writes still succeed;
#      reconnect: it catches up and holds every write made without it
#   4. a rolling restart like the StatefulSet's RollingUpdate (SIGTERM,
#      highest ordinal first, each back and caught up before the next): each
#      node exits 0, the leader hands leadership over first
#   5. scale 3 -> 5 -> 3 while a writer runs, as the StatefulSet controller
#      does it: write 5, create kvstore-3 then kvstore-4 (each once the one
#      before runs); the leader's `kvctl member list` shows voters 0..4, no
#      learners. Write 3, `docker stop` (SIGTERM) kvstore-4, wait for it to
#      exit (0, having left the configuration), then kvstore-3; the member
#      list shows exactly voters 0,1,2. Each step's time is printed.
#   6. every acknowledged write is read back from every node: lost = 0;
#      /metrics again: one leader, the one kvctl names
#
# Every container, network, volume and image tag it makes carries a random
# run id and is removed at the end, also on failure or interruption. It
# prints SKIPPED and exits 0 only without a docker client or when
# KVSTORE_SKIP_CONTAINER_TEST=1; an engine that does not answer fails it.
#
# Environment:
#   KVSTORE_BIN_DIR   take kvstore and kvctl from here instead of running
#                     `cargo build --release --locked` (which honours
#                     CARGO_TARGET_DIR)
#   KVSTORE_CTEST_PROFILE=debug  build debug binaries instead of release
#   KEEP_ON_FAILURE=1 leave everything in place when a step fails
#   KVSTORE_CTEST_VENV  the venv for the certificates (default .ci/venv-ctest)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
START=$(date +%s)
say() { printf '[ctest %3ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
die() { say "FAILED: $*"; exit 1; }

# --- is there an engine? ---------------------------------------------------
# Skipped only when there is no docker client at all, or when asked to
# (KVSTORE_SKIP_CONTAINER_TEST=1). A client whose engine does not answer is a
# failure, not a skip: a machine with Docker must run this test.
if [ "${KVSTORE_SKIP_CONTAINER_TEST:-}" = "1" ]; then
  say "SKIPPED: container-level StatefulSet test: KVSTORE_SKIP_CONTAINER_TEST=1"
  exit 0
fi
if ! command -v docker >/dev/null 2>&1; then
  say "SKIPPED: container-level StatefulSet test: no docker client on PATH"
  exit 0
fi
if ! timeout 60 docker info >/dev/null 2>&1; then
  die "the docker client is here but no engine answered 'docker info' within 60 s (set KVSTORE_SKIP_CONTAINER_TEST=1 to skip on purpose)"
fi

# --- a BuildKit builder ----------------------------------------------------
# The Dockerfile needs BuildKit. Docker 23+ clients use it through the buildx
# plugin; clients before 23 (Debian bookworm's docker.io, 20.10) have it
# built in behind DOCKER_BUILDKIT=1. The legacy builder would run every
# stage, including the Rust builder whose base image cannot be pulled here.
# (With buildx, the local base image is found only by a builder of the
# "docker" driver, the default one.)
find_builder() {
  BUILD=()
  if docker buildx version >/dev/null 2>&1; then
    BUILD=(docker buildx build --load)
    return
  fi
  local cli v
  for cli in docker /usr/bin/docker /usr/local/bin/docker; do
    command -v "$cli" >/dev/null 2>&1 || continue
    v=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)
    if [ -n "$v" ] && [ "${v%%.*}" -lt 23 ] 2>/dev/null; then
      BUILD=(env DOCKER_BUILDKIT=1 "$cli" build)
      return
    fi
  done
}
find_builder
if [ ${#BUILD[@]} -eq 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 &&
   apt-cache show docker-buildx >/dev/null 2>&1; then
  say "installing Debian's docker-buildx (the Dockerfile needs BuildKit)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-buildx >/dev/null
  find_builder
fi
if [ ${#BUILD[@]} -eq 0 ]; then
  die "no BuildKit builder: install the docker buildx plugin (the legacy builder cannot skip the Rust stage)"
fi

# --- names -----------------------------------------------------------------
RUN_ID=$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
P=kvs-ctest-$RUN_ID
NET=$P-net
BASE_IMAGE=kvstore-ctest-base:$RUN_ID
IMAGE=kvstore-ctest:$RUN_ID
SCRAPER_IMAGE=kvstore-ctest-scraper:$RUN_ID   # ctest-http on the glibc base
TLS_HOLDER=$P-tls                               # never started; `docker cp` writes through it
TLS_DIR=/etc/kvstore/tls                        # each pod's certificates
OPS_PORT=7381
LABEL=kvstore-ctest=$RUN_ID
NS=default
HEADLESS=kvstore-headless
SVC_EP=kvstore.$NS.svc.cluster.local:7379   # the "client Service"
WORK=$(mktemp -d)
MAX_PODS=5                      # the most pods the test ever runs (step 5)
DESIRED_VOL=$P-statefulset      # holds desired-replicas: the spec.replicas
DESIRED_HOLDER=$P-statefulset   # never started; `docker cp` writes through it
DESIRED_FILE=/statefulset/desired-replicas
WRITER_PID=""
WRITER_POD=""

pod() { echo "$P-kvstore-$1"; }
tls_vol() { echo "$P-tls-$1"; }
pod_dns() { echo "kvstore-$1.$HEADLESS.$NS.svc.cluster.local"; }
all_pods() { local i; for i in $(seq 0 $((MAX_PODS - 1))); do pod "$i"; done; }

cleanup() {
  local rc=$?
  set +e
  if [ -n "$WRITER_PID" ]; then touch "$WORK/stop"; wait "$WRITER_PID" 2>/dev/null; fi
  if [ "$rc" != 0 ]; then
    for i in $(seq 0 $((MAX_PODS - 1))); do
      docker container inspect "$(pod "$i")" >/dev/null 2>&1 || continue
      echo "----- last log lines of kvstore-$i ($(pod "$i"))"
      docker logs --tail 30 "$(pod "$i")" 2>&1 | cut -c1-400
    done
    if [ "${KEEP_ON_FAILURE:-0}" = 1 ]; then
      say "KEEP_ON_FAILURE=1: leaving containers, network $NET, volumes and images (label $LABEL)"
      return
    fi
  fi
  # Containers first: a volume in use cannot be removed. Every name the
  # run may have made, whether or not it got that far.
  # shellcheck disable=SC2046
  docker rm -f $(all_pods) "$DESIRED_HOLDER" "$TLS_HOLDER" >/dev/null 2>&1
  # A scraper interrupted mid-run (they are --rm, so normally gone).
  # shellcheck disable=SC2046
  docker rm -f $(docker ps -aq --filter "label=$LABEL") >/dev/null 2>&1
  docker network rm "$NET" >/dev/null 2>&1
  # shellcheck disable=SC2046
  docker volume rm $(for i in $(seq 0 $((MAX_PODS - 1))); do echo "$P-data-$i"; tls_vol "$i"; done) "$DESIRED_VOL" >/dev/null 2>&1
  docker image rm "$IMAGE" "$SCRAPER_IMAGE" "$BASE_IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
  # Prove it: nothing with this run's label or prefix is left.
  local left
  left=$( { docker ps -aq --filter "label=$LABEL"; docker network ls -q --filter "label=$LABEL";
            docker volume ls -q --filter "label=$LABEL"; docker images -q --filter "reference=kvstore-ctest*:$RUN_ID"; } 2>/dev/null)
  if [ -n "$left" ]; then
    echo "cleanup left objects behind: $left" >&2
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- binaries --------------------------------------------------------------
if [ -n "${KVSTORE_BIN_DIR:-}" ]; then
  BIN_DIR=$KVSTORE_BIN_DIR
else
  # As the Dockerfile builds them: the pod binary without the box. The
  # profile is release unless KVSTORE_CTEST_PROFILE=debug (CI's choice: it
  # reuses what cargo test compiled; the image is the same either way).
  profile_flag=(--release)
  profile_dir=release
  if [ "${KVSTORE_CTEST_PROFILE:-release}" = debug ]; then
    profile_flag=()
    profile_dir=debug
  fi
  say "cargo build ${profile_flag[*]} --locked -p kvstore --no-default-features --bin kvstore; -p kvstore-client --bin kvctl"
  cargo build "${profile_flag[@]}" --locked -p kvstore --no-default-features --bin kvstore
  cargo build "${profile_flag[@]}" --locked -p kvstore-client --bin kvctl
  BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/$profile_dir
fi
for b in kvstore kvctl; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing"
done

# --- the run's CA and certificates --------------------------------------------
CT_VENV=${KVSTORE_CTEST_VENV:-$ROOT/.ci/venv-ctest}
CT_REQ=$ROOT/.ci/k8s/ctest-requirements.txt
# shellcheck source=.ci/k8s/venv.sh
. "$ROOT/.ci/k8s/venv.sh"
pinned_venv "$CT_VENV" "$CT_REQ"
"$CT_VENV/bin/python" "$ROOT/.ci/k8s/ctest-certs.py" "$WORK/certs" "$MAX_PODS" "$NS" "$HEADLESS" \
  "kvstore.$NS.svc.cluster.local" >/dev/null
# Readable by the pods' user 65532 once `docker cp` has made root their
# owner (on Kubernetes the CSI driver's fs-group does this). Each pod
# mounts only its own directory.
chmod 0755 "$WORK/certs" "$WORK/certs"/*
chmod 0644 "$WORK/certs"/*/*
say "CA and certificates for kvstore-0..$((MAX_PODS - 1)) made (ECDSA P-256; peer, client port, kvctl)"

# --- the scraper: a std-only HTTP client, compiled here ----------------------
rustc --edition 2021 -O -o "$WORK/ctest-http" "$ROOT/.ci/k8s/ctest-http.rs" ||
  die "rustc could not compile .ci/k8s/ctest-http.rs"

# --- the runtime base: glibc and a passwd, from this machine ----------------
say "making the runtime base image $BASE_IMAGE (docker import, no registry)"
STAGE=$WORK/base
mkdir -p "$STAGE/etc" "$STAGE/tmp" "$STAGE/home/nonroot" "$STAGE/var/lib"
for b in "$BIN_DIR/kvstore" "$BIN_DIR/kvctl" "$WORK/ctest-http"; do
  ldd "$b" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true
done | sort -u > "$WORK/libs"
while read -r lib; do
  mkdir -p "$STAGE$(dirname "$lib")"
  cp -L "$lib" "$STAGE$lib"
done < "$WORK/libs"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$STAGE/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$STAGE/etc/group"
printf 'hosts: files dns\n' > "$STAGE/etc/nsswitch.conf"
chmod 1777 "$STAGE/tmp"
chown 65532:65532 "$STAGE/home/nonroot" 2>/dev/null || true
tar --numeric-owner -C "$STAGE" -c . |
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE_IMAGE" >/dev/null
say "base: $(wc -l < "$WORK/libs") shared objects ($(paste -sd' ' "$WORK/libs"))"
# The scraper's image: the same base plus ctest-http, nothing else.
mkdir -p "$STAGE/usr/local/bin"
cp "$WORK/ctest-http" "$STAGE/usr/local/bin/"
tar --numeric-owner -C "$STAGE" -c . | docker import - "$SCRAPER_IMAGE" >/dev/null

# --- the image, from the real Dockerfile ------------------------------------
CTX=$WORK/context
mkdir -p "$CTX"
cp "$BIN_DIR/kvstore" "$BIN_DIR/kvctl" "$CTX/"
say "building $IMAGE from Dockerfile (BINARIES=prebuilt, RUNTIME_IMAGE=$BASE_IMAGE) with: ${BUILD[*]}"
"${BUILD[@]}" --quiet -f "$ROOT/Dockerfile" \
  --build-arg BINARIES=prebuilt --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
  --build-arg REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t "$IMAGE" "$CTX" >/dev/null
[ "$(docker image inspect -f '{{.Config.User}}' "$IMAGE")" = "65532:65532" ] || die "the image does not run as 65532:65532"
say "image entry point: $(docker image inspect -f '{{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$IMAGE")"
# The pod image carries no cluster in a box.
demo_rc=0
demo_err=$(docker run --rm --network none --label "$LABEL" "$IMAGE" demo 2>&1 >/dev/null) || demo_rc=$?
[ "$demo_rc" = 2 ] && grep -q "is not in this build" <<<"$demo_err" ||
  die "docker run IMAGE demo should say it is not in this build (exit 2), got exit $demo_rc: $demo_err"
say "docker run IMAGE demo: $demo_err"

# --- the "StatefulSet" -------------------------------------------------------
docker network create --internal --label "$LABEL" "$NET" >/dev/null
for i in 0 1 2; do docker volume create --label "$LABEL" "$P-data-$i" >/dev/null; done

# spec.replicas: a volume every pod mounts read-only, written through a
# container that is created but never started (no shell in the image).
docker volume create --label "$LABEL" "$DESIRED_VOL" >/dev/null
docker create --name "$DESIRED_HOLDER" --label "$LABEL" --network none \
  -v "$DESIRED_VOL:$(dirname "$DESIRED_FILE")" "$IMAGE" >/dev/null
set_replicas() { # N: what `kubectl scale --replicas=N` changes
  printf '%s\n' "$1" > "$WORK/desired-replicas"
  chmod 0644 "$WORK/desired-replicas"
  docker cp "$WORK/desired-replicas" "$DESIRED_HOLDER:$DESIRED_FILE" ||
    die "could not write spec.replicas=$1 into the volume $DESIRED_VOL"
}
set_replicas 3

# Each pod's certificates on a volume of its own, written through a
# container that mounts them all and is never started.
holder_mounts=()
for i in $(seq 0 $((MAX_PODS - 1))); do
  docker volume create --label "$LABEL" "$(tls_vol "$i")" >/dev/null
  holder_mounts+=(-v "$(tls_vol "$i"):/tls/kvstore-$i")
done
docker create --name "$TLS_HOLDER" --label "$LABEL" --network none "${holder_mounts[@]}" "$IMAGE" >/dev/null
for i in $(seq 0 $((MAX_PODS - 1))); do
  docker cp "$WORK/certs/kvstore-$i/." "$TLS_HOLDER:/tls/kvstore-$i" ||
    die "could not write kvstore-$i's certificates into $(tls_vol "$i")"
done

# Create (first time) or start (later) pod i, as the kubelet would: same
# name, same volume, same DNS names. The env mirrors the container env of
# k8s/base/statefulset.yaml (with k8s/components/tls's peer certificate),
# but for the replica source (the file on the shared volume instead of the
# Kubernetes API) and client-port TLS, which the manifests do not turn on
# yet.
create_pod() {
  docker run -d --name "$(pod "$1")" --label "$LABEL" \
    --hostname "kvstore-$1" \
    --network "$NET" --network-alias "$(pod_dns "$1")" --network-alias "kvstore.$NS.svc.cluster.local" \
    -v "$P-data-$1:/var/lib/kvstore" -v "$DESIRED_VOL:$(dirname "$DESIRED_FILE"):ro" \
    -v "$(tls_vol "$1"):$TLS_DIR:ro" \
    --read-only --cap-drop ALL --security-opt no-new-privileges:true --user 65532:65532 \
    --memory 512m --stop-timeout 45 \
    -e KVSTORE_NODE_NAME="kvstore-$1" -e KVSTORE_NAMESPACE="$NS" -e KVSTORE_REPLICAS=3 \
    -e KVSTORE_REPLICAS_SOURCE="file:$DESIRED_FILE" \
    -e KVSTORE_SERVICE="$HEADLESS" -e KVSTORE_CLUSTER_DOMAIN=cluster.local \
    -e KVSTORE_LISTEN=0.0.0.0:7379 -e KVSTORE_PEER_LISTEN=0.0.0.0:7380 \
    -e KVSTORE_OPS_LISTEN="0.0.0.0:$OPS_PORT" \
    -e KVSTORE_PEER_TLS_CERT="$TLS_DIR/peer.crt" -e KVSTORE_PEER_TLS_KEY="$TLS_DIR/peer.key" \
    -e KVSTORE_PEER_TLS_CA="$TLS_DIR/ca.crt" \
    -e KVSTORE_TLS_CERT="$TLS_DIR/tls.crt" -e KVSTORE_TLS_KEY="$TLS_DIR/tls.key" \
    -e KVSTORE_TLS_CLIENT_CA="$TLS_DIR/ca.crt" \
    -e KVSTORE_DATA_DIR=/var/lib/kvstore -e KVSTORE_CACHE_MB=128 -e KVSTORE_SHUTDOWN_GRACE_S=20 \
    -e KVSTORE_LOG_FORMAT=json -e KVSTORE_LOG_LEVEL=info \
    "$IMAGE" >/dev/null
}

# --- helpers -----------------------------------------------------------------
cat > "$WORK/status.py" <<'PY'
import json, sys
mode, raw = sys.argv[1], sys.stdin.read()
try:
    rows = [r for r in json.loads(raw) if "name" in r]
except ValueError:
    rows = []
if mode == "show":
    print(" | ".join(f"{r['name']} {r['role']} leader={r['leader'] or '-'} applied={r['applied']} "
                     f"lag={r['lag']} ready={'yes' if r['ready'] else 'no'}" for r in rows) or "no answer")
elif mode == "leader":
    # The leader's ordinal, when every answering node names the same one.
    leaders = {r["leader"] for r in rows}
    lead = [r for r in rows if r["role"] == "leader"]
    print(lead[0]["ordinal"] if len(leaders) == 1 and len(lead) == 1 and lead[0]["name"] in leaders else "-")
elif mode in ("ready", "settled"):
    # argv[2:]: the names that must answer, be Ready (caught up) and agree
    # on the leader; "settled" also wants the same applied revision
    # everywhere (only meaningful with no writer running).
    want = set(sys.argv[2:])
    got = {r["name"]: r for r in rows}
    ok = (want <= set(got) and all(got[n]["ready"] for n in want)
          and len({got[n]["leader"] for n in want}) == 1 and "" not in {got[n]["leader"] for n in want})
    if mode == "settled":
        ok = ok and len({got[n]["applied"] for n in want}) == 1
    sys.exit(0 if ok else 1)
PY

# kvctl inside pod $1 (no shell needed: kvctl is in the image), over TLS
# with the pod's copy of kvctl's client certificate.
# (kvctl retries for up to 10 s; `timeout` bounds the exec itself.)
kvctl_in() {
  local c; c=$(pod "$1"); shift
  timeout 30 docker exec -e KVCTL_CACERT="$TLS_DIR/ca.crt" -e KVCTL_CERT="$TLS_DIR/client.crt" \
    -e KVCTL_KEY="$TLS_DIR/client.key" "$c" kvctl "$@"
}
# kvctl inside pod $1 with no TLS settings but the `-e` options in $2 (for
# the refusals).
kvctl_in_bare() {
  local c; c=$(pod "$1"); local -a env=()
  [ -n "$2" ] && read -r -a env <<<"$2"
  shift 2
  timeout 30 docker exec "${env[@]}" "$c" kvctl "$@"
}
# `kvctl status` from inside pod $1, given only that pod's stable name:
# kvctl follows the other members at the addresses they report (pod IPs,
# which no client-port certificate names, as they are not known before a
# pod starts) and checks each one's certificate for its stable name.
status_from() { kvctl_in "$1" --endpoints "$(pod_dns "$1"):7379" --json --timeout 5 status 2>/dev/null || echo '[]'; }
show() { status_from "$1" | python3 "$WORK/status.py" show; }
leader_seen_by() { status_from "$1" | python3 "$WORK/status.py" leader; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local limit=$1 what=$2 t0
  shift 2
  t0=$(date +%s)
  until "$@"; do
    if [ $(( $(date +%s) - t0 )) -ge "$limit" ]; then die "timed out after ${limit}s: $what"; fi
    sleep 0.5
  done
}
settled() { # observer names...: Ready, one leader, the same applied revision
  local o=$1; shift
  status_from "$o" | python3 "$WORK/status.py" settled "$@"
}
ready() { # observer names...: Ready (caught up to the commit index), one leader
  local o=$1; shift
  status_from "$o" | python3 "$WORK/status.py" ready "$@"
}
leader_is() { [ "$(leader_seen_by "$1")" = "$2" ]; }

# `kvctl --json member list`, checked (crates/client/src/bin/kvctl/member.rs).
cat > "$WORK/members.py" <<'PY'
import json, sys
mode, raw = sys.argv[1], sys.stdin.read()
try:
    ans = json.loads(raw)
    members = ans["members"]
except (ValueError, KeyError, TypeError):
    sys.exit(1)
voters = sorted(m["ordinal"] for m in members if m["role"] == "voter")
learners = sorted(m["ordinal"] for m in members if m["role"] == "learner")
# Only the leader's answer is the configuration as committed and acted on.
from_leader = bool(ans.get("leader")) and ans.get("leader") == ans.get("answered_by")
if mode == "exactly":
    # argv[2]: N -> voters exactly 0..N-1, no learners, N read as desired.
    n = int(sys.argv[2])
    sys.exit(0 if from_leader and voters == list(range(n)) and not learners
             and ans.get("desired_replicas") == n else 1)
elif mode == "desired":
    sys.exit(0 if ans.get("desired_replicas") == int(sys.argv[2]) else 1)
elif mode == "lists":
    # argv[2]: an ordinal -> "yes"/"no" as the leader answers, else exit 1.
    if not from_leader:
        sys.exit(1)
    print("yes" if int(sys.argv[2]) in voters + learners else "no")
elif mode == "brief":
    print(f"voters={voters} learners={learners} desired={ans.get('desired_replicas')} "
          f"answered_by={ans.get('answered_by')} leader={ans.get('leader')}")
PY
members_json() { kvctl_in "$1" --endpoints 127.0.0.1:7379 --json --timeout 5 member list 2>/dev/null || echo '{}'; }
# The member list as the current leader answers it (found through kvstore-0,
# which step 5 never stops).
leader_members() {
  local l; l=$(leader_seen_by 0)
  [ "$l" != - ] || { echo '{}'; return; }
  members_json "$l"
}
members_exactly() { leader_members | python3 "$WORK/members.py" exactly "$1"; }
leader_lists() { leader_members | python3 "$WORK/members.py" lists "$1"; }
desired_read_by() { members_json "$1" | python3 "$WORK/members.py" desired "$2"; }
# The table, as an operator would see it on the leader.
print_members() {
  local l; l=$(leader_seen_by 0)
  { kvctl_in "$l" --endpoints 127.0.0.1:7379 --timeout 5 member list 2>&1 || echo "(kvstore-$l did not answer)"; } |
    sed 's/^/    /'
}
# The pod's own client port answers (it is running, not necessarily Ready).
answers() { status_from "$1" | python3 -c '
import json, sys
rows = [r for r in json.loads(sys.stdin.read() or "[]") if "name" in r]
sys.exit(0 if any(r["name"] == sys.argv[1] for r in rows) else 1)' "kvstore-$1"; }
running() { [ "$(docker inspect -f '{{.State.Running}}' "$(pod "$1")" 2>/dev/null)" = true ] && answers "$1"; }
exited() { [ "$(docker inspect -f '{{.State.Status}}' "$(pod "$1")" 2>/dev/null)" = exited ]; }
# Seconds since $1 (date +%s.%N), one decimal.
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# One write through the client Service, made from inside pod $1.
# Acknowledged (exit 0) writes go to $WORK/acked; others to $WORK/unacked
# (their outcome is unknown: they are never counted as lost or as kept).
put_via() { # pod key value
  local rc=0
  kvctl_in "$1" --endpoints "$SVC_EP" put "$2" "$3" >/dev/null 2>>"$WORK/put.err" || rc=$?
  if [ "$rc" = 0 ]; then
    echo "$2 $3 $(date +%s.%N)" >> "$WORK/acked"
  else
    echo "$2 $3 $(date +%s.%N) rc=$rc" >> "$WORK/unacked"
  fi
  return "$rc"
}

# A writer in the background: sequential puts until $WORK/stop exists.
start_writer() { # pod phase
  rm -f "$WORK/stop"
  WRITER_POD=$1
  (
    n=0
    while [ ! -e "$WORK/stop" ] && [ "$n" -lt 5000 ]; do
      n=$((n + 1))
      put_via "$1" "ct/$2/$(printf %05d "$n")" "$2-$n-$RUN_ID" || true
    done
  ) &
  WRITER_PID=$!
}
stop_writer() {
  touch "$WORK/stop"
  wait "$WRITER_PID" || true
  WRITER_PID=""
}
acked_since() { # epoch seconds -> acknowledged writes after it
  awk -v t="$1" '$3 > t' "$WORK/acked" 2>/dev/null | wc -l
}
acked_at_least() { [ "$(acked_since "$1")" -ge "$2" ]; }
: > "$WORK/acked"
: > "$WORK/unacked"

# --- the ops port, scraped from another container on the network ---------------
# GET http://kvstore-N.<headless>...:7381$2 from the scraper container, as
# Prometheus in another pod would; the body on stdout, exit 0 only on 200.
http_get() { # ordinal path
  timeout 30 docker run --rm --label "$LABEL" --network "$NET" \
    --read-only --cap-drop ALL --security-opt no-new-privileges:true --user 65532:65532 \
    "$SCRAPER_IMAGE" /usr/local/bin/ctest-http "http://$(pod_dns "$1"):$OPS_PORT$2"
}
cat > "$WORK/metrics.py" <<'PY'
import re, sys
# The Prometheus/OpenMetrics text of one pod: {name: value} of its unlabeled
# samples (the ones this test reads).
def samples(path):
    out = {}
    for line in open(path):
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out
mode = sys.argv[1]
if mode == "get":
    # argv[2] name, argv[3] file: the value, or exit 1.
    v = samples(sys.argv[3]).get(sys.argv[2])
    if v is None:
        sys.exit(1)
    print(int(v) if v == int(v) else v)
elif mode == "one-leader":
    # argv[2:]: files named m-<tag>-<ordinal>.txt. Prints the ordinal of the
    # one pod that reports kvstore_is_leader 1; exit 1 if none or several,
    # exit 2 if a pod's text lacks kvstore_is_leader.
    leaders = []
    for path in sys.argv[2:]:
        s = samples(path)
        if "kvstore_is_leader" not in s:
            print(f"{path}: no kvstore_is_leader sample", file=sys.stderr)
            sys.exit(2)
        if s["kvstore_is_leader"] == 1:
            leaders.append(path.rsplit("-", 1)[1].split(".")[0])
    print(",".join(leaders) or "none")
    sys.exit(0 if len(leaders) == 1 else 1)
PY
# /metrics of each ordinal into $WORK/m-TAG-N.txt; fails if one does not
# answer 200.
scrape() { # tag ordinals...
  local tag=$1 i; shift
  for i in "$@"; do
    http_get "$i" /metrics > "$WORK/m-$tag-$i.txt" || die "GET /metrics of kvstore-$i on the ops port failed"
  done
}
metric() { python3 "$WORK/metrics.py" get "$1" "$WORK/m-$2-$3.txt"; } # name tag ordinal
# Exactly one of the ordinals reports kvstore_is_leader 1, and it is $2
# (the leader kvctl names); the scrape is repeated while that is not so.
one_leader_is() { # tag expected ordinals...
  local tag=$1 want=$2 got i files=(); shift 2
  scrape "$tag" "$@"
  for i in "$@"; do files+=("$WORK/m-$tag-$i.txt"); done
  got=$(python3 "$WORK/metrics.py" one-leader "${files[@]}") || { [ $? = 2 ] && die "$got"; return 1; }
  [ "$got" = "$want" ]
}

# --- 1. start -------------------------------------------------------------------
say "starting kvstore-0..2 in parallel (podManagementPolicy: Parallel)"
for i in 0 1 2; do create_pod "$i"; done
wait_for 90 "three Ready members with one leader" settled 0 kvstore-0 kvstore-1 kvstore-2
# The lowest ordinal leads once it is up: normally it wins the first
# election, and if a peer got there first it takes the lead back.
wait_for 30 "the lowest ordinal, kvstore-0, leads the new cluster" leader_is 0 0
LEADER=$(leader_seen_by 0)
say "cluster up: $(show 0)"
wait_for 10 "every pod read spec.replicas=3 from $DESIRED_FILE" \
  eval 'desired_read_by 0 3 && desired_read_by 1 3 && desired_read_by 2 3'
wait_for 30 "the member list shows exactly voters 0,1,2" members_exactly 3

# TLS is really on: every member runs mutual TLS on the peer port (it logs
# so at start), and the client port refuses plaintext and clients without
# a certificate of the CA.
for i in 0 1 2; do
  # To a file first: `grep -q` leaving the pipe early would fail it (pipefail).
  docker logs "$(pod "$i")" > "$WORK/start-$i.log" 2>&1
  grep -q "peer port: mutual TLS" "$WORK/start-$i.log" ||
    die "kvstore-$i did not start its peer port with mutual TLS"
done
if kvctl_in_bare 0 "" --endpoints 127.0.0.1:7379 --timeout 3 get ct/probe >/dev/null 2>&1; then
  die "a plaintext kvctl was answered by the client port (TLS is off)"
fi
if kvctl_in_bare 0 "-e KVCTL_CACERT=$TLS_DIR/ca.crt" --endpoints 127.0.0.1:7379 --timeout 3 get ct/probe >/dev/null 2>&1; then
  die "a kvctl without a client certificate was answered (the client CA is not enforced)"
fi
say "TLS: peer port in mutual TLS on kvstore-0..2; plaintext and certificate-less kvctl refused; every kvctl below presents kvctl's certificate"

# The ops port, from another container: liveness and readiness 200 on
# every pod, and /metrics with one leader, the one kvctl names.
for i in 0 1 2; do
  body=$(http_get "$i" /healthz) || die "GET /healthz of kvstore-$i: not 200 ($body)"
  body=$(http_get "$i" /readyz) || die "GET /readyz of kvstore-$i: not 200 ($body) though it is Ready"
done
wait_for 20 "exactly one pod's /metrics says kvstore_is_leader 1, and it is kvstore-$LEADER" one_leader_is up "$LEADER" 0 1 2
say "ops port :$OPS_PORT: /healthz and /readyz 200 on kvstore-0..2; /metrics: kvstore_is_leader 1 on kvstore-$LEADER only" \
  "(term $(metric kvstore_term up "$LEADER"), commit $(metric kvstore_commit_revision up "$LEADER"))"

say "step 1: 50 acknowledged writes"
for n in $(seq 1 50); do
  put_via 1 "ct/a/$(printf %05d "$n")" "a-$n-$RUN_ID" || die "write ct/a/$n was not acknowledged by a healthy cluster"
done

# --- 2. leader crash ------------------------------------------------------------
NEXT=$(( (LEADER + 1) % 3 ))
OTHER=$(( (LEADER + 2) % 3 ))
say "step 2: docker kill the leader kvstore-$LEADER while a writer runs (from kvstore-$OTHER)"
start_writer "$OTHER" b
wait_for 30 "the writer gets going" acked_at_least 0 60
scrape before-kill "$NEXT" "$OTHER"
changes_next=$(metric kvstore_leader_changes_total before-kill "$NEXT") || die "kvstore-$NEXT has no kvstore_leader_changes_total"
changes_other=$(metric kvstore_leader_changes_total before-kill "$OTHER") || die "kvstore-$OTHER has no kvstore_leader_changes_total"
KILL_AT=$(date +%s.%N)
docker kill "$(pod "$LEADER")" >/dev/null
wait_for 30 "kvstore-$NEXT (the next ordinal) leads" leader_is "$NEXT" "$NEXT"
say "after the kill: $(show "$NEXT")"
wait_for 20 "the survivors' /metrics name kvstore-$NEXT as the one leader" one_leader_is killed "$NEXT" "$NEXT" "$OTHER"
now_next=$(metric kvstore_leader_changes_total killed "$NEXT")
now_other=$(metric kvstore_leader_changes_total killed "$OTHER")
[ "$now_next" -gt "$changes_next" ] && [ "$now_other" -gt "$changes_other" ] ||
  die "kvstore_leader_changes_total did not rise on the survivors: kvstore-$NEXT $changes_next -> $now_next, kvstore-$OTHER $changes_other -> $now_other"
say "/metrics after the kill: kvstore-$NEXT alone reports kvstore_is_leader 1; kvstore_leader_changes_total" \
  "kvstore-$NEXT $changes_next -> $now_next, kvstore-$OTHER $changes_other -> $now_other"
wait_for 60 "writes continue under the new leader" acked_at_least "$KILL_AT" 20
say "writes continue: $(acked_since "$KILL_AT") acknowledged since the kill"

say "docker start kvstore-$LEADER on its volume"
docker start "$(pod "$LEADER")" >/dev/null
wait_for 90 "kvstore-$LEADER catches up and leads again" leader_is "$LEADER" "$LEADER"
BACK_AT=$(date +%s.%N)
wait_for 30 "all three Ready under kvstore-$LEADER" ready "$LEADER" kvstore-0 kvstore-1 kvstore-2
say "leads again: $(show "$LEADER")"
wait_for 20 "/metrics: kvstore-$LEADER is the one leader again" one_leader_is back "$LEADER" 0 1 2
say "/metrics: kvstore-$LEADER leads again; the kill and the return were" \
  "$(( $(metric kvstore_leader_changes_total back "$NEXT") - changes_next )) leader changes on kvstore-$NEXT," \
  "$(( $(metric kvstore_leader_changes_total back "$OTHER") - changes_other )) on kvstore-$OTHER"
wait_for 60 "writes continue after leadership returned" acked_at_least "$BACK_AT" 20
stop_writer
say "step 2 done: $(wc -l < "$WORK/acked") acknowledged, $(wc -l < "$WORK/unacked") with unknown outcome so far"

# --- 3. partition a follower ---------------------------------------------------------
LEADER=$(leader_seen_by 0)
F=2; [ "$LEADER" = 2 ] && F=1
W=$(( 3 - LEADER - F ))   # the third pod, where the client runs
say "step 3: docker network disconnect follower kvstore-$F"
docker network disconnect "$NET" "$(pod "$F")"
for n in $(seq 1 30); do
  put_via "$W" "ct/c/$(printf %05d "$n")" "c-$n-$RUN_ID" || die "write ct/c/$n failed while only one follower was cut off"
done
say "30 writes acknowledged without kvstore-$F: $(show "$LEADER")"
docker network connect --alias "$(pod_dns "$F")" --alias "kvstore.$NS.svc.cluster.local" "$NET" "$(pod "$F")"
wait_for 60 "kvstore-$F catches up after the partition" settled "$LEADER" kvstore-0 kvstore-1 kvstore-2
# Its own copy (serializable: answered from its local state) has them all.
kvctl_in "$F" --endpoints 127.0.0.1:7379 --consistency serializable --json range ct/c/ --prefix --limit 100000 > "$WORK/f.json"
got=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/f.json")
[ "$got" = 30 ] || die "kvstore-$F holds $got of the 30 writes made while it was cut off"
say "kvstore-$F reconnected and caught up, holds all 30: $(show "$F")"

# --- 4. rolling restart -----------------------------------------------------------
say "step 4: rolling restart (SIGTERM, kvstore-2, -1, -0, each caught up before the next) with a writer"
start_writer "$W" d
for i in 2 1 0; do
  # The writer's kvctl runs inside a pod; keep it off the one restarting.
  if [ "$WRITER_POD" = "$i" ]; then stop_writer; start_writer "$(( (i + 1) % 3 ))" "d$i"; fi
  was_leader=$(leader_seen_by "$(( (i + 1) % 3 ))")
  docker stop -t 45 "$(pod "$i")" >/dev/null
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(pod "$i")")
  [ "$code" = 0 ] || die "kvstore-$i exited $code on SIGTERM (want 0)"
  if [ "$was_leader" = "$i" ]; then
    docker logs "$(pod "$i")" > "$WORK/stop-$i.log" 2>&1
    grep -q "handed leadership over before stopping" "$WORK/stop-$i.log" ||
      die "leader kvstore-$i stopped without handing leadership over"
    say "kvstore-$i (leader) handed leadership over and exited 0"
  else
    say "kvstore-$i exited 0"
  fi
  docker start "$(pod "$i")" >/dev/null
  wait_for 90 "kvstore-$i back and caught up" ready "$(( (i + 1) % 3 ))" kvstore-0 kvstore-1 kvstore-2
done
wait_for 30 "kvstore-0 leads after the rolling restart" leader_is 0 0
stop_writer
say "after the rolling restart: $(show 0)"

# --- 5. scale 3 -> 5 -> 3 under a writer ----------------------------------------------
# As the StatefulSet controller scales: spec.replicas first, then pods
# created in ordinal order, each once the one before it runs; on the way
# down, spec.replicas first, then the highest ordinal deleted (SIGTERM,
# the manifest's 45 s grace) and waited for before the next.
LEADER=$(leader_seen_by 0)
W=1; [ "$LEADER" = 1 ] && W=2   # the writer's client runs in a pod that stays
say "step 5: scale 3 -> 5 -> 3 with a writer (from kvstore-$W); leader kvstore-$LEADER; before:"
print_members
SCALE_AT=$(date +%s.%N)
start_writer "$W" e
wait_for 30 "the writer gets going" acked_at_least "$SCALE_AT" 10

T=$(date +%s.%N)
set_replicas 5
say "spec.replicas=5 written"
for i in 3 4; do
  docker volume create --label "$LABEL" "$P-data-$i" >/dev/null
  t=$(date +%s.%N)
  create_pod "$i"
  wait_for 60 "kvstore-$i runs and answers" running "$i"
  say "kvstore-$i created and running in $(since "$t") s"
done
t=$(date +%s.%N)
wait_for 60 "the leader's member list shows voters 0..4 and no learners" members_exactly 5
say "voters 0..4, no learners: $(since "$t") s after kvstore-4 ran; scale-up took $(since "$T") s in all"
print_members
UP_AT=$(date +%s.%N)
wait_for 30 "writes continue at 5 members" acked_at_least "$UP_AT" 10

T=$(date +%s.%N)
set_replicas 3
say "spec.replicas=3 written"
for i in 4 3; do
  t=$(date +%s.%N)
  docker stop -t 45 "$(pod "$i")" >/dev/null
  wait_for 10 "kvstore-$i exited" exited "$i"
  code=$(docker inspect -f '{{.State.ExitCode}}' "$(pod "$i")")
  [ "$code" = 0 ] || die "kvstore-$i exited $code on SIGTERM after the scale-down (want 0)"
  docker logs "$(pod "$i")" > "$WORK/scaled-down-$i.log" 2>&1
  # The pod's own account of leaving (JSON log lines), for the record.
  how=$(python3 - "$WORK/scaled-down-$i.log" <<'PY'
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    msg = j.get("message", "")
    if "the configuration" in msg and ("scaled down" in msg or "leave" in msg):
        err = j.get("fields", {}).get("error")
        print(f"{j.get('level')} {msg!r}" + (f" ({err})" if err else ""))
        break
else:
    print("no line about leaving the configuration")
PY
)
  say "kvstore-$i stopped (SIGTERM) and exited 0 in $(since "$t") s; its log: $how"
  # It left before exiting: the first answer of the leader after the exit
  # no longer lists it (retried only while no leader answers).
  wait_for 10 "the leader answers a member list" eval 'listed=$(leader_lists "$i")'
  [ "$listed" = no ] || die "kvstore-$i exited but the leader still lists it as a member (it did not leave the configuration before exiting)"
done
t=$(date +%s.%N)
wait_for 60 "the leader's member list shows exactly voters 0,1,2" members_exactly 3
say "exactly voters 0,1,2: $(since "$t") s after kvstore-3 exited; scale-down took $(since "$T") s in all"
print_members
DOWN_AT=$(date +%s.%N)
wait_for 30 "writes continue at 3 members" acked_at_least "$DOWN_AT" 10
stop_writer
say "step 5 done: $(acked_since "$SCALE_AT") writes acknowledged during the scaling, $(wc -l < "$WORK/unacked") with unknown outcome so far"

# --- 6. nothing acknowledged is lost -----------------------------------------------
wait_for 30 "all members applied the same revision" settled 0 kvstore-0 kvstore-1 kvstore-2
ACKED=$(wc -l < "$WORK/acked")
UNKNOWN=$(wc -l < "$WORK/unacked")
lost_total=0
for i in 0 1 2; do
  kvctl_in "$i" --endpoints 127.0.0.1:7379 --consistency serializable --json range ct/ --prefix --limit 1000000 > "$WORK/dump-$i.json"
  lost=$(python3 - "$WORK/acked" "$WORK/dump-$i.json" <<'PY'
import json, sys
acked = {}
for line in open(sys.argv[1]):
    k, v = line.split()[:2]
    acked[k] = v
held = {kv["key"]: kv["value"] for kv in json.load(open(sys.argv[2]))}
lost = sorted(k for k, v in acked.items() if held.get(k) != v)
for k in lost[:10]:
    print(f"LOST {k}: want {acked[k]!r}, node has {held.get(k)!r}", file=sys.stderr)
print(len(lost))
PY
)
  say "kvstore-$i holds every acknowledged write? lost=$lost of $ACKED"
  lost_total=$((lost_total + lost))
done
# And once through the client Service, linearizable.
kvctl_in 0 --endpoints "$SVC_EP" --json range ct/ --prefix --limit 1000000 > "$WORK/dump-svc.json"
python3 -c 'import json,sys; sys.exit(0 if len(json.load(open(sys.argv[1]))) >= int(sys.argv[2]) else 1)' \
  "$WORK/dump-svc.json" "$ACKED" || die "a linearizable read through the Service returned fewer keys than were acknowledged"
[ "$lost_total" = 0 ] || die "acknowledged writes lost: $lost_total"
wait_for 20 "kvstore-0 names the leader" eval 'LEADER=$(leader_seen_by 0); [ "$LEADER" != - ]'
wait_for 20 "/metrics at the end: one leader, kvstore-$LEADER" one_leader_is end "$LEADER" 0 1 2
say "/metrics at the end: kvstore-$LEADER alone reports kvstore_is_leader 1 (applied revisions" \
  "$(metric kvstore_applied_revision end 0), $(metric kvstore_applied_revision end 1), $(metric kvstore_applied_revision end 2))"
say "PASSED: acknowledged=$ACKED lost=0 unknown-outcome=$UNKNOWN (TLS on both ports; leader crash, restart, partition," \
  "rolling restart, scale 3 -> 5 -> 3; /metrics: one leader at each check, leader changes counted)"
echo "container test: 1 passed, 0 failed"
