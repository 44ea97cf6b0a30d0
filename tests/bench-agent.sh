#!/usr/bin/env bash
# The agent scale benchmark (issue 8): one halyard-agent with N cached identities and N open SDS
# streams. Not part of CI (the test command runs a short smoke run of the tool instead:
# tests/tests/sds_load.rs). Release build; the agent pinned to one core, the CA and the load tool
# (halyard-sds-load) to the other, so the agent's figures are one-core figures.
#
#   ./tests/bench-agent.sh                         # 10,000 identities over 10,000 streams
#   BENCH_IDENTITIES=2000 ./tests/bench-agent.sh
#
# Settings (environment):
#   BENCH_IDENTITIES   identities, each an entry for unix:uid:<this uid> (default 10000)
#   BENCH_STREAMS      SDS streams (default: as many as identities: one identity + ROOTCA each)
#   BENCH_CONNECTIONS  HTTP/2 connections the streams share (default 100)
#   BENCH_PROTOCOL     sotw | delta | mixed (default mixed: half of the streams each)
#   BENCH_TAINT_SPREADS the agent's --taint-spread for each run, in turn (default "30s 1s"): a
#                      fresh CA and agent for each
#   BENCH_IDLE         how long to watch the agent's CPU with nothing changing (default 30s)
#   BENCH_AGENT        the agent binary (default: the release build), to compare builds
#
# Each run: a fresh `halyard-ca serve --dev` (the per-node rate limit lifted: one node asks for
# every certificate), the entries created through the admin socket, then the agent joins (its
# first trust snapshot has them all). The tool opens every stream at once and waits for every
# secret (the agent issues them all), reads the agent's VmRSS/VmHWM, its CPU (utime+stime) over
# BENCH_IDLE of no changes, adds a second root to the bundle (AddRoot, as `halyard-ca bundle add`)
# and times the push to every stream's ROOTCA, then taints the active authority and times the
# re-issue of every identity (the agent's cap: 64 CSRs in flight, 16 per batch). Prints the
# tool's JSON report and a summary per run. Record figures in BENCHMARKS.md with the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

identities="${BENCH_IDENTITIES:-10000}"
streams="${BENCH_STREAMS:-$identities}"
connections="${BENCH_CONNECTIONS:-100}"
protocol="${BENCH_PROTOCOL:-mixed}"
spreads="${BENCH_TAINT_SPREADS:-30s 1s}"
idle="${BENCH_IDLE:-30s}"
agent_core="${BENCH_AGENT_CORE:-0}"
load_core="${BENCH_LOAD_CORE:-1}"

cargo build --release --locked -p halyard-ca -p halyard-agent -p halyard-tests \
  --bin halyard-ca --bin halyard-agent --bin halyard-sds-load
# The tool holds one descriptor per connection, the agent as many: raise the soft limit.
ulimit -n "$(ulimit -Hn)"

bin=target/release
agent="${BENCH_AGENT:-$bin/halyard-agent}"
dir="$(mktemp -d)"
ca_pid=""
agent_pid=""
stop() {
  for pid in "$agent_pid" "$ca_pid"; do
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  agent_pid=""
  ca_pid=""
}
cleanup() {
  stop
  rm -rf "$dir"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(free -g | awk '/Mem:/ {print $2}') GB; $(uname -sr)"
echo "== $identities identities, $streams streams over $connections connections ($protocol);" \
  "agent on core $agent_core, CA and load tool on core $load_core"

for spread in $spreads; do
  stop
  rm -rf "$dir/ca" "$dir/agent" "$dir/root2"
  grpc="127.0.0.1:$(port)"
  taskset -c "$load_core" "$bin/halyard-ca" serve --dev --data-dir "$dir/ca" \
    --grpc-listen "$grpc" --http-listen "127.0.0.1:$(port)" --node-rate-limit 1000000 \
    >/dev/null 2>"$dir/ca.log" &
  ca_pid=$!
  for _ in $(seq 100); do
    "$bin/halyard-ca" healthcheck --data-dir "$dir/ca" >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$bin/halyard-ca" healthcheck --data-dir "$dir/ca" >/dev/null || { cat "$dir/ca.log" >&2; exit 1; }

  echo "== taint spread $spread: entries"
  taskset -c "$load_core" "$bin/halyard-sds-load" entries --data-dir "$dir/ca" --node bench-node \
    --count "$identities"
  "$bin/halyard-ca" root init --trust-domain cluster.local --dir "$dir/root2" >/dev/null
  token="$("$bin/halyard-ca" token create --node bench-node --data-dir "$dir/ca")"

  taskset -c "$agent_core" "$agent" run --ca-address "https://$grpc" \
    --trust-bundle "$dir/ca/bundle.pem" --join-token "$token" --socket "$dir/agent.sock" \
    --data-dir "$dir/agent" --taint-spread "$spread" >/dev/null 2>"$dir/agent.log" &
  agent_pid=$!
  for _ in $(seq 300); do
    [[ -S "$dir/agent.sock" ]] && break
    sleep 0.1
  done
  [[ -S "$dir/agent.sock" ]] || { cat "$dir/agent.log" >&2; exit 1; }

  echo "== taint spread $spread: $identities streams"
  taskset -c "$load_core" "$bin/halyard-sds-load" run --socket "$dir/agent.sock" \
    --identities "$identities" --streams "$streams" --connections "$connections" \
    --protocol "$protocol" --ca-data-dir "$dir/ca" --agent-pid "$agent_pid" --idle "$idle" \
    --new-root "$dir/root2/root.crt" --storm --timeout 600s | tee "$dir/report.json"
  jq -r --arg spread "$spread" '
    "first response, all streams:  \(.first_response.all_ms) ms (p50 \(.first_response.p50_ms), p99 \(.first_response.p99_ms))",
    "agent after warm-up:          RSS \(.agent_after_warmup.rss_kib / 1024 | floor) MiB, peak \(.agent_after_warmup.hwm_kib / 1024 | floor) MiB",
    "agent CPU at idle:            \(.idle.agent_cpu_percent) % over \(.idle.seconds) s (\(.idle.updates) responses)",
    "bundle push, all streams:     \(.bundle_push.all_ms) ms (p50 \(.bundle_push.p50_ms), p99 \(.bundle_push.p99_ms)); AddRoot \(.bundle_push.add_root_ms) ms; agent CPU \(.bundle_push.agent_cpu_ms) ms",
    "rotation storm (spread \($spread)): all \(.storm.all_ms) ms (p50 \(.storm.p50_ms), p99 \(.storm.p99_ms)); agent CPU \(.storm.agent_cpu_ms) ms",
    "storm per \(.storm.histogram.bucket_ms) ms:        \(.storm.histogram.counts | map(tostring) | join(" "))",
    "agent at the end:             RSS \(.agent_after_storm.rss_kib / 1024 | floor) MiB, peak \(.agent_after_storm.hwm_kib / 1024 | floor) MiB",
    "errors:                       \(.errors)"
  ' "$dir/report.json"
done
