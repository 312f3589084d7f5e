#!/usr/bin/env bash
# The short comparison; `suite.sh` is the full one (five configurations, open
# loop, streams, held streams, plots). Same request, same load generator, same run: straight to the mock upstream,
# then through sluice in front of it (ledger off), then through a second
# sluice with the default SQLite ledger on. Prints a markdown table with req/s,
# latency percentiles, each target's throughput ratio to the direct call, and
# CPU time per request of the process behind each target (mock for direct,
# sluice for sluice), read from /proc around each target's run.
#
# Usage: load-tests/run.sh [connections=32] [seconds=10] [stream=false]
# Env:   SLUICE_THREADS (default 1), MOCK_THREADS (1), LOADGEN_THREADS (1),
#        MOCK_LATENCY_US (0): fixed upstream latency before headers.
# Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${1:-32}
seconds=${2:-10}
stream=${3:-false}
sluice_threads=${SLUICE_THREADS:-1}
mock_threads=${MOCK_THREADS:-1}
loadgen_threads=${LOADGEN_THREADS:-1}
latency_us=${MOCK_LATENCY_US:-0}

cargo build --release -q -p sluice -p sluice-load-tests
bin="$PWD/target/release"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mock_port=$(free_port)
sluice_port=$(free_port)
ledger_port=$(free_port)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/sluice.yaml" <<YAML
server:
  threads: $sluice_threads
upstreams:
  mock: {base_url: "http://127.0.0.1:$mock_port/v1", api_key: sk-load}
models:
  - {name: "*", upstream: mock}
ledger:
  enabled: false
YAML
sed 's/enabled: false/enabled: true/' "$work/sluice.yaml" >"$work/sluice-ledger.yaml"
mkdir -p "$work/ledger"

"$bin/mock-upstream" --listen "127.0.0.1:$mock_port" --threads "$mock_threads" --latency-us "$latency_us" &
mock_pid=$!
RUST_LOG=warn "$bin/sluice" serve --config "$work/sluice.yaml" --listen "127.0.0.1:$sluice_port" --admin-listen "127.0.0.1:$(free_port)" &
sluice_pid=$!
(cd "$work/ledger" && RUST_LOG=warn exec "$bin/sluice" serve --config "$work/sluice-ledger.yaml" --listen "127.0.0.1:$ledger_port" --admin-listen "127.0.0.1:$(free_port)") &
ledger_pid=$!
for port in $sluice_port $ledger_port; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break
    sleep 0.1
  done
done

body=$(printf '{"model":"gpt-4o-mini","stream":%s,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"max_tokens":32}' "$stream")

echo "connections=$connections seconds=$seconds stream=$stream sluice_threads=$sluice_threads mock_threads=$mock_threads loadgen_threads=$loadgen_threads mock_latency_us=$latency_us"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
"$bin/loadgen" --connections "$connections" --duration-s "$seconds" --threads "$loadgen_threads" --body "$body" \
  --cpu-pid "direct=$mock_pid" --cpu-pid "sluice=$sluice_pid" --cpu-pid "sluice+ledger=$ledger_pid" \
  --target "direct=http://127.0.0.1:$mock_port/v1/chat/completions" \
  --target "sluice=http://127.0.0.1:$sluice_port/v1/chat/completions" \
  --target "sluice+ledger=http://127.0.0.1:$ledger_port/v1/chat/completions"
