#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages dynasparse needs, only those missing.
# Usage: scripts/install-deps.sh [build] [cross] [python]   (default: build)
#   build   compiler, CMake, Eigen, xsimd, nlohmann/json, GoogleTest, Google Benchmark, CLI11,
#           Open MPI (the optional dynasparse::mpi component and its mpirun tests)
#   cross   the AArch64 cross compiler and qemu-aarch64, for the ARM test builds
#   python  PyTorch, NumPy, Matplotlib and OpenBLAS (Debian's PyTorch multiplies through the
#           system BLAS; the reference BLAS would make it ~100x slower), for golden files,
#           training, plots and the PyTorch comparison
#   fuzz    Clang and its runtime libraries (libFuzzer, sanitizers)
set -euo pipefail

groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(build)

packages=()
for g in "${groups[@]}"; do
  case "$g" in
    build) packages+=(g++ cmake make python3 libeigen3-dev libxsimd-dev nlohmann-json3-dev
                      libgtest-dev googletest libbenchmark-dev libcli11-dev libopenmpi-dev openmpi-bin) ;;
    cross) packages+=(g++-aarch64-linux-gnu qemu-user) ;;
    python) packages+=(python3-torch python3-numpy python3-matplotlib libopenblas0-pthread) ;;
    fuzz) packages+=(clang libclang-rt-14-dev) ;;
    *) echo "install-deps.sh: unknown group '$g'; expected build, cross, python or fuzz" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps.sh: missing packages (${missing[*]}) and not root; install them or rerun with sudo" >&2
  exit 1
fi
echo "install-deps.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
