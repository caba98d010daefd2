#!/usr/bin/env bash
# End-to-end test of the dynasparse tool on the tiny golden model: every subcommand runs,
# conversions produce files that load, and bad input exits 2 with one line on stderr.
# Usage: cli_test.sh DYNASPARSE_BINARY TEST_DATA_DIR [MPIRUN_COMMAND]
# With MPIRUN_COMMAND (e.g. "mpiexec --oversubscribe"), `run --plan` is also tried on 2 MPI ranks.
set -u
bin=$1
data=$2
mpirun=${3:-}
examples=$(cd "$(dirname "$0")/../../examples" && pwd)
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
# A converted file holds its INT8 values and blocks as they run: quantizing it again changes
# nothing, and it is smaller than the float file it came from.
"$bin" -q quantize "$work/q.safetensors" -o "$work/q2.safetensors" --layers all >/dev/null 2>&1
"$bin" run "$work/q2.safetensors" --tokens "$data/model/tokens.npy" -o "$work/q2.npy" >/dev/null 2>&1
cmp -s "$work/q.npy" "$work/q2.npy" && echo "ok   re-quantizing a quantized file is exact" \
  || { echo "FAIL re-quantized logits differ"; fails=$((fails + 1)); }
[ "$(wc -c <"$work/q.safetensors")" -lt "$(wc -c <"$work/s.safetensors")" ] && echo "ok   INT8 file is smaller" \
  || { echo "FAIL INT8 file is not smaller than the float sparse one"; fails=$((fails + 1)); }
printf 'The quick brown fox jumps over the lazy dog. %.0s' $(seq 1 20) >"$work/text.txt"
check eval 0 'bits per byte' -- "$bin" $x eval "$model" --text "$work/text.txt"
# Through an INT8 KV cache (compact scales): the same text within 1% of the float bits.
bits_f=$("$bin" $x -q eval "$model" --text "$work/text.txt" 2>/dev/null | awk '{print $2}')
bits_c=$("$bin" $x -q eval "$model" --text "$work/text.txt" --kv i8compact 2>/dev/null | awk '{print $2}')
# They must differ too (the cache's rounding shows in the fourth decimal), or --kv did nothing.
if awk -v f="$bits_f" -v c="$bits_c" 'BEGIN { d = c - f; if (d < 0) d = -d; exit !(f > 0 && d > 0 && d <= 0.01 * f) }'; then
  echo "ok   eval through an i8compact KV cache: $bits_c vs $bits_f bits per byte"
else
  echo "FAIL eval --kv i8compact: '$bits_c' vs '$bits_f' bits per byte"; fails=$((fails + 1))
fi
# --int8-head: the output head's INT8 rounding shows in the bits, within 1% of them, and
# its INT8 table adds to the weights.
bits_h=$("$bin" $x -q --int8-head eval "$model" --text "$work/text.txt" 2>/dev/null | awk '{print $2}')
if awk -v f="$bits_f" -v c="$bits_h" 'BEGIN { d = c - f; if (d < 0) d = -d; exit !(f > 0 && d > 0 && d <= 0.01 * f) }'; then
  echo "ok   eval with an INT8 head: $bits_h vs $bits_f bits per byte"
else
  echo "FAIL eval --int8-head: '$bits_h' vs '$bits_f' bits per byte"; fails=$((fails + 1))
fi
w_f=$("$bin" $x info "$model" | awk '/^weights:/ {print $2}')
w_h=$("$bin" $x --int8-head info "$model" | awk '/^weights:/ {print $2}')
awk -v f="$w_f" -v h="$w_h" 'BEGIN { exit !(h > f) }' && echo "ok   info --int8-head: $w_h MB vs $w_f MB" \
  || { echo "FAIL info --int8-head: '$w_h' vs '$w_f' MB"; fails=$((fails + 1)); }
check quantize-head 0 'INT8 output head' -- "$bin" $x quantize "$model" -o "$work/qh.safetensors" --layers all --head
check quantize-head-info 0 '"head_format":"dense_i8"' -- "$bin" $x info "$work/qh.safetensors"
check eval-kv-unknown 2 'kv' -- "$bin" $x eval "$model" --text "$work/text.txt" --kv f16
check bench-kv 0 '"kv": "i8"' -- "$bin" $x bench "$model" --prefill 8 --decode 4 --kv i8 --json
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
check bench-repeat 0 '"repeat": 3' -- "$bin" $x bench "$model" --prefill 8 --decode 4 --repeat 3 --json
check bench-repeat-zero 2 'repeat' -- "$bin" $x bench "$model" --repeat 0
# Parallel plans: plan a deployment, run it on threads, get one device's logits.
check plan 0 'chosen: tp=1 pp=1 dp=2' -- "$bin" $x plan "$model" --devices "$examples/plans/two_cores.json" \
  --batch 8 --prompt 16 --decode 16 -o "$work/plan.json"
