# Sourced by validate.sh and container-test.sh: pinned_venv VENV REQ makes
# (or keeps) a Python venv at VENV holding exactly the pins of REQ. The
# venv is made again whenever REQ changes, so a bumped pin takes effect.
pinned_venv() {
  local venv=$1 req=$2
  if ! cmp -s "$req" "$venv/.installed-requirements.txt" 2>/dev/null; then
    echo "installing $req into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$req"
    cp "$req" "$venv/.installed-requirements.txt"
  fi
}
