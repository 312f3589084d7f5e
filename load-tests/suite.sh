#!/usr/bin/env bash
# The full load-test suite: five configurations driven by the same load
# generator in one run, every scenario of issue 8, results appended to
# load-tests/RESULTS.md and drawn in load-tests/plots/.
#
# Configurations (all on loopback, each server with one worker thread):
#   direct        (1) the mock upstream itself
#   bare          (2) a bare pingora pass-through proxy (src/bin/bare-pingora.rs)
#   sluice-off    (3) sluice with auth, quotas, budgets and the ledger off
#   sluice-full   (4) sluice with auth + quotas + budgets + SQLite ledger on
#   sluice-redis  (5) as (4), with limits and budgets held in Redis
# Every table prints throughput ratios to `bare` ((3)/(2), (4)/(2), (5)/(2))
# and latency added over `direct`.
#
# Scenarios: closed loop non-stream at 32 and 256 connections, and h2c at 64
# streams; open loop non-stream at 50% of (4)'s max (plus 25/75/90% for the
# latency-vs-load plot); open-loop streams of 10 and 100 chunks (added time
# to first token); a mixed multi-tenant workload; 10,000 streams held open
# through (4), reading its RSS; then `wrk` (edge.sh) beside loadgen for the
# non-stream 32/256-connection and 10-chunk stream cases, bare vs (4).
#
# Usage: load-tests/suite.sh [quick]     quick: short runs, for a smoke test
# Env:   SLUICE_THREADS (1), MOCK_THREADS (1), LOADGEN_THREADS (1),
#        HOLD_STREAMS (10000), NO_RESULTS=1 (do not append to RESULTS.md),
#        NO_PLOTS=1, KEEP_WORK=1 (keep the temp dir with configs and logs),
#        NO_WRK=1 (skip the wrk section).
# Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=${1:-full}
if [[ $mode == quick ]]; then
  warmup=0.5 dur=1.5 hold_s=2
else
  warmup=1 dur=4 hold_s=5
fi
sluice_threads=${SLUICE_THREADS:-1}
mock_threads=${MOCK_THREADS:-1}
loadgen_threads=${LOADGEN_THREADS:-1}
hold_streams=${HOLD_STREAMS:-10000}

nice_build=${NICE_BUILD:-nice -n 10}
$nice_build cargo build --release -q -p sluice -p sluice-load-tests
bin="$root/target/release"

