#!/usr/bin/env bash
# Validates everything kvstore ships for Kubernetes, offline (PyPI is the
# only network it uses, once, to install the pinned tools):
#
#   render      `kubectl kustomize` of every overlay in k8s/overlays/ and of
#               the documented variants in .ci/k8s/fixtures/ (eks-nlb: the
#               optional NLB component on; eks-five-members: the 5-member
#               cluster of docs/eks.md; eks-tls, eks-monitoring: the other
#               optional components)
#   schema      kubernetes-validate --strict against each Kubernetes version
#               in K8S_VERSIONS: unknown fields and wrong types fail; custom
#               resources (cert-manager's, the Prometheus Operator's)
#               against .ci/k8s/crd-schemas.json by .ci/k8s/check_crds.py
#   rules       where a PrometheusRule is rendered: `promtool check rules`
#               on its groups (PromQL parses, templates parse, no duplicate
#               alert), and `promtool test rules` of
#               .ci/k8s/monitoring-rules-test.yaml (each alert fires on what
#               should raise it, and only there)
#   warn        any WARN line of kubernetes-validate fails too: it exits 0
#               for a kind it has no schema for (a typo in `kind:`)
#   policy      checkov on the rendered manifests (skips only by annotation,
#               each with its reason, in the manifests themselves)
#   invariants  .ci/k8s/check_invariants.py: what kvstore itself needs
#               (replica count = --replicas, PDB one at a time, the Role
#               that lets the pod read spec.replicas, grace period >
#               handover + drain, probes on the ops port, the PodMonitor
#               on it, the ops port closed to all but named sources, every
#               object in the StatefulSet's namespace, ...)
#   hadolint, checkov-dockerfile   on the Dockerfile (inline skips only)
#   yamllint    on k8s/ and .ci/k8s/
#
# Then it feeds in the deliberately broken fixtures .ci/k8s/fixtures/broken-*
# and exits non-zero unless each one fails at the gate its `expect` file
# names: a validation that lets a broken manifest through is itself broken.
#
# Tools: kubectl (with its built-in kustomize) from the machine; the rest in
# a venv this script makes (KVSTORE_K8S_VENV, default .ci/venv-k8s) from
# .ci/k8s/requirements.txt. promtool: from PATH if there is one, else taken
# out of Debian's prometheus package (`apt-get download`, then only
# usr/bin/promtool unpacked into the venv: nothing is installed and no
# Prometheus server is started). No plugin, schema or policy is downloaded
# at run time (checkov runs with --skip-download).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
VENV=${KVSTORE_K8S_VENV:-$ROOT/.ci/venv-k8s}
REQ=$ROOT/.ci/k8s/requirements.txt
FIXTURES=$ROOT/.ci/k8s/fixtures
# The EKS version of k8s/eks/cluster.yaml, and the newest schemas that the
# pinned kubernetes-validate carries (so the manifests keep validating on
# the next upgrades).
K8S_VERSIONS=(1.35.0 1.37.0)

START=$(date +%s)
say() { printf '[validate %3ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# --- tools -----------------------------------------------------------------
command -v kubectl >/dev/null || { echo "kubectl is not on PATH" >&2; exit 1; }
# shellcheck source=.ci/k8s/venv.sh
. "$ROOT/.ci/k8s/venv.sh"
pinned_venv "$VENV" "$REQ"
BIN=$VENV/bin
# promtool, from Debian's archive (the one registry of binaries reachable
# here). apt-get download needs the package lists: `apt-get update` once if
# they are missing (as root, as CI runs).
PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ] && [ -x "$BIN/promtool" ]; then PROMTOOL=$BIN/promtool; fi
if [ -z "$PROMTOOL" ]; then
  command -v apt-get >/dev/null ||
    { echo "promtool is not on PATH and there is no apt-get to fetch Debian's prometheus package" >&2; exit 1; }
  say "fetching promtool from Debian's prometheus package"
  deb_dir=$(mktemp -d)
  get_deb() { (cd "$deb_dir" && apt-get download -qq -o APT::Sandbox::User=root prometheus) >/dev/null 2>&1; }
  if ! get_deb; then
    apt-get update -qq >/dev/null 2>&1 || true
    get_deb || { echo "apt-get download prometheus failed" >&2; rm -rf "$deb_dir"; exit 1; }
  fi
  dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -x -O ./usr/bin/promtool > "$BIN/promtool.part"
  rm -rf "$deb_dir"
  chmod 0755 "$BIN/promtool.part"
  mv "$BIN/promtool.part" "$BIN/promtool"
  PROMTOOL=$BIN/promtool
