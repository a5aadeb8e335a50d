#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20) on its seed corpus
# (corpus/<target>/, committed; what the fuzzer finds goes to work/<target>/, not committed).
# Prints the executions per target and exits non-zero if any target found a crash (its input is
# saved under artifacts/<target>/; replay it with `cargo fuzz run <target> <file>`).
#
#   fuzz/run.sh 20                      # what .ci/run does
#   FUZZ_SANITIZER=none fuzz/run.sh 60  # without AddressSanitizer (faster, misses memory bugs)
set -euo pipefail
secs="${1:-20}"
cd "$(dirname "$0")"
# cargo-fuzz passes nightly-only flags (-Z sanitizer, -C passes=sancov); the stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=$(cargo fuzz list)
start=$(date +%s)
cargo fuzz build -O --sanitizer "$sanitizer"
echo "== fuzz targets built in $(($(date +%s) - start)) s (sanitizer: $sanitizer)"

failed=()
summary=()
for t in $targets; do
  mkdir -p "work/$t" "artifacts/$t"
  echo "== fuzzing $t for $secs s"
  log="work/$t.log"
  if cargo fuzz run -O --sanitizer "$sanitizer" "$t" "work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$t")
    tail -n 40 "$log"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1 || true)
  summary+=("$(printf '%-20s %-6s %12s executions' "$t" "$status" "${execs:-?}")")
done

echo "== fuzzing summary ($secs s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