work=$(mktemp -d)
pids=()
cleanup() {
  # SIGINT: the fast shutdown (SIGTERM would wait out graceful periods);
  # whatever still runs 5 s later is killed.
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${KEEP_WORK:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

source load-tests/lib.sh
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

mock_port=$(free_port); bare_port=$(free_port); off_port=$(free_port)
full_port=$(free_port); redis_sluice_port=$(free_port); redis_port=$(free_port)

# --- configurations -------------------------------------------------------
source load-tests/configs.sh
{ common; echo "ledger: {enabled: false}"; } >"$work/off.yaml"
{ common; echo "ledger: {enabled: true}"; tenants; } >"$work/full.yaml"
{ common; echo "ledger: {enabled: true}"; tenants
  echo "quotas: {redis_url: \"redis://127.0.0.1:$redis_port/0\", on_redis_error: fail_closed}"; } >"$work/redis.yaml"
for c in off full redis; do "$bin/sluice" check-config "$work/$c.yaml" >/dev/null; done

# --- servers --------------------------------------------------------------
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
"$bin/mock-upstream" --listen "127.0.0.1:$mock_port" --threads "$mock_threads" >"$work/mock.log" 2>&1 &
mock_pid=$!; pids+=($mock_pid)
"$bin/bare-pingora" --listen "127.0.0.1:$bare_port" --upstream "127.0.0.1:$mock_port" --threads "$sluice_threads" >"$work/bare.log" 2>&1 &
bare_pid=$!; pids+=($bare_pid)
start_sluice() { # name config port -> pid; each in its own dir (ledger data)
  mkdir -p "$work/$1"
  # each its own admin port (the default, 127.0.0.1:9090, would be shared)
  (cd "$work/$1" && RUST_LOG=warn exec "$bin/sluice" serve --config "$work/$2" --listen "127.0.0.1:$3" \
     --admin-listen "127.0.0.1:$(free_port)" >"$work/$1.log" 2>&1) &
  echo $!
}
wait_port "$redis_port"
off_pid=$(start_sluice off off.yaml "$off_port"); pids+=($off_pid)
# SLUICE_BASELINE_BIN=/path/to/an/older/sluice adds configuration (4) run by
# that binary ("sluice-full-base") beside the current one: a before/after
# comparison in one run, on the same machine state.
if [[ -n ${SLUICE_BASELINE_BIN:-} ]]; then
  base_port=$(free_port)
  mkdir -p "$work/base"
  (cd "$work/base" && RUST_LOG=warn exec "$SLUICE_BASELINE_BIN" serve --config "$work/full.yaml" --listen "127.0.0.1:$base_port" \
     --admin-listen "127.0.0.1:$(free_port)" >"$work/base.log" 2>&1) &
  base_pid=$!; pids+=($base_pid)
fi
full_pid=$(start_sluice full full.yaml "$full_port"); pids+=($full_pid)
redis_pid=$(start_sluice redis redis.yaml "$redis_sluice_port"); pids+=($redis_pid)
for p in $mock_port $bare_port $off_port $full_port $redis_sluice_port ${base_port:-}; do wait_port "$p"; done
sleep 1
idle_rss="bare $(rss_mib "$bare_pid") MiB, sluice-off $(rss_mib "$off_pid") MiB, sluice-full $(rss_mib "$full_pid") MiB, sluice-redis $(rss_mib "$redis_pid") MiB"

path=/v1/chat/completions
direct="direct=http://127.0.0.1:$mock_port$path"
bare="bare=http://127.0.0.1:$bare_port$path"
off="sluice-off=http://127.0.0.1:$off_port$path"
full="sluice-full=http://127.0.0.1:$full_port$path"
redis="sluice-redis=http://127.0.0.1:$redis_sluice_port$path"
all=(--target "$direct" --target "$bare" --target "$off" --target "$full" --target "$redis")
cpu=(--cpu-pid "direct=$mock_pid" --cpu-pid "bare=$bare_pid" --cpu-pid "sluice-off=$off_pid"
     --cpu-pid "sluice-full=$full_pid" --cpu-pid "sluice-redis=$redis_pid")
if [[ -n ${base_port:-} ]]; then
  all+=(--target "sluice-full-base=http://127.0.0.1:$base_port$path")
  cpu+=(--cpu-pid "sluice-full-base=$base_pid")
fi

results="$work/results.jsonl"
report="$work/report.md"
body() { # stream max_tokens
  printf '{"model":"gpt-4o-mini","stream":%s,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"max_tokens":%s}' "$1" "$2"
}
auth=(--header "authorization: Bearer sk-load-t1-k0")

run() { # scenario title, then loadgen arguments
  local scenario=$1 title=$2; shift 2
  { echo; echo "### $title"; echo; echo "\`loadgen $scenario\`: $*" | sed "s#$work#\$WORK#g; s#http://127.0.0.1:[0-9]*##g" | cut -c1-400; echo; } >>"$report"
  echo ">>> $title" >&2
  "$bin/loadgen" --threads "$loadgen_threads" --warmup-s "$warmup" --duration-s "$dur" \
    --ratio-to bare --added-over direct --settle --json "$results" --scenario "$scenario" \
    "${cpu[@]}" "$@" | tee -a "$report"
}
field() { # scenario target jq-expression
  jq -r --arg s "$1" --arg t "$2" "select(.scenario==\$s and .target==\$t) | $3" "$results" | tail -1
}

# --- scenarios ------------------------------------------------------------
run nonstream-c32 "Non-stream, closed loop, HTTP/1.1, 32 connections" \
  --connections 32 --body "$(body false 32)" "${auth[@]}" "${all[@]}"
run nonstream-c256 "Non-stream, closed loop, HTTP/1.1, 256 connections" \
  --connections 256 --body "$(body false 32)" "${auth[@]}" "${all[@]}"
run h2-c64 "Non-stream, closed loop, h2c, 64 streams over 4 connections" \
  --h2 --h2-connections 4 --connections 64 --body "$(body false 32)" "${auth[@]}" "${all[@]}"

max4=$(field nonstream-c32 sluice-full .rps)
half=$(python3 -c "print(round($max4 * 0.5))")
run open-50 "Open loop at 50% of sluice-full's max ($half req/s), 64 connections" \
  --rate "$half" --connections 64 --body "$(body false 32)" "${auth[@]}" "${all[@]}"
for pct in 25 75 90; do
  rate=$(python3 -c "print(round($max4 * $pct / 100))")
  run "open-$pct" "Open loop at $pct% of sluice-full's max ($rate req/s), 64 connections" \
    --rate "$rate" --connections 64 --body "$(body false 32)" "${auth[@]}" \
    --target "$direct" --target "$bare" --target "$off" --target "$full"
done

# Streams: open loop at a modest rate, so time to first token is overhead,
# not queueing. TTFT = first SSE event with non-empty content.
run stream-10 "Stream, 10 chunks, open loop 1000 req/s, 64 connections" \
  --rate 1000 --connections 64 --body "$(body true 32)" --header "x-mock-chunks: 10" "${auth[@]}" "${all[@]}"
run stream-100 "Stream, 100 chunks, open loop 200 req/s, 64 connections" \
  --rate 200 --connections 64 --body "$(body true 128)" --header "x-mock-chunks: 100" "${auth[@]}" "${all[@]}"

# Mixed multi-tenant: 8 keys in 4 tenants, three model names (one an alias),
# one request in four streamed, one in eight with a large prompt.
mix="$work/mix.jsonl"
: >"$mix"
big=$(python3 -c "print('lorem ipsum dolor sit amet ' * 300)")
for t in 0 1 2 3; do
  for k in 0 1; do
    model=$([[ $k == 0 ]] && echo gpt-4o-mini || echo fast)
    h="{\"authorization\":\"Bearer sk-load-t$t-k$k\"}"
    echo "{\"weight\":4,\"headers\":$h,\"body\":{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi from t$t\"}],\"max_tokens\":64}}" >>"$mix"
    echo "{\"weight\":2,\"headers\":$h,\"body\":{\"model\":\"gpt-4o\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{\"role\":\"user\",\"content\":\"stream t$t\"}],\"max_tokens\":64}}" >>"$mix"
    echo "{\"weight\":1,\"headers\":$h,\"body\":{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"$big\"}],\"max_tokens\":256}}" >>"$mix"
  done
done
run mixed "Mixed multi-tenant workload, closed loop, 64 connections" \
  --connections 64 --mix "$mix" "${all[@]}"

# Held streams: h2c downstream (the file limit, $(ulimit -Hn) here, does not
# allow 10,000 HTTP/1.1 connections on both sides of a proxy), one upstream
# HTTP/1.1 connection per stream, a chunk every 2 s; opened at 2,000 a
# second. Through bare pingora first: the framework's own cost per stream.
hold() { # name target pid
  echo ">>> $hold_streams held streams through $1" >&2
  { echo; echo "### $hold_streams streams held open through $1 (h2c, 100 per connection; a chunk every 2 s)"; echo; } >>"$report"
  "$bin/loadgen" --hold-streams "$hold_streams" --hold-s "$hold_s" --h2 --rss-pid "$3" \
    --json "$results" --scenario hold-streams --body "$(body true 32)" "${auth[@]}" \
    --header "x-mock-chunks: 1000" --header "x-mock-chunk-delay-ms: 2000" \
    --target "$2" | tee -a "$report"
}
hold bare "$bare" "$bare_pid"
hold sluice-full "$full" "$full_pid"

# --- wrk: the same three throughput scenarios from an independent generator
# (edge.sh: bare pingora and sluice-full, 3 interleaved passes, closed loop,
# its own servers, so the numbers do not depend on loadgen). Skipped with
# NO_WRK=1 or when wrk is not installed.
if [[ -z ${NO_WRK:-} ]] && command -v wrk >/dev/null; then
  echo ">>> wrk: edge.sh" >&2
  wrk_passes=3 wrk_secs=5
  [[ $mode == quick ]] && wrk_passes=1 wrk_secs=2
  EDGE_OUT="$work/edge.md" NICE_BUILD=: load-tests/edge.sh "$wrk_passes" "$wrk_secs" >/dev/null
  { echo; cat "$work/edge.md"; } >>"$report"
fi

# --- summary --------------------------------------------------------------
summary=$(jq -rs '
  def r(s; t): (map(select(.scenario==s and .target==t)) | last);
  def f(x): (x * 100 | round) / 100;
  def ms(x): (x * 1000 | round) / 1000;
  [
    "- throughput (3)/(2), (4)/(2), (5)/(2), non-stream c32: \(f(r("nonstream-c32";"sluice-off").rps / r("nonstream-c32";"bare").rps)), \(f(r("nonstream-c32";"sluice-full").rps / r("nonstream-c32";"bare").rps)), \(f(r("nonstream-c32";"sluice-redis").rps / r("nonstream-c32";"bare").rps)) (target for (4): >= 0.9)",
    "- throughput (3)/(2), (4)/(2), (5)/(2), non-stream c256: \(f(r("nonstream-c256";"sluice-off").rps / r("nonstream-c256";"bare").rps)), \(f(r("nonstream-c256";"sluice-full").rps / r("nonstream-c256";"bare").rps)), \(f(r("nonstream-c256";"sluice-redis").rps / r("nonstream-c256";"bare").rps))",
    "- open loop at 50%: sluice-full added p50 \(ms(r("open-50";"sluice-full").latency_ms.p50 - r("open-50";"direct").latency_ms.p50)) ms, p99 \(ms(r("open-50";"sluice-full").latency_ms.p99 - r("open-50";"direct").latency_ms.p99)) ms over direct (target p99 <= 0.2 ms); bare added p99 \(ms(r("open-50";"bare").latency_ms.p99 - r("open-50";"direct").latency_ms.p99)) ms",
    "- stream added TTFT p50 / p99 over direct, sluice-full: 10 chunks \(ms(r("stream-10";"sluice-full").ttft_ms.p50 - r("stream-10";"direct").ttft_ms.p50)) / \(ms(r("stream-10";"sluice-full").ttft_ms.p99 - r("stream-10";"direct").ttft_ms.p99)) ms, 100 chunks \(ms(r("stream-100";"sluice-full").ttft_ms.p50 - r("stream-100";"direct").ttft_ms.p50)) / \(ms(r("stream-100";"sluice-full").ttft_ms.p99 - r("stream-100";"direct").ttft_ms.p99)) ms (target <= 0.2 ms)",
    "- held streams: \(r("hold-streams";"sluice-full").open) of \(r("hold-streams";"sluice-full").requested) open; sluice-full RSS \((r("hold-streams";"sluice-full").rss_before_kib / 1024 | round)) MiB before, \((r("hold-streams";"sluice-full").rss_during_kib / 1024 | round)) MiB during: \(r("hold-streams";"sluice-full").kib_per_stream | round) KiB per stream (target <= 16 KB); bare pingora \(r("hold-streams";"bare").kib_per_stream | round) KiB per stream (\(r("hold-streams";"bare").open) open)"
  ] + (if any(.[]; .target == "sluice-full-base") then [
    "- before/after, configuration (4): CPU µs per request now / baseline binary: non-stream c32 \(f(r("nonstream-c32";"sluice-full").cpu_us_per_req)) / \(f(r("nonstream-c32";"sluice-full-base").cpu_us_per_req)), c256 \(f(r("nonstream-c256";"sluice-full").cpu_us_per_req)) / \(f(r("nonstream-c256";"sluice-full-base").cpu_us_per_req)), stream-10 \(f(r("stream-10";"sluice-full").cpu_us_per_req)) / \(f(r("stream-10";"sluice-full-base").cpu_us_per_req)); req/s c32 \(f(r("nonstream-c32";"sluice-full").rps)) / \(f(r("nonstream-c32";"sluice-full-base").rps))"
  ] else [] end) | .[]' "$results")

machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+dirty')"
{
  echo
  echo "## $(date -u +%Y-%m-%d) — suite.sh $mode (commit $commit)"
  echo
  echo "Machine: $machine. Load generator, mock, bare pingora, three sluices and"
  echo "redis-server all share it; servers have $sluice_threads worker thread(s), the mock"
  echo "$mock_threads, the generator $loadgen_threads. Command: \`load-tests/suite.sh $mode\`"
  echo "(warm-up ${warmup} s, ${dur} s measured per target). Idle RSS after start: $idle_rss."
  echo
  echo "$summary"
  cat "$report"
} >"$work/section.md"
cat "$work/section.md"
mkdir -p load-tests/results
cp "$results" "load-tests/results/$(date -u +%Y%m%dT%H%M%SZ)-$mode.jsonl"
cp "$results" load-tests/results/latest.jsonl
[[ -n ${NO_RESULTS:-} ]] || cat "$work/section.md" >>load-tests/RESULTS.md
[[ -n ${NO_PLOTS:-} ]] || "$bin/plot" --input "$results" --out-dir load-tests/plots
