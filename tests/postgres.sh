# shellcheck shell=bash
# Starts a throwaway PostgreSQL for the tests. Meant to be SOURCED by the test runner:
#
#   source tests/postgres.sh      # installs PostgreSQL (Debian) if missing, starts a cluster,
#                                 # exports HALYARD_TEST_POSTGRES_URL, stops it on EXIT
#   cargo nextest run -p halyard-ca --run-ignored all -E 'test(/store/)'
#   halyard_postgres_stop         # optional: the EXIT trap does it too
#
# The cluster lives in a temporary directory (data, log, unix socket), listens on 127.0.0.1 on a
# free port, runs with fsync off (set HALYARD_PG_FSYNC=on to measure real commit costs), and has a
# role `halyard` that may create databases: each test makes its own. If HALYARD_TEST_POSTGRES_URL
# is already set (a CI service, say), that server is used and nothing is started.

halyard__pg_bindir() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/psql" ]]; then
      printf '%s\n' "$dir"
      return 0
    fi
  done
  return 1
}

# Runs a PostgreSQL program as the user that owns the cluster (`postgres` when we are root:
# the server refuses to run as root).
halyard__as_pg() {
  if [[ "$(id -u)" -eq 0 ]]; then
    (cd "$HALYARD_PG_DIR" && runuser -u postgres -- "$@")
  else
    (cd "$HALYARD_PG_DIR" && "$@")
  fi
}

halyard__pg_port_free() {
  # Nothing answers on it. (bash's /dev/tcp: no extra tools needed.)
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

halyard_postgres_start() {
  if [[ -n "${HALYARD_TEST_POSTGRES_URL:-}" ]]; then
    echo "postgres: using HALYARD_TEST_POSTGRES_URL from the environment" >&2
    return 0
  fi
  local bindir
  if ! bindir="$(halyard__pg_bindir)"; then
    if [[ "$(id -u)" -ne 0 ]]; then
      echo "postgres: not installed under /usr/lib/postgresql/*/bin; run as root to install it" >&2
      return 1
    fi
    echo "postgres: installing PostgreSQL from Debian" >&2
    apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
    bindir="$(halyard__pg_bindir)" || {
      echo "postgres: installed, but no initdb/pg_ctl/psql under /usr/lib/postgresql/*/bin" >&2
      return 1
    }
  fi
  if [[ "$(id -u)" -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    echo "postgres: there is no 'postgres' user to run the server as" >&2
    return 1
  fi

  HALYARD_PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/halyard-pg.XXXXXX")" || return 1
  export HALYARD_PG_DIR
  chmod 700 "$HALYARD_PG_DIR"
  if [[ "$(id -u)" -eq 0 ]]; then
    chown postgres:postgres "$HALYARD_PG_DIR" || return 1
  fi

  local password="halyard-test-$RANDOM$RANDOM"
  (umask 077 && printf '%s\n' "$password" >"$HALYARD_PG_DIR/pwfile")
  [[ "$(id -u)" -ne 0 ]] || chown postgres:postgres "$HALYARD_PG_DIR/pwfile"
  if ! halyard__as_pg "$bindir/initdb" -D "$HALYARD_PG_DIR/data" -U postgres \
    --pwfile="$HALYARD_PG_DIR/pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C >"$HALYARD_PG_DIR/initdb.log" 2>&1; then
    echo "postgres: initdb failed:" >&2
    cat "$HALYARD_PG_DIR/initdb.log" >&2
    return 1
  fi
  rm -f "$HALYARD_PG_DIR/pwfile"

  # A port nothing listens on; should another process take it first, try another.
  local port attempt started=""
  for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    halyard__pg_port_free "$port" || continue
    if halyard__as_pg "$bindir/pg_ctl" -D "$HALYARD_PG_DIR/data" -l "$HALYARD_PG_DIR/server.log" \
      -w -t 60 -o "-c listen_addresses=127.0.0.1 -c port=$port \
        -c unix_socket_directories=$HALYARD_PG_DIR -c max_connections=300 \
        -c fsync=${HALYARD_PG_FSYNC:-off} -c full_page_writes=${HALYARD_PG_FSYNC:-off}" \
      start >/dev/null; then
      started=1
      break
    fi
  done
  if [[ -z "$started" ]]; then
    echo "postgres: the server did not start; its log:" >&2
    cat "$HALYARD_PG_DIR/server.log" >&2 2>/dev/null
    return 1
  fi
  HALYARD_PG_PORT="$port"
  export HALYARD_PG_PORT
  # Stop it when the shell that sourced this exits, after whatever EXIT trap it already had.
  # (`trap -p` prints the trap quoted for reuse; `set --` here only touches this function's
  # arguments.)
  local previous="" spec
  spec="$(trap -p EXIT)"
  if [[ -n "$spec" ]]; then
    eval "set -- $spec"
    previous="$3"
  fi
  # shellcheck disable=SC2064 # expand now: the previous trap's text
  trap -- "${previous:+$previous; }halyard_postgres_stop" EXIT

  if ! halyard__as_pg "$bindir/psql" -h "$HALYARD_PG_DIR" -p "$port" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE halyard LOGIN CREATEDB PASSWORD '$password'" \
    -c "CREATE DATABASE halyard OWNER halyard" >/dev/null; then
    echo "postgres: could not create the test role and database" >&2
    return 1
  fi
  export HALYARD_TEST_POSTGRES_URL="postgres://halyard:$password@127.0.0.1:$port/halyard"
  echo "postgres: $("$bindir/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port" \
    "(data in $HALYARD_PG_DIR)" >&2
}

# Stops the cluster started above and deletes its directory. Safe to call more than once.
halyard_postgres_stop() {
  [[ -n "${HALYARD_PG_DIR:-}" && -d "$HALYARD_PG_DIR" ]] || return 0
  local bindir
  if bindir="$(halyard__pg_bindir)" && [[ -f "$HALYARD_PG_DIR/data/postmaster.pid" ]]; then
    halyard__as_pg "$bindir/pg_ctl" -D "$HALYARD_PG_DIR/data" -m immediate -w stop \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$HALYARD_PG_DIR"
  unset HALYARD_PG_DIR HALYARD_PG_PORT HALYARD_TEST_POSTGRES_URL
}

halyard_postgres_start
