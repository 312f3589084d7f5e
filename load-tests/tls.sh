#!/usr/bin/env bash
# TLS cost on the public listener: the same request through one sluice
# serving plain HTTP and one serving HTTPS (a throw-away P-256 certificate,
# made here with openssl), in one run of the load generator, with the CPU
# time per request of each sluice read from /proc around its run.
#
# Rows: plain and TLS over kept-alive HTTP/1.1 connections (the handshake
# amortised), TLS with h2 (ALPN), then plain and TLS with `connection: close`
# on every request (one new connection, so one full handshake, per request).
#
# Usage: load-tests/tls.sh [connections=32] [seconds=10]
# Env:   SLUICE_THREADS (default 1), MOCK_THREADS (1), LOADGEN_THREADS (1).
# Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${1:-32}
seconds=${2:-10}
sluice_threads=${SLUICE_THREADS:-1}
mock_threads=${MOCK_THREADS:-1}
loadgen_threads=${LOADGEN_THREADS:-1}

cargo build --release -q -p sluice -p sluice-load-tests
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mock_port=$(free_port)
plain_port=$(free_port)
tls_port=$(free_port)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

cat >"$work/plain.yaml" <<YAML
server:
  threads: $sluice_threads
upstreams:
  mock: {base_url: "http://127.0.0.1:$mock_port/v1", api_key: sk-load}
models:
  - {name: "*", upstream: mock}
ledger:
  enabled: false
YAML
cp "$work/plain.yaml" "$work/tls.yaml"
sed -i "s|^  threads: $sluice_threads|  threads: $sluice_threads\n  tls: {cert_file: $work/cert.pem, key_file: $work/key.pem}|" "$work/tls.yaml"

"$bin/mock-upstream" --listen "127.0.0.1:$mock_port" --threads "$mock_threads" &
RUST_LOG=warn "$bin/sluice" serve --config "$work/plain.yaml" --listen "127.0.0.1:$plain_port" &
plain_pid=$!
RUST_LOG=warn "$bin/sluice" serve --config "$work/tls.yaml" --listen "127.0.0.1:$tls_port" &
tls_pid=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$plain_port/health/ready" >/dev/null \
    && curl -skf "https://127.0.0.1:$tls_port/health/ready" >/dev/null && break
  sleep 0.1
done

body='{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"max_tokens":32}'
echo "connections=$connections seconds=$seconds sluice_threads=$sluice_threads mock_threads=$mock_threads loadgen_threads=$loadgen_threads"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "## kept-alive connections"
"$bin/loadgen" --connections "$connections" --duration-s "$seconds" --threads "$loadgen_threads" --body "$body" \
  --cpu-pid "plain=$plain_pid" --cpu-pid "tls=$tls_pid" \
  --target "plain=http://127.0.0.1:$plain_port/v1/chat/completions" \
  --target "tls=https://127.0.0.1:$tls_port/v1/chat/completions"
echo
echo "## h2 over TLS (ALPN), $connections streams on 4 connections"
"$bin/loadgen" --connections "$connections" --duration-s "$seconds" --threads "$loadgen_threads" --body "$body" \
  --h2 --cpu-pid "tls-h2=$tls_pid" \
  --target "tls-h2=https://127.0.0.1:$tls_port/v1/chat/completions"
echo
echo "## a new connection per request (connection: close)"
"$bin/loadgen" --connections "$connections" --duration-s "$seconds" --threads "$loadgen_threads" --body "$body" \
  --header "connection: close" \
  --cpu-pid "plain-new-conn=$plain_pid" --cpu-pid "tls-new-conn=$tls_pid" \
  --target "plain-new-conn=http://127.0.0.1:$plain_port/v1/chat/completions" \
  --target "tls-new-conn=https://127.0.0.1:$tls_port/v1/chat/completions"
