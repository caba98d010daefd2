#!/usr/bin/env bash
# Compares the decoding speed of two revisions in one process (bench/decode_ab.cpp).
# Usage: scripts/decode-ab.sh [-v VARIANT] [-t THREADS] [-n PAIRS] BASE [CANDIDATE]
#   BASE, CANDIDATE: git revisions; without CANDIDATE, the working tree (uncommitted changes
#   included). VARIANT: a BM_ModelDecode variant (default int8_sparse70_int8head_i8kv);
#   THREADS default 1; PAIRS default 300 (about 5 s for the INT8 variants).
# Prints each side's median microseconds per token and the median of B/A over the pairs.
# Run BASE against itself to see the tool's own bias: on a Zen 5 it was within 1%, where two
# BM_ModelDecode runs minutes apart differed by 10-30%.
# Builds with $CXX (default g++), -O3 -march=native and OpenMP, as the default preset does.
set -euo pipefail
cd "$(dirname "$0")/.."
variant=int8_sparse70_int8head_i8kv
threads=1
pairs=300
while getopts "v:t:n:" opt; do
  case "$opt" in
    v) variant=$OPTARG ;;
    t) threads=$OPTARG ;;
    n) pairs=$OPTARG ;;
    *) sed -n '2,6p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  sed -n '2,6p' "$0" >&2
  exit 2
fi
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The include/ directory of a revision (or of the working tree).
headers() {
  if [ -z "$1" ]; then
    echo "$root/include"
  else
    mkdir -p "$work/$2"
    git -C "$root" archive "$1" include | tar -x -C "$work/$2"
    echo "$work/$2/include"
  fi
}
inc_a=$(headers "$1" a)
inc_b=$(headers "${2:-}" b)
cxx=${CXX:-g++}
flags=(-std=c++17 -O3 -DNDEBUG -march=native -fopenmp)
read -r -a eigen <<<"$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)"
"$cxx" "${flags[@]}" "${eigen[@]}" -I"$inc_a" -Ddynasparse=dynasparse_a -DDECODE_AB_SIDE=side_a \
  -c bench/decode_ab.cpp -o "$work/a.o" &
"$cxx" "${flags[@]}" "${eigen[@]}" -I"$inc_b" -Ddynasparse=dynasparse_b -DDECODE_AB_SIDE=side_b \
  -c bench/decode_ab.cpp -o "$work/b.o" &
wait %1
wait %2
"$cxx" "${flags[@]}" -DDECODE_AB_MAIN bench/decode_ab.cpp "$work/a.o" "$work/b.o" -o "$work/decode_ab"
echo "A: ${1}   B: ${2:-working tree}"
"$work/decode_ab" "$root/examples/models" "$variant" "$threads" "$pairs"
