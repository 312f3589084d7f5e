#!/usr/bin/env bash
# Edge efficiency with an independent load generator: `wrk` (one thread,
# closed loop) against bare pingora and sluice with every filter on (the
# suite's sluice-full config: auth, quotas, budgets, SQLite ledger), one
# worker thread each, the same mock upstream, in one run. Three scenarios:
# non-stream at 32 and at 256 connections, and streams of 10 chunks plus a
# usage chunk at 64 connections. Each pass runs every scenario through every
# target, the order of targets alternating between passes; the table gives
# each pass's req/s and the CPU time per request of the proxy process (all
# its threads, from /proc), then the median ratio sluice / bare.
#
# Usage: load-tests/edge.sh [passes=3] [seconds=5]
# Env:   EDGE_TARGETS="bare sluice-full" (add sluice-off: every filter off),
#        SLUICE_BASELINE_BIN=/path/to/older/sluice (adds sluice-full-base:
#        the same config through that binary, a before/after in one run),
#        EDGE_OUT=file (also write the markdown section there),
#        EDGE_SYSCALLS=1 (print each proxy's syscalls per request, perf stat
#        for 2 s in the middle of each run; needs perf).
# Needs wrk (apt install wrk). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
passes=${1:-3}
secs=${2:-5}
targets=(${EDGE_TARGETS:-bare sluice-full})
[[ -n ${SLUICE_BASELINE_BIN:-} ]] && targets+=(sluice-full-base)
command -v wrk >/dev/null || { echo "edge.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
${NICE_BUILD:-nice -n 10} cargo build --release -q -p sluice -p sluice-load-tests
bin="$root/target/release"
work=$(mktemp -d)
pids=()
source load-tests/lib.sh
trap stop_all EXIT
ulimit -n "$(ulimit -Hn)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

mock_port=$(free_port)
sluice_threads=1
source load-tests/configs.sh
{ common; echo "ledger: {enabled: true}"; tenants; } >"$work/full.yaml"
{ common; echo "ledger: {enabled: false}"; } >"$work/off.yaml"
"$bin/mock-upstream" --listen "127.0.0.1:$mock_port" --threads 1 >"$work/mock.log" 2>&1 &
pids+=($!)
declare -A port pid
start_sluice() { # name config binary
  port[$1]=$(free_port)
  mkdir -p "$work/$1"
  (cd "$work/$1" && RUST_LOG=warn exec "$3" serve --config "$work/$2" --listen "127.0.0.1:${port[$1]}" \
     --admin-listen "127.0.0.1:$(free_port)" >"$work/$1.log" 2>&1) &
  pid[$1]=$!; pids+=($!)
}
for t in "${targets[@]}"; do
  case $t in
    bare)
      port[bare]=$(free_port)
      "$bin/bare-pingora" --listen "127.0.0.1:${port[bare]}" --upstream "127.0.0.1:$mock_port" --threads 1 >"$work/bare.log" 2>&1 &
      pid[bare]=$!; pids+=($!) ;;
    sluice-full) start_sluice sluice-full full.yaml "$bin/sluice" ;;
    sluice-off) start_sluice sluice-off off.yaml "$bin/sluice" ;;
    sluice-full-base) start_sluice sluice-full-base full.yaml "$SLUICE_BASELINE_BIN" ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
wait_port "$mock_port"
for t in "${targets[@]}"; do wait_port "${port[$t]}"; done
sleep 1

