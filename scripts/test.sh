#!/usr/bin/env bash
# Installs what is missing, builds the default preset (Release, native ISA) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset default
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs"