check plan-candidates 0 'tp=1 pp=1 dp=2 (DP)' -- "$bin" $x plan "$model" --devices "$examples/plans/two_cores.json"
check plan-two-nodes 0 'devices: 16 on 2 node(s)' -- "$bin" $x plan "$model" --devices "$examples/plans/a100_2x8.json" \
  --objective latency
grep -q '"format": "dynasparse.plan"' "$work/plan.json" && grep -q '"candidates"' "$work/plan.json" \
  && echo "ok   plan file" || { echo "FAIL plan file"; fails=$((fails + 1)); }
printf '{"format": "dynasparse.plan", "version": 1, "tp": 1, "pp": 2, "dp": 1, "stage_first_layer": [0, 1, 2]}' >"$work/pp2.json"
printf '{"format": "dynasparse.plan", "version": 1, "tp": 2, "pp": 1, "dp": 1, "stage_first_layer": [0, 2]}' >"$work/tp2.json"
check run-plan 0 'tp=1 pp=2 dp=1 on 2 threads' -- "$bin" $x run "$model" --tokens "$data/model/tokens.npy" \
  -o "$work/pp2.npy" --plan "$work/pp2.json" --time 2
# Pipeline stages only move activations: the very bits of one device.
cmp -s "$work/logits.npy" "$work/pp2.npy" && echo "ok   pipeline plan matches one device" \
  || { echo "FAIL pipeline plan logits differ"; fails=$((fails + 1)); }
check run-chosen-plan 0 'on 2 threads' -- "$bin" $x run "$model" --tokens "$data/model/tokens.npy" -o "$work/dp.npy" \
  --plan "$work/plan.json"
# Bad plans and devices files: one clear line naming the file and field, exit 2.
printf '{"devices": [{"memory_bytes": 4e9, "flops": 1e10}], "links": {"intra_node": {"bandwidth": 1e10, "latency": 1e-6}}' \
  >"$work/truncated.json"
check devices-malformed 2 'malformed JSON in devices file' -- "$bin" $x plan "$model" --devices "$work/truncated.json"
printf '{"devices": [{"memory_bytes": -1, "flops": 1e10}], "links": {"intra_node": {"bandwidth": 1e10, "latency": 1e-6}}}' \
  >"$work/negative.json"
check devices-bad-field 2 "expected a number > 0, got -1 \[$work/negative.json: devices\[0\].memory_bytes\]" -- \
  "$bin" $x plan "$model" --devices "$work/negative.json"
printf '{"devices": [{"memory": 4e9, "flops": 1e10}], "links": {"intra_node": {"bandwidth": 1e10, "latency": 1e-6}}}' \
  >"$work/typo.json"
check devices-unknown-field 2 'unknown field; expected one of memory_bytes, flops, memory_bandwidth, count, node, comment, got "memory"' -- \
  "$bin" $x plan "$model" --devices "$work/typo.json"
printf '{"devices": [{"memory_bytes": 4e9, "flops": 1e10, "count": 2}], "devices_per_node": 1, "links": {"intra_node": {"bandwidth": 1e10, "latency": 1e-6}}}' \
  >"$work/nolink.json"
check devices-missing-link 2 'links.inter_node' -- "$bin" $x plan "$model" --devices "$work/nolink.json"
printf '{"devices": [{"memory_bytes": 1e3, "flops": 1e10, "count": 2}], "links": {"intra_node": {"bandwidth": 1e10, "latency": 1e-6}}}' \
  >"$work/tiny.json"
check devices-too-small 2 'no plan fits in memory' -- "$bin" $x plan "$model" --devices "$work/tiny.json"
printf '{"format": "dynasparse.plan", "version": 1, "tp": 1, "pp": 2, "dp": 1, "stage_first_layer": [0, 1, 3]}' >"$work/layers.json"
check plan-layer-mismatch 2 "plan does not match the model's layer count" -- "$bin" $x run "$model" \
  --tokens "$data/model/tokens.npy" -o "$work/x.npy" --plan "$work/layers.json"
printf '{"format": "dynasparse.plan", "version": 1, "tp": 3, "pp": 1, "dp": 1, "stage_first_layer": [0, 2]}' >"$work/tp3.json"
check plan-tp-heads 2 'tensor-parallel degree does not divide the head count' -- "$bin" $x run "$model" \
  --tokens "$data/model/tokens.npy" -o "$work/x.npy" --plan "$work/tp3.json"
printf '{"format": "dynasparse.plan", "version": 1, "tp": 0}' >"$work/zero.json"
check plan-bad-field 2 "\[$work/zero.json: tp\]" -- "$bin" $x run "$model" --tokens "$data/model/tokens.npy" \
  -o "$work/x.npy" --plan "$work/zero.json"
