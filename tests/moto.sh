# shellcheck shell=bash
# Makes the moto AWS emulator available to the AWS Private CA tests. Meant to be SOURCED by the
# test runner:
#
#   source tests/moto.sh          # installs moto[server] if missing, exports HALYARD_MOTO_SERVER
#   cargo nextest run -p halyard-ca --test aws_pca --run-ignored all
#
# moto comes from PyPI (`moto[server]`, pinned below) and is installed into a virtualenv,
# HALYARD_MOTO_VENV, by default /var/cache/halyard/moto-venv when we are root and
# ~/.cache/halyard/moto-venv otherwise. A second run finds it there and installs nothing.
#
# HALYARD_MOTO_SERVER is a launcher, `<venv>/bin/halyard-moto-server PORT`, that runs
# tests/moto_shim.py with the virtualenv's Python: moto's server on 127.0.0.1:PORT, taught the
# SubordinateCACertificate templates, counting IssueCertificate calls and able to throttle them
# (see the shim's header for exactly what it changes). Nothing is started here: each test starts
# its own emulator on a free port, so tests share no state.

# shellcheck source=tests/python-venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/python-venv.sh"

HALYARD_MOTO_PYPI_VERSION="5.2.5"

halyard__moto_install() {
  local venv="$1" python="$1/bin/python" installed=""
  if [[ -x "$python" ]]; then
    installed="$("$python" -c 'import importlib.metadata as m; print(m.version("moto"))' \
      2>/dev/null)"
  fi
  # The server extra too: an install that stopped half-way has moto without flask.
  if [[ "$installed" != "$HALYARD_MOTO_PYPI_VERSION" ]] ||
    ! "$python" -c 'import flask, flask_cors, moto.server' 2>/dev/null; then
    halyard__need_python_venv moto || return 1
    echo "moto: installing moto[server]==$HALYARD_MOTO_PYPI_VERSION from PyPI into $venv" >&2
    rm -rf "$venv"
    (umask 022 && mkdir -p "$(dirname "$venv")") || return 1
    (umask 022 && python3 -m venv "$venv") || return 1
    (umask 022 && "$python" -m pip install -q --disable-pip-version-check --no-input \
      "moto[server]==$HALYARD_MOTO_PYPI_VERSION") || {
      echo "moto: pip install moto[server]==$HALYARD_MOTO_PYPI_VERSION failed" >&2
      return 1
    }
  fi
}

halyard_moto_setup() {
  local venv="${HALYARD_MOTO_VENV:-$(halyard__default_venv moto)}"
  local shim
  shim="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/moto_shim.py" || return 1
  [[ -f "$shim" ]] || {
    echo "moto: $shim is missing" >&2
    return 1
  }
  halyard__moto_install "$venv" || return 1
  # Written on every run: it names this checkout's shim.
  local launcher="$venv/bin/halyard-moto-server"
  (umask 022 && printf '#!/usr/bin/env bash\nexec %q %q "$@"\n' "$venv/bin/python" "$shim" >"$launcher") ||
    return 1
  chmod 755 "$launcher" || return 1
  "$launcher" --check || {
    echo "moto: $launcher --check failed: the shim cannot patch this moto" >&2
    return 1
  }
  HALYARD_MOTO_SERVER="$launcher"
  export HALYARD_MOTO_SERVER
  echo "moto: $HALYARD_MOTO_SERVER (moto $("$venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("moto"))'))" >&2
}

halyard_moto_setup
