#!/usr/bin/env bash
# What `ledger.durability: strict` costs: sluice with every filter on and a
# SQLite ledger, queued (the default) beside strict, driven by the same load
# generator in one run. Ratios are strict / queued.
#
# Usage: load-tests/durability.sh [quick]
# Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [[ ${1:-} == quick ]]; then warmup=0.5 dur=2; else warmup=1 dur=5; fi
sluice_threads=${SLUICE_THREADS:-1}
nice -n 10 cargo build --release -q -p sluice -p sluice-load-tests
bin="$root/target/release"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listening on port $1" >&2; return 1
}
mock_port=$(free_port); queued_port=$(free_port); strict_port=$(free_port)
source load-tests/configs.sh
{ common; echo "ledger: {enabled: true}"; tenants; } >"$work/queued.yaml"
{ common; echo "ledger: {enabled: true, durability: strict}"; tenants; } >"$work/strict.yaml"
"$bin/mock-upstream" --listen "127.0.0.1:$mock_port" --threads 1 >"$work/mock.log" 2>&1 &
pids+=($!)
start() { # name port
  mkdir -p "$work/$1"
  (cd "$work/$1" && RUST_LOG=warn exec "$bin/sluice" serve --config "$work/$1.yaml" --listen "127.0.0.1:$2" \
     --admin-listen "127.0.0.1:$(free_port)" >"$work/$1.log" 2>&1) &
  echo $!
}
queued_pid=$(start queued "$queued_port"); pids+=($queued_pid)
strict_pid=$(start strict "$strict_port"); pids+=($strict_pid)
for p in $mock_port $queued_port $strict_port; do wait_port "$p"; done
sleep 1
path=/v1/chat/completions
targets=(--target "queued=http://127.0.0.1:$queued_port$path" --target "strict=http://127.0.0.1:$strict_port$path")
cpu=(--cpu-pid "queued=$queued_pid" --cpu-pid "strict=$strict_pid")
body() { printf '{"model":"gpt-4o-mini","stream":%s,"messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}' "$1"; }
auth=(--header "authorization: Bearer sk-load-t1-k0")
run() { # title, then loadgen arguments
  echo; echo "### $1"; shift
  "$bin/loadgen" --warmup-s "$warmup" --duration-s "$dur" --ratio-to queued --added-over queued \
    --settle --no-progress "${cpu[@]}" "$@" "${auth[@]}" "${targets[@]}"
}
run "Non-stream, closed loop, 32 connections" --connections 32 --body "$(body false)"
run "Non-stream, open loop 1000 req/s, 64 connections" --rate 1000 --connections 64 --body "$(body false)"
run "Stream, 10 chunks, open loop 500 req/s, 64 connections" --rate 500 --connections 64 \
  --body "$(body true)" --header "x-mock-chunks: 10"
