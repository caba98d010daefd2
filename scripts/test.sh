#!/usr/bin/env bash
# Installs what is missing, builds the default preset (Release, native ISA) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset default
cmake --build --preset default -j "$jobs"
# Every public header compiles on its own (one translation unit each).
cmake --build --preset default -j "$jobs" --target dynasparse_header_check
ctest --preset default -j "$jobs"
