#!/usr/bin/env bash
# Runs every fuzz target for $FUZZ_SECONDS (default 20) from its committed
# corpus; fails on the first crash. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked -q
export RUSTC_BOOTSTRAP=1
for target in request_fields responses eventstream config; do
  # Findings go to a scratch copy: the committed corpus stays the seeds.
  work=$(mktemp -d)
  cp corpus/"$target"/* "$work"/
  echo "fuzz: $target for ${seconds}s"
  set +e
  cargo fuzz run "$target" --sanitizer none "$work" -- -max_total_time="$seconds" -print_final_stats=1 >"$work.log" 2>&1
  status=$?
  set -e
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added)" "$work.log" || true
  if [ "$status" -ne 0 ]; then tail -n 40 "$work.log"; fi
  rm -rf "$work" "$work.log"
  if [ "$status" -ne 0 ]; then echo "fuzz: $target failed"; exit "$status"; fi
done
