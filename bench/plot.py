#!/usr/bin/env python3
"""Turns dynasparse_bench JSON into PNG plots for README.

Usage: plot.py BENCH.json OUTDIR
Needs matplotlib (Debian: python3-matplotlib; run with /usr/bin/python3 where another
Python comes first on PATH). Plots whatever the JSON holds:
  sparsity.png  time of BM_Linear/gsparse_{f32,i8}@<pct> vs sparsity per shape, with the
                dense_f32 / dense_i8 / eigen_f32 times of the same run as horizontal lines.
"""
import collections
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        data = json.load(f)
    times = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b["name"].replace("/real_time", "")
        times[name] = b["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
    return data.get("context", {}), times


def plot_sparsity(times, out):
    pat = re.compile(r"BM_Linear/(gsparse_f32|gsparse_i8)@(\d+)/(\S+)/threads:(\d+)$")
    series = collections.defaultdict(list)
    for name, t in times.items():
        m = pat.match(name)
        if m:
            series[(m.group(3), m.group(4), m.group(1))].append((int(m.group(2)), t))
    shapes = sorted({(s, th) for s, th, _ in series})
    if not shapes:
        return False
    cols = min(len(shapes), 4)
    rows = (len(shapes) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (shape, th) in zip(axes.flat, shapes):
        for fmt, color in (("gsparse_f32", "tab:blue"), ("gsparse_i8", "tab:orange")):
            pts = sorted(series.get((shape, th, fmt), []))
            if pts:
                ax.plot([p for p, _ in pts], [t for _, t in pts], "o-", color=color, label=fmt)
        for base, color in (("eigen_f32", "black"), ("dense_f32", "tab:blue"), ("dense_i8", "tab:orange")):
            t = times.get(f"BM_Linear/{base}/{shape}/threads:{th}")
            if t is not None:
                ax.axhline(t, color=color, linestyle="--", linewidth=1, label=base)
        ax.set_title(f"{shape} (MxKxN), {th} thread(s)", fontsize=9)
        ax.set_xlabel("blocks removed (%)")
        ax.set_ylabel("ms per call")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(shapes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Group-sparse linear layers (16x4 blocks): time vs sparsity")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    _, times = load(sys.argv[1])
    out = sys.argv[2]
    made = []
    if plot_sparsity(times, f"{out}/sparsity.png"):
        made.append("sparsity.png")
    print("plot.py: wrote " + (", ".join(made) if made else "nothing (no matching benchmarks)"))


if __name__ == "__main__":
    main()