hz=$(getconf CLK_TCK)
body() { printf '{"model":"gpt-4o-mini","stream":%s,%s"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"max_tokens":32}' "$1" "$2"; }
nonstream=$(body false "")
stream=$(body true '"stream_options":{"include_usage":true},')
scenarios=("nonstream-c32 32 nonstream" "nonstream-c256 256 nonstream" "stream10-c64 64 stream")
results="$work/results.tsv"
: >"$results"
one() { # scenario conns kind target pass
  local url="http://127.0.0.1:${port[$4]}/v1/chat/completions" b chunks=""
  if [[ $3 == stream ]]; then b=$stream; chunks=10; else b=$nonstream; fi
  # a short warm-up on the same connections count, not measured
  WRK_BODY=$b WRK_KEY=sk-load-t0-k0 WRK_CHUNKS=$chunks wrk -t1 -c"$2" -d1s -s load-tests/wrk/post.lua "$url" >/dev/null
  local before after out
  before=$(cpu_ticks "${pid[$4]}")
  WRK_BODY=$b WRK_KEY=sk-load-t0-k0 WRK_CHUNKS=$chunks wrk -t1 -c"$2" -d"${secs}s" --latency -s load-tests/wrk/post.lua "$url" >"$work/wrk.out" &
  local wrk_pid=$!
  if [[ -n ${EDGE_SYSCALLS:-} ]]; then
    # syscalls of the proxy for 2 s in the middle of the run, per request at the run's rate
    sleep 1
    perf stat -e 'syscalls:sys_enter_*' -p "${pid[$4]}" -- sleep 2 2>"$work/syscalls.txt" || true
  fi
  wait "$wrk_pid"
  out=$(cat "$work/wrk.out")
  after=$(cpu_ticks "${pid[$4]}")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    echo "$4 $1: errors under load:" >&2; echo "$out" >&2; exit 1
  fi
  local n rps p50
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  local cpu_us
  cpu_us=$(python3 -c "print(round(($after - $before) / $hz * 1e6 / $n, 1))")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$4" "$5" "$rps" "$cpu_us" "$p50" >>"$results"
  printf '  %-15s %-17s pass %s: %10s req/s  %7s µs CPU/req  p50 %s\n' "$1" "$4" "$5" "$rps" "$cpu_us" "$p50" >&2
  if [[ -n ${EDGE_SYSCALLS:-} ]]; then
    awk -v r="$rps" '/syscalls:sys_enter_/ {gsub(",", "", $1); if ($1 > 0) printf "      %-36s %6.2f per request\n", $2, $1 / (r * 2)}' \
      "$work/syscalls.txt" | sort -k2 -rn | head -6 >&2
  fi
}
for pass in $(seq "$passes"); do
  order=("${targets[@]}")
  (( pass % 2 == 0 )) && order=($(printf '%s\n' "${targets[@]}" | tac))
  for s in "${scenarios[@]}"; do
    read -r name conns kind <<<"$s"
    for t in "${order[@]}"; do one "$name" "$conns" "$kind" "$t" "$pass"; done
  done
done

machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+dirty')"
section=$(python3 - "$results" "$passes" "$secs" "$machine" "$commit" "${targets[@]}" <<'PY'
import sys, statistics as st
path, passes, secs, machine, commit, *targets = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path)]
scen = []
for r in rows:
    if r[0] not in scen: scen.append(r[0])
print(f"### edge.sh (wrk, one thread, closed loop): commit {commit}, {passes} passes x {secs} s\n")
print(f"Machine: {machine}. One worker thread per proxy, the same mock upstream.\n")
head = "| scenario | " + " | ".join(f"{t} req/s" for t in targets) + " | " + " | ".join(f"{t} / bare" for t in targets if t != "bare") + " | CPU µs/req " + " → ".join(targets) + " |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
for s in scen:
    per = {t: [r for r in rows if r[0] == s and r[1] == t] for t in targets}
    med = lambda t, i: st.median(float(r[i]) for r in per[t])
    def ratio(t):
        rs = sorted(float(a[3]) / float(b[3]) for a, b in zip(per[t], per["bare"]))
        return f"**{st.median(rs):.2f}** ({rs[0]:.2f}–{rs[-1]:.2f})"
    cells = [f"{med(t, 3):,.0f}" for t in targets]
    ratios = [ratio(t) for t in targets if t != "bare"]
    cpu = " → ".join(f"{med(t, 4):.1f}" for t in targets)
    print(f"| {s} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {cpu} |")
print("\nMedians over the passes; a ratio is the median of each pass's sluice / bare (range in brackets). CPU µs per request counts every thread of the proxy process.")
PY
)
echo
echo "$section"
[[ -z ${EDGE_OUT:-} ]] || echo "$section" >"$EDGE_OUT"
