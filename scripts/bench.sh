#!/usr/bin/env bash
# Regenerates README's performance section and bench/plots/ from one run of dynasparse_bench.
# Usage: scripts/bench.sh [--quick]   (--quick: shorter minimum time per benchmark)
# Takes 10-20 minutes on 2 cores; run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
min_time=0.3
[ "${1:-}" = "--quick" ] && min_time=0.1
scripts/install-deps.sh build
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc 2>/dev/null || echo 2)" --target dynasparse_bench
filter='BM_Simd.*/4096$|BM_QuantCalibrate|BM_Linear/|BM_SparseBlockShape/|BM_Attention/.*(L512|L2048)/threads:1(/|$)|BM_AttentionDecode'
build/default/bench/dynasparse_bench --benchmark_filter="$filter" --benchmark_min_time="$min_time" \
  --benchmark_format=json --benchmark_out=build/bench.json --benchmark_out_format=json >/dev/null
report=$(python3 bench/report.py build/bench.json)
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  mkdir -p bench/plots
  /usr/bin/python3 bench/plot.py build/bench.json bench/plots
fi
python3 - "$report" <<'PY'
import re, sys
readme = open("README.md").read()
section = "<!-- perf:begin -->\n" + sys.argv[1].rstrip() + "\n<!-- perf:end -->"
readme = re.sub(r"<!-- perf:begin -->.*?<!-- perf:end -->", lambda _: section, readme, flags=re.S)
open("README.md", "w").write(readme)
PY
echo "bench.sh: README.md performance tables and bench/plots/ regenerated from build/bench.json"