fi
say "tools: $(kubectl version --client 2>/dev/null | head -n1), kubernetes-validate $("$BIN/kubernetes-validate" --version)," \
  "checkov $("$BIN/checkov" --version), $("$BIN/hadolint" --version), $("$BIN/yamllint" --version)," \
  "$("$PROMTOOL" --version 2>&1 | head -n1)"
# checkov must not phone home; these only matter if --skip-download were
# ever dropped.
export BC_SKIP_MAPPING=TRUE CHECKOV_SKIP_UPDATE_CHECK=1 LOG_LEVEL=WARNING

# --- gates -----------------------------------------------------------------
# Each gate writes $OUT/<name>.<gate>.log and, when it fails, appends the
# gate's name to $OUT/<name>.failed.
fail_gate() { echo "$2" >> "$OUT/$1.failed"; }

gate_render() { # name dir
  if ! kubectl kustomize "$2" > "$OUT/$1.yaml" 2> "$OUT/$1.render.log"; then
    fail_gate "$1" render
    return 1
  fi
}

gate_schema() { # name
  local v log="$OUT/$1.schema.log"
  : > "$log"
  # Custom resources (cert-manager's) against .ci/k8s/crd-schemas.json; the
  # rest, in $1.core.yaml, against Kubernetes' own schemas.
  if ! "$BIN/python" "$ROOT/.ci/k8s/check_crds.py" "$OUT/$1.yaml" "$OUT/$1.core.yaml" "$OUT/$1.rules.yaml" >> "$log" 2>&1; then
    fail_gate "$1" schema
  fi
  for v in "${K8S_VERSIONS[@]}"; do
    if ! "$BIN/kubernetes-validate" --strict --quiet -k "$v" "$OUT/$1.core.yaml" >> "$log" 2>&1; then
      fail_gate "$1" schema
    fi
  done
  if grep -q '^WARN' "$log"; then
    cp "$log" "$OUT/$1.warn.log"
    fail_gate "$1" warn
  fi
}

gate_rules() { # name: the alerts, if a PrometheusRule was rendered
  local log="$OUT/$1.rules.log" dir="$OUT/$1.rules-test"
  [ -f "$OUT/$1.rules.yaml" ] || return 0
  : > "$log"
  "$PROMTOOL" check rules "$OUT/$1.rules.yaml" >> "$log" 2>&1 || { fail_gate "$1" rules; return 0; }
  # The unit tests, against the same rules less their long descriptions
  # (see the test file's header).
  mkdir -p "$dir"
  cp "$ROOT/.ci/k8s/monitoring-rules-test.yaml" "$dir/"
  "$BIN/python" - "$OUT/$1.rules.yaml" "$dir/kvstore.rules.yaml" <<'PY' >> "$log" 2>&1 || { fail_gate "$1" rules; return 0; }
import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))
for group in rules["groups"]:
    for rule in group["rules"]:
        (rule.get("annotations") or {}).pop("description", None)
yaml.safe_dump(rules, open(sys.argv[2], "w"), sort_keys=False)
PY
  (cd "$dir" && "$PROMTOOL" test rules monitoring-rules-test.yaml) >> "$log" 2>&1 || fail_gate "$1" rules
}

gate_policy() { # name
  "$BIN/checkov" --skip-download --quiet --compact --framework kubernetes \
    -f "$OUT/$1.yaml" > "$OUT/$1.policy.log" 2>&1 || fail_gate "$1" policy
}

gate_invariants() { # name
  "$BIN/python" "$ROOT/.ci/k8s/check_invariants.py" "$OUT/$1.yaml" \
    > "$OUT/$1.invariants.log" 2>&1 || fail_gate "$1" invariants
}

gate_dockerfile() { # name path
  "$BIN/hadolint" "$2" > "$OUT/$1.hadolint.log" 2>&1 || fail_gate "$1" hadolint
  "$BIN/checkov" --skip-download --quiet --compact --framework dockerfile \
    -f "$2" > "$OUT/$1.checkov-dockerfile.log" 2>&1 || fail_gate "$1" checkov-dockerfile
}

