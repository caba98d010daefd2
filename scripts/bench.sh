#!/usr/bin/env bash
# Regenerates README's performance section and bench/plots/ from dynasparse_bench runs.
# Usage: scripts/bench.sh [--quick]   (--quick: shorter minimum time per benchmark)
# Takes 10-15 minutes on 2 cores; run it on an otherwise idle machine (it warns when the load
# average is above 1). The JSON (build/bench.json) records the machine: CPU model, cores,
# MHz, caches, load average and the dynasparse build; README's tables start with that line.
set -euo pipefail
cd "$(dirname "$0")/.."
min_time=0.3
[ "${1:-}" = "--quick" ] && min_time=0.1
scripts/install-deps.sh build
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc 2>/dev/null || echo 2)" --target dynasparse_bench
cpu_model=$( (grep -m1 'model name' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.brand_string 2>/dev/null || echo unknown) \
  | sed 's/^model name[[:space:]]*:[[:space:]]*//; s/[,=]/ /g')
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
echo "bench.sh: running on ${cpu_model}, $(nproc 2>/dev/null || echo '?') CPUs, load average ${load}"
if awk -v l="$load" 'BEGIN { exit !(l > 1.0) }'; then
  echo "bench.sh: warning: the machine is busy (load ${load}); multi-threaded figures will be low" >&2
fi
# Roofline peaks; SIMD primitives; calibration; linear layers (dense, group-sparse, block
# shapes); attention: every variant at L512/L2048, naive and streaming over all lengths (the
# sequence-length plot), decode; parallel prefill (parallel_bench.cpp).
filter='BM_Roofline|BM_Simd.*/4096$|BM_QuantCalibrate|BM_SparseBlockShape/|BM_Attention/.*(L512|L2048)/threads:1(/|$)'
filter+='|BM_Attention/(naive|streaming)/E512/H[0-9]+/L[0-9]+/threads:1(/|$)|BM_AttentionDecode|BM_Parallel'
build/default/bench/dynasparse_bench --benchmark_filter="$filter" --benchmark_min_time="$min_time" \
  --benchmark_context="cpu_model=${cpu_model}" \
  --benchmark_format=json --benchmark_out=build/bench_main.json --benchmark_out_format=json >/dev/null
# The linear layers' and the demo models' tables are ratios of separate benchmarks (sparse
# against dense, INT8 against FP32), and a burst of load on this shared machine could land on
# one side of a ratio only: repetitions in random interleaved order, of which
# bench/report.py keeps the median; five for the layers, ten for the models' decoding (a
# 64-token run moved by up to 1.5x between repetitions).
build/default/bench/dynasparse_bench --benchmark_filter='BM_ModelDecode/' --benchmark_min_time="$min_time" \
  --benchmark_repetitions=10 --benchmark_enable_random_interleaving=true \
  --benchmark_context="cpu_model=${cpu_model}" \
  --benchmark_format=json --benchmark_out=build/bench_model.json --benchmark_out_format=json >/dev/null
build/default/bench/dynasparse_bench --benchmark_filter='BM_Linear/' --benchmark_min_time="$min_time" \
  --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true \
  --benchmark_context="cpu_model=${cpu_model}" \
  --benchmark_format=json --benchmark_out=build/bench_linear.json --benchmark_out_format=json >/dev/null
python3 - build/bench_main.json build/bench_linear.json build/bench_model.json build/bench.json <<'PY'
import json, sys
main, *rest = (json.load(open(p)) for p in sys.argv[1:-1])
for r in rest:
    main["benchmarks"] += r["benchmarks"]
json.dump(main, open(sys.argv[-1], "w"), indent=1)
PY
report=$(python3 bench/report.py build/bench.json)
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  mkdir -p bench/plots
  /usr/bin/python3 bench/plot.py build/bench.json bench/plots
else
  echo "bench.sh: matplotlib missing (Debian: python3-matplotlib); bench/plots/ not regenerated" >&2
fi
python3 - "$report" <<'PY'
import re, sys
readme = open("README.md").read()
section = "<!-- perf:begin -->\n" + sys.argv[1].rstrip() + "\n<!-- perf:end -->"
readme = re.sub(r"<!-- perf:begin -->.*?<!-- perf:end -->", lambda _: section, readme, flags=re.S)
open("README.md", "w").write(readme)
PY
echo "bench.sh: $(echo "$report" | head -1)"
echo "bench.sh: README.md performance tables and bench/plots/ regenerated from build/bench.json"
echo "bench.sh: the PyTorch comparison is separate: /usr/bin/python3 bench/compare/pytorch.py"
