#!/usr/bin/env bash
# What the access log costs: sluice with every filter on (the suite's
# sluice-full config) twice, its access log on (RUST_LOG=info) and off
# (RUST_LOG=warn), beside bare pingora measured before and after, one run,
# one worker thread each, closed loop. Prints loadgen's table (req/s, CPU
# µs per request). Loopback only.
#
# Usage: load-tests/access_log.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
conns=${1:-32}
secs=${2:-4}
nice -n 10 cargo build --release -q -p sluice -p sluice-load-tests
bin="$root/target/release"
work=$(mktemp -d)
pids=()
source load-tests/lib.sh
trap stop_all EXIT
mock_port=$(free_port); bare_port=$(free_port); on_port=$(free_port); off_port=$(free_port)
sluice_threads=1
source load-tests/configs.sh
{ common; echo "ledger: {enabled: true}"; tenants; } >"$work/full.yaml"
"$bin/mock-upstream" --listen "127.0.0.1:$mock_port" --threads 1 >"$work/mock.log" 2>&1 &
pids+=($!)
"$bin/bare-pingora" --listen "127.0.0.1:$bare_port" --upstream "127.0.0.1:$mock_port" --threads 1 >"$work/bare.log" 2>&1 &
bare_pid=$!; pids+=($bare_pid)
start() { # name RUST_LOG port -> pid
  mkdir -p "$work/$1"
  (cd "$work/$1" && RUST_LOG=$2 exec "$bin/sluice" serve --config "$work/full.yaml" --listen "127.0.0.1:$3" \
     --admin-listen "127.0.0.1:$(free_port)" >"$work/$1.log" 2>&1) &
  echo $!
}
on_pid=$(start on info "$on_port"); pids+=($on_pid)
off_pid=$(start off warn "$off_port"); pids+=($off_pid)
for p in $mock_port $bare_port $on_port $off_port; do wait_port "$p"; done
body='{"model":"fast","messages":[{"role":"user","content":"Say hello"}]}'
url() { echo "http://127.0.0.1:$1/v1/chat/completions"; }
"$bin/loadgen" --body "$body" --header "authorization: Bearer sk-load-t0-k0" \
  --connections "$conns" --duration-s "$secs" --warmup-s 1 \
  --target "bare=$(url "$bare_port")" --target "access-log-on=$(url "$on_port")" \
  --target "access-log-off=$(url "$off_port")" --target "bare-again=$(url "$bare_port")" \
  --cpu-pid "bare=$bare_pid" --cpu-pid "access-log-on=$on_pid" \
  --cpu-pid "access-log-off=$off_pid" --cpu-pid "bare-again=$bare_pid"
echo "access-log lines written: $(grep -c 'sluice::access' "$work/on.log" || true)"
