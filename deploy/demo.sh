#!/usr/bin/env bash
# Halyard's local demo, on its embedded defaults: the offline root ceremony for trust domain
# cluster.local, then one workload certificate issued and checked by OpenSSL.
#
#   ./deploy/demo.sh              build (release) and run in ./halyard-demo (replaced each run)
#   ./deploy/demo.sh --debug      the same with a debug build (what the test script runs)
#   HALYARD_DEMO_DIR=DIR ./deploy/demo.sh   run in DIR instead
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
profile=release
[[ "${1:-}" == "--debug" ]] && profile=debug
demo=${HALYARD_DEMO_DIR:-$here/halyard-demo}
td=cluster.local
id=spiffe://$td/ns/default/sa/web

if ! command -v openssl >/dev/null; then
  echo "== installing openssl (the demo uses it as an independent verifier)"
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

echo "== building halyard-ca ($profile)"
if [[ $profile == release ]]; then
  cargo build --quiet --release -p halyard-ca --manifest-path "$here/Cargo.toml"
else
  cargo build --quiet -p halyard-ca --manifest-path "$here/Cargo.toml"
fi
target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$here/Cargo.toml" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ca="$target/$profile/halyard-ca"

rm -rf "$demo"
mkdir -p "$demo"
cd "$demo"
set -x
"$ca" root init --trust-domain $td --dir root
"$ca" intermediate csr --data-dir data --trust-domain $td --out intermediate.csr
"$ca" root sign-intermediate --dir root --csr intermediate.csr --out intermediate.crt --ttl 30d
"$ca" intermediate import --data-dir data --cert intermediate.crt --root root/root.crt
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj / \
  -addext "subjectAltName=URI:$id" -keyout web.key -out web.csr 2>/dev/null
"$ca" sign --data-dir data --csr web.csr --spiffe-id $id --ttl 1h --out web.pem
openssl verify -x509_strict -purpose sslserver -CAfile data/bundle.pem -untrusted data/intermediate.crt web.pem
openssl verify -x509_strict -purpose sslclient -CAfile data/bundle.pem -untrusted data/intermediate.crt web.pem
{ set +x; } 2>/dev/null
openssl x509 -in web.pem -noout -subject -issuer -serial -dates -ext subjectAltName,keyUsage,extendedKeyUsage,basicConstraints
ls -l root data
echo "== done: the chain is $demo/web.pem (leaf, intermediate); the root is $demo/data/bundle.pem"