validate_kustomization() { # name dir
  rm -f "$OUT/$1.failed"
  gate_render "$1" "$2" || return 0
  gate_schema "$1"
  gate_rules "$1"
  gate_policy "$1"
  gate_invariants "$1"
}

show_failures() { # name
  local gate
  while read -r gate; do
    echo "--- $1: $gate failed:"
    if [ "$gate" = warn ]; then grep '^WARN' "$OUT/$1.warn.log"; else cat "$OUT/$1.$gate.log"; fi
  done < <(sort -u "$OUT/$1.failed")
}

# --- what we ship must pass ------------------------------------------------
problems=0
passed=0
targets=()
for d in k8s/overlays/*/; do targets+=("overlay-$(basename "$d")=$d"); done
# Fixtures that are not broken-* are variants we document and must pass too.
for d in "$FIXTURES"/*/; do
  case $(basename "$d") in broken-*) ;; *) targets+=("fixture-$(basename "$d")=$d") ;; esac
done
for t in "${targets[@]}"; do
  name=${t%%=*} dir=${t#*=}
  validate_kustomization "$name" "$dir"
  if [ -s "$OUT/$name.failed" ]; then
    show_failures "$name"
    problems=$((problems + 1))
  else
    passed=$((passed + 1))
    rules=""
    [ -f "$OUT/$name.rules.yaml" ] && rules=", rules ($(grep -c -- '- alert:' "$OUT/$name.rules.yaml") alerts, promtool check and unit tests)"
    say "ok: ${dir#"$ROOT"/} ($(grep -c '^kind:' "$OUT/$name.yaml") objects; schema ${K8S_VERSIONS[*]}$rules, policy, invariants)"
  fi
done

rm -f "$OUT/dockerfile.failed"
gate_dockerfile dockerfile "$ROOT/Dockerfile"
if [ -s "$OUT/dockerfile.failed" ]; then
  show_failures dockerfile
  problems=$((problems + 1))
else
  passed=$((passed + 1))
  say "ok: Dockerfile (hadolint, checkov)"
fi

if "$BIN/yamllint" --strict -c "$ROOT/.ci/k8s/yamllint.yaml" k8s .ci/k8s > "$OUT/yamllint.log" 2>&1; then
  passed=$((passed + 1))
  say "ok: yamllint k8s/ .ci/k8s/"
else
  echo "--- yamllint failed:"
  cat "$OUT/yamllint.log"
  problems=$((problems + 1))
fi

# --- the invariant checker catches every invariant, broken one at a time ---
# On the render with the most in it: the base, peer TLS and monitoring.
if (cd "$ROOT/.ci/k8s" && "$BIN/python" test_invariants.py "$OUT/fixture-eks-monitoring.yaml") > "$OUT/test-invariants.log" 2>&1; then
  passed=$((passed + 1))
  say "ok: $(tail -n 1 "$OUT/test-invariants.log")"
else
  echo "--- the invariant checker let broken manifests through:"
  cat "$OUT/test-invariants.log"
  problems=$((problems + 1))
fi

# --- what is broken must fail, at the expected gate ------------------------
for dir in "$FIXTURES"/broken-*/; do
  name=$(basename "$dir")
  rm -f "$OUT/$name.failed"
  if [ -f "$dir/kustomization.yaml" ]; then
    validate_kustomization "$name" "$dir"
  else
    gate_dockerfile "$name" "$dir/Dockerfile"
  fi
  ok=1
  while read -r gate expected; do
    [ -n "$gate" ] || continue
    if ! grep -qx "$gate" "$OUT/$name.failed" 2>/dev/null; then
      echo "--- $name: the $gate gate did NOT fail on this deliberately broken input"
      ok=0
    elif ! grep -qF -- "$expected" "$OUT/$name.$gate.log"; then
      echo "--- $name: the $gate gate failed, but without \"$expected\":"
      cat "$OUT/$name.$gate.log"
      ok=0
    fi
  done < "$dir/expect"
  if [ "$ok" = 1 ]; then
    passed=$((passed + 1))
    say "ok: $name is rejected ($(sort -u "$OUT/$name.failed" | paste -sd, -))"
  else
    problems=$((problems + 1))
  fi
done

say "k8s validation: $passed passed, $problems failed"
[ "$problems" = 0 ]
