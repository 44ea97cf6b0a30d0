# shellcheck shell=bash
# Shared by tests/envoy.sh and tests/moto.sh (SOURCED by them): where a tool's Python virtualenv
# lives, and making sure `python3 -m venv` works.

# The default virtualenv for tool NAME: /var/cache/halyard/NAME-venv as root, else under
# ~/.cache/halyard.
halyard__default_venv() {
  if [[ "$(id -u)" -eq 0 ]]; then
    printf '%s\n' "/var/cache/halyard/$1-venv"
  else
    printf '%s\n' "${XDG_CACHE_HOME:-$HOME/.cache}/halyard/$1-venv"
  fi
}

# Makes sure `python3 -m venv` works (Debian splits ensurepip into python3-venv); messages name
# the tool that needs it.
halyard__need_python_venv() {
  local tool="$1"
  if command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; then
    return 0
  fi
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "$tool: python3 with the venv module is needed; install python3-venv (as root)" >&2
    return 1
  fi
  echo "$tool: installing python3-venv from Debian" >&2
  local log
  log="$(mktemp)" || return 1
  if ! { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  python3 -c 'import venv, ensurepip' || {
    echo "$tool: python3-venv installed, but python3 still has no venv/ensurepip" >&2
    return 1
  }
}
