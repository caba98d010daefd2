#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The seed's DynamicAttention in PyTorch against our gated_output attention, same shapes.

Usage (from the repository root, after building the default preset's dynasparse_bench):
    /usr/bin/python3 bench/compare/attention.py [--runs 5]
Needs Debian's python3-torch. For E = 512, batch 1, H in {8, 64} and L in {512, 2048}, times
`DynamicAttention` of examples/python/attention_reference.py (nn.MultiheadAttention, then
the sigmoid(Linear) gate; self-attention, (L, N, E) layout) and our
`BM_Attention/gated_output/E512/H<H>/L<L>/threads:1`, the same module in C++ with FP32
weights (its outputs match PyTorch's within 1e-5 in tests/nn/gated_attention_test.cpp).
PyTorch runs on one thread twice: with its OpenBLAS held to one thread, and with the BLAS
left at its default (one thread per core, as `torch.set_num_threads(1)` alone leaves it,
since it does not reach Debian's system BLAS). Each figure is the median over the runs of
the best of 3 calls (ours: one Google Benchmark run), the runs alternating between the
libraries so that both see the same load.
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
from attention_reference import DynamicAttention  # noqa: E402
from pytorch import best_of  # noqa: E402  (bench/compare/pytorch.py, this script's directory)

BENCH = os.path.join(ROOT, "build", "default", "bench", "dynasparse_bench")
SHAPES = [(8, 512), (8, 2048), (64, 512), (64, 2048)]


def blas():
    try:
        lib = ctypes.CDLL("libblas.so.3")
    except OSError:
        return None
    return lib if hasattr(lib, "openblas_set_num_threads") else None


def ours_ms(h, length):
    name = f"BM_Attention/gated_output/E512/H{h}/L{length}/threads:1"
    time.sleep(0.3)  # PyTorch's idle OpenBLAS workers stop spinning first (see pytorch.py)
    out = subprocess.run([BENCH, f"--benchmark_filter=^{name}(/real_time)?$", "--benchmark_format=json",
                          "--benchmark_min_time=0.2"], check=True, capture_output=True, text=True).stdout
    runs = [b for b in json.loads(out)["benchmarks"] if b["name"].startswith(name)]
    if not runs:
        sys.exit(f"{name} not found in {BENCH}")
    unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[runs[0]["time_unit"]]
    return runs[0]["real_time"] * unit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if not os.path.exists(BENCH):
        sys.exit(f"build {BENCH} first: cmake --preset default && cmake --build --preset default "
                 "--target dynasparse_bench")
    torch.set_num_threads(1)
    lib = blas()
    if lib is None:
        sys.exit("attention.py: PyTorch's BLAS is not OpenBLAS; install it (scripts/install-deps.sh python)")
    default_threads = lib.openblas_get_num_threads() if lib else None
    torch.manual_seed(0)
    print(f"torch {torch.__version__}; OpenBLAS default threads: {default_threads}; load average "
          f"{os.getloadavg()[0]:.2f}")
    rows = []
    for h, length in SHAPES:
        model = DynamicAttention(512, h).eval()
        x = torch.randn(length, 1, 512)
        timings = {"torch1": [], "torchN": [], "ours": []}
        with torch.no_grad():
            model(x, x, x)  # warm-up
            for _ in range(args.runs):
                if lib:
                    lib.openblas_set_num_threads(1)
                timings["torch1"].append(best_of(lambda: model(x, x, x)) * 1e3)
                if lib:
                    lib.openblas_set_num_threads(default_threads)
                    timings["torchN"].append(best_of(lambda: model(x, x, x)) * 1e3)
                timings["ours"].append(ours_ms(h, length))
        if lib:
            lib.openblas_set_num_threads(1)
        med = {k: statistics.median(v) for k, v in timings.items() if v}
        rows.append((h, length, med))
        print(f"H{h} L{length}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items()), flush=True)
    print("\n| shape | PyTorch, BLAS 1 thread, ms | PyTorch, BLAS default threads, ms | ours (1 thread) ms | "
          "ours vs PyTorch 1 thread | ours vs PyTorch BLAS default |\n| --- | --- | --- | --- | --- | --- |")
    for h, length, med in rows:
        ours, n = med["ours"], med.get("torchN")
        n_ms = f"{n:.1f}" if n else "-"
        n_ratio = f"{n / ours:.2f}x" if n else "-"
        print(f"| E512 H{h} L{length} | {med['torch1']:.1f} | {n_ms} | {ours:.1f} | {med['torch1'] / ours:.2f}x | "
              f"{n_ratio} |")


if __name__ == "__main__":
    main()
