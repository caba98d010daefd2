#!/usr/bin/env bash
# End-to-end test of the dynasparse tool on the tiny golden model: every subcommand runs,
# conversions produce files that load, and bad input exits 2 with one line on stderr.
# Usage: cli_test.sh DYNASPARSE_BINARY TEST_DATA_DIR
set -u
bin=$1
data=$2
model=$data/model/tiny_head_gate.safetensors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
check() {  # check NAME EXPECTED_RC GREP_PATTERN -- command...
  local name=$1 want=$2 pattern=$3
  shift 4
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ "$rc" != "$want" ]; then
    echo "FAIL $name: exit $rc, expected $want"; cat "$work/out" "$work/err"; fails=$((fails + 1)); return
  fi
  if [ -n "$pattern" ] && ! grep -q -- "$pattern" "$work/out" "$work/err"; then
    echo "FAIL $name: output lacks '$pattern'"; cat "$work/out" "$work/err"; fails=$((fails + 1)); return
  fi
  if [ "$want" = 2 ] && [ "$(wc -l <"$work/err")" != 1 ]; then
    echo "FAIL $name: expected exactly one line on stderr"; cat "$work/err"; fails=$((fails + 1)); return
  fi
  echo "ok   $name"
}
x="--allow-extra-tensors"
check info 0 '"hidden":32' -- "$bin" $x info "$model"
check run 0 'logits \[12, 256\]' -- "$bin" $x run "$model" --tokens "$data/model/tokens.npy" -o "$work/logits.npy"
size=$(wc -c <"$work/logits.npy")
[ "$size" -gt $((12 * 256 * 4)) ] || { echo "FAIL run: logits file has $size bytes"; fails=$((fails + 1)); }
"$bin" $x -q generate "$model" -p "Hello" -n 8 --temperature 0.9 --seed 7 >"$work/g1" 2>/dev/null
"$bin" $x -q generate "$model" -p "Hello" -n 8 --temperature 0.9 --seed 7 >"$work/g2" 2>/dev/null
if cmp -s "$work/g1" "$work/g2"; then echo "ok   generate is deterministic"; else echo "FAIL generate differs"; fails=$((fails + 1)); fi
check generate-timing 0 'tokens/s' -- "$bin" $x generate "$model" -p "Hi" -n 4
check sparsify 0 'pruned to 70%' -- "$bin" $x sparsify "$model" -o "$work/s.safetensors" --target 0.7
check sparse-info 0 'gsparse_f32' -- "$bin" $x info "$work/s.safetensors"
check quantize 0 'INT8' -- "$bin" $x quantize "$work/s.safetensors" -o "$work/q.safetensors" --layers all
check quant-info 0 'gsparse_i8' -- "$bin" $x info "$work/q.safetensors"
check quant-runs 0 'logits' -- "$bin" $x run "$work/q.safetensors" --tokens "$data/model/tokens.npy" -o "$work/q.npy"
printf 'The quick brown fox jumps over the lazy dog. %.0s' $(seq 1 20) >"$work/text.txt"
check eval 0 'bits per byte' -- "$bin" $x eval "$model" --text "$work/text.txt"
check quantize-calibrated 0 'static activations: mse observer, 20 samples' -- "$bin" $x -q quantize "$model" \
  -o "$work/cq.safetensors" --layers all --calibrate "$work/text.txt" --observer mse --samples 20 --sample-bytes 12
check calibrated-info 0 'input_alpha .* (static)' -- "$bin" $x info "$work/cq.safetensors"
check calibrated-runs 0 'logits' -- "$bin" $x run "$work/cq.safetensors" --tokens "$data/model/tokens.npy" -o "$work/cq.npy"
"$bin" $x -q quantize "$model" -o "$work/dq.safetensors" --layers all >/dev/null 2>&1
"$bin" $x run "$work/dq.safetensors" --tokens "$data/model/tokens.npy" -o "$work/dq.npy" >/dev/null 2>&1
if [ ! -s "$work/dq.npy" ] || cmp -s "$work/cq.npy" "$work/dq.npy"; then echo "FAIL calibrated logits equal dynamic ones"; fails=$((fails + 1)); else echo "ok   calibrated logits differ from dynamic"; fi
check calibrate-too-long 2 'sequence longer' -- "$bin" $x -q quantize "$model" -o "$work/cq2.safetensors" \
  --calibrate "$work/text.txt" --sample-bytes 100
check bench 0 '"decode_ms_per_token"' -- "$bin" $x bench "$model" --prefill 8 --decode 4 --json
# Bad input: one clear line, exit 2.
check missing-file 2 'cannot open file' -- "$bin" info "$work/nope.safetensors"
check extra-tensors 2 'tensor not used by the model' -- "$bin" info "$model"
printf 'not a model' >"$work/junk.safetensors"
check junk-file 2 'dynasparse.io' -- "$bin" info "$work/junk.safetensors"
check bad-tokens 2 'dynasparse' -- "$bin" $x run "$model" --tokens "$model" -o "$work/x.npy"
check bad-option 2 'target' -- "$bin" $x sparsify "$model" -o "$work/y.safetensors" --target 3
check no-subcommand 2 '' -- "$bin"
echo "$((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
