#!/usr/bin/env bash
# Profiles sluice in configuration (4) of suite.sh (auth + quotas + budgets +
# SQLite ledger) under closed-loop non-stream load: `perf record` with DWARF
# call graphs on the sluice process only, then the top symbols by self time
# and by inclusive time, and per-request syscall counts from `perf stat`.
#
# Usage: load-tests/profile.sh [seconds=8] [config=full|off|bare] [connections=32]
# Env:   PROFILE_CHUNKS=N: streamed requests of N chunks plus a usage chunk
#        instead of non-stream ones. `bare` profiles bare pingora instead.
# Output: $OUT (default target/profile): perf.data, report-threads.txt,
#         report-self.txt, report-children.txt, syscalls.txt. A flamegraph:
#         perf script -i perf.data | inferno-collapse-perf | inferno-flamegraph > f.svg Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-8}
config=${2:-full}
conns=${3:-32}
chunks=${PROFILE_CHUNKS:-}
out=${OUT:-target/profile}
sluice_threads=${SLUICE_THREADS:-1}
mkdir -p "$out"
nice -n 10 cargo build --release -q -p sluice -p sluice-load-tests
bin="$PWD/target/release"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mock_port=$(free_port); port=$(free_port)
source load-tests/configs.sh
if [[ $config == full ]]; then
  { common; echo "ledger: {enabled: true}"; tenants; } >"$work/sluice.yaml"
else
  { common; echo "ledger: {enabled: false}"; } >"$work/sluice.yaml"
fi
"$bin/mock-upstream" --listen "127.0.0.1:$mock_port" >/dev/null 2>&1 &
pids+=($!)
if [[ $config == bare ]]; then
  "$bin/bare-pingora" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$mock_port" --threads "$sluice_threads" >"$work/sluice.log" 2>&1 &
else
  (cd "$work" && RUST_LOG=warn exec "$bin/sluice" serve --config "$work/sluice.yaml" --listen "127.0.0.1:$port" \
     --admin-listen "127.0.0.1:$(free_port)" >"$work/sluice.log" 2>&1) &
fi
sluice_pid=$!; pids+=($sluice_pid)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
body='{"model":"gpt-4o-mini","stream":false,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"max_tokens":32}'
stream_args=()
if [[ -n $chunks ]]; then
  body='{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"max_tokens":32}'
  stream_args=(--header "x-mock-chunks: $chunks")
fi
"$bin/loadgen" --no-progress --connections "$conns" --warmup-s 2 --duration-s $((seconds * 2 + 2)) --body "$body" \
  --header "authorization: Bearer sk-load-t1-k0" "${stream_args[@]}" --cpu-pid "sluice=$sluice_pid" \
  --json "$out/load.jsonl" --scenario "profile-$config" \
  --target "sluice=http://127.0.0.1:$port/v1/chat/completions" >"$out/load.md" &
load_pid=$!
sleep 3
perf record -F 1999 --call-graph dwarf,32768 -o "$out/perf.data" -p "$sluice_pid" -- sleep "$seconds" 2>"$out/perf-record.log"
perf stat -e 'syscalls:sys_enter_*' -p "$sluice_pid" -- sleep 2 2>"$out/syscalls-raw.txt" || \
  perf stat -e 'raw_syscalls:sys_enter' -p "$sluice_pid" -- sleep 2 2>"$out/syscalls-raw.txt" || true
wait "$load_pid"
# (head closes its pipe early: no pipefail for these summaries.)
set +o pipefail
grep -v ' 0 ' "$out/syscalls-raw.txt" | grep syscalls | sort -rn | head -25 >"$out/syscalls.txt"
perf report -i "$out/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep '%' >"$out/report-threads.txt"
perf report -i "$out/perf.data" --no-children --sort symbol --percent-limit 0.5 --stdio -g none 2>/dev/null | grep '%' >"$out/report-self.txt"
perf report -i "$out/perf.data" --children --sort symbol --percent-limit 0.4 --stdio -g none 2>/dev/null | grep '%' | grep -v 'inlined)' >"$out/report-children.txt"
cat "$out/load.md"
echo; echo "CPU by thread:"; cat "$out/report-threads.txt"
echo; echo "top self time:"; head -30 "$out/report-self.txt"
echo; echo "syscalls in 2 s:"; cat "$out/syscalls.txt"
