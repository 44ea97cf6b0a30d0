#!/usr/bin/env bash
# Every benchmark of issue "Performance" in one run, in BENCHMARKS.md's order (not part of CI;
# the test command runs short smoke runs of the load tools instead). Needs the machine to itself:
# each part pins its processes to cores 0 and 1.
#
#   ./tests/bench-all.sh
#
# 1. The server (tests/bench.sh): the in-process limits of the release build, halyard-ca on one
#    core over SQLite, PostgreSQL 15 with fsync on, and no journal, open-loop latency at half the
#    peak, and cfssl on the same core driven by the same generator.
# 2. Agent scale (tests/bench-agent.sh): one agent, 10,000 identities over 10,000 SDS streams,
#    memory, idle CPU, a bundle push to every stream and a rotation storm per --taint-spread.
# 3. Revocation: revoke -> refused by a real Envoy, 100 times in a row (a debug build, as the
#    test suite builds it).
# Settings are those of the scripts it runs (BENCH_SECONDS, BENCH_IDENTITIES, ...), plus
# HALYARD_REVOCATIONS (default 100). Record what it prints in BENCHMARKS.md with the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "=== 1. the server against the crypto limit and cfssl"
HALYARD_PG_FSYNC=on bash -c 'source tests/postgres.sh && ./tests/bench.sh'

echo "=== 2. agent scale"
./tests/bench-agent.sh

echo "=== 3. revoke -> enforced"
# shellcheck source=/dev/null
source tests/envoy.sh
cargo build --locked -p halyard-ca -p halyard-agent
HALYARD_REVOCATIONS="${HALYARD_REVOCATIONS:-100}" cargo nextest run --locked -p halyard-tests \
  --test envoy_revocation --run-ignored all --no-capture many_revocations
