#!/usr/bin/env bash
# Builds the libFuzzer targets (Clang, ASan + UBSan) and runs each for a bounded time on a
# seed corpus of valid files. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] (default 60).
# Exits non-zero on any finding; prints the executions each target ran and the total.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
scripts/install-deps.sh build fuzz
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc 2>/dev/null || echo 2)" \
  --target dynasparse_fuzz_safetensors dynasparse_fuzz_npy dynasparse_fuzz_config dynasparse_fuzz_model \
  dynasparse_make_corpus
work=build/fuzz/corpus
rm -rf "$work"
mkdir -p "$work/safetensors" "$work/npy" "$work/model" "$work/config" build/fuzz/findings
build/fuzz/tests/fuzz/dynasparse_make_corpus "$work" tests/data
jobs=$(nproc 2>/dev/null || echo 2)
# One fuzzer per core at a time: each runs single-threaded for its time budget.
fuzz_one() {
  local reader=$1
  build/fuzz/tests/fuzz/dynasparse_fuzz_${reader} -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix=build/fuzz/findings/${reader}- -max_len=$([ "$reader" = model ] && echo 200000 || echo 4096) \
    -rss_limit_mb=4096 "$work/$reader" >"build/fuzz/${reader}.log" 2>&1
}
readers=(safetensors npy config model)
failed=""
for ((i = 0; i < ${#readers[@]}; i += jobs)); do
  pids=()
  for reader in "${readers[@]:i:jobs}"; do
    fuzz_one "$reader" &
    pids+=("$!:$reader")
  done
  for entry in "${pids[@]}"; do
    wait "${entry%%:*}" || failed="$failed ${entry#*:}"
  done
done
total=0
for reader in "${readers[@]}"; do
  log=build/fuzz/${reader}.log
  if [[ " $failed " == *" $reader "* ]]; then
    tail -40 "$log"
    echo "fuzz.sh: ${reader} fuzzer found a failure; reproducer in build/fuzz/findings/" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  echo "fuzz.sh: ${reader}: ${runs} executions in ${seconds} s, no finding"
  total=$((total + runs))
done
echo "fuzz.sh: ${total} executions in total, no finding"