if [ -n "$mpirun" ]; then
  # The same plans on 2 MPI ranks: the bits of the threads; a plan for another world size
  # fails on every rank with exit 2, without waiting for the timeout.
  $mpirun -np 2 "$bin" $x run "$model" --tokens "$data/model/tokens.npy" -o "$work/tp2_mpi.npy" --plan "$work/tp2.json" \
    >"$work/out" 2>"$work/err"
  "$bin" $x run "$model" --tokens "$data/model/tokens.npy" -o "$work/tp2_thr.npy" --plan "$work/tp2.json" >/dev/null 2>&1
  if grep -q 'on 2 MPI ranks' "$work/out" && cmp -s "$work/tp2_mpi.npy" "$work/tp2_thr.npy"; then
    echo "ok   mpi run-plan matches threads"
  else
    echo "FAIL mpi run-plan"; cat "$work/out" "$work/err"; fails=$((fails + 1))
  fi
  $mpirun -np 2 "$bin" $x run "$model" --tokens "$data/model/tokens.npy" -o "$work/pp2_mpi.npy" --plan "$work/pp2.json" \
    >/dev/null 2>&1
  cmp -s "$work/logits.npy" "$work/pp2_mpi.npy" && echo "ok   mpi pipeline plan matches one device" \
    || { echo "FAIL mpi pipeline plan logits differ"; fails=$((fails + 1)); }
  start=$(date +%s)
  $mpirun -np 4 "$bin" $x run "$model" --tokens "$data/model/tokens.npy" -o "$work/x.npy" --plan "$work/tp2.json" \
    --timeout-ms 30000 >"$work/out" 2>"$work/err"
  rc=$?
  took=$(( $(date +%s) - start ))
  every=1
  for r in 0 1 2 3; do grep -q "rank $r of 4: dynasparse.parallel: plan does not match the world size" "$work/err" || every=0; done
  if [ "$rc" != 0 ] && [ "$every" = 1 ] && [ "$took" -lt 25 ]; then
    echo "ok   mpi world-size mismatch fails on every rank (exit $rc)"
  else
    echo "FAIL mpi world-size mismatch: exit $rc, every rank reported: $every, ${took}s"; cat "$work/err"; fails=$((fails + 1))
  fi
fi
# Bad input: one clear line, exit 2.
check missing-file 2 'cannot open file' -- "$bin" info "$work/nope.safetensors"
check extra-tensors 2 'tensor not used by the model' -- "$bin" info "$model"
# A classifier (rotary encoder, 5 classes): run writes class logits; text generation and
# bits per byte have no meaning for it and exit 2 with one line.
cls="$data/model/tiny_rotary_classifier.safetensors"
check classifier-run 0 'logits \[12, 5\]' -- "$bin" $x run "$cls" --tokens "$data/model/tokens.npy" -o "$work/cls.npy"
check classifier-generate 2 'classifier' -- "$bin" $x generate "$cls" -p "Hi" -n 2
check classifier-eval 2 'classifier' -- "$bin" $x eval "$cls" --text "$work/text.txt"
[ "$(wc -l <"$work/err")" -le 1 ] && echo "ok   classifier errors are one line" \
  || { echo "FAIL classifier error is not one line"; fails=$((fails + 1)); }
printf 'not a model' >"$work/junk.safetensors"
check junk-file 2 'dynasparse.io' -- "$bin" info "$work/junk.safetensors"
check bad-tokens 2 'dynasparse' -- "$bin" $x run "$model" --tokens "$model" -o "$work/x.npy"
check bad-option 2 'target' -- "$bin" $x sparsify "$model" -o "$work/y.safetensors" --target 3
check target-one 2 'target' -- "$bin" $x sparsify "$model" -o "$work/y.safetensors" --target 1
check block-trailing-text 2 'block shape' -- "$bin" $x sparsify "$model" -o "$work/y.safetensors" --block 16x4junk
# A context of one token: eval's windows overlap by one token, so it needs two (it used to
# loop for ever). The rotary model has no position table, so its file stays consistent.
if command -v python3 >/dev/null; then
  python3 - "$data/model/tiny_rotary.safetensors" "$work/ctx1.safetensors" <<'PY'
import json, struct, sys
blob = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
header = json.loads(blob[8:8 + n])
config = json.loads(header["__metadata__"]["dynasparse.config"])
config["max_seq_len"] = 1
header["__metadata__"]["dynasparse.config"] = json.dumps(config)
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + blob[8 + n:])
PY
  check eval-context-one 2 'context under 2' -- timeout 20 "$bin" $x eval "$work/ctx1.safetensors" --text "$work/text.txt"
fi
check no-subcommand 2 '' -- "$bin"
echo "$((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
