#!/usr/bin/env python3
"""Turns dynasparse_bench JSON into PNG plots for README.

Usage: plot.py BENCH.json OUTDIR
Needs matplotlib (Debian: python3-matplotlib; run with /usr/bin/python3 where another
Python comes first on PATH). Plots whatever the JSON holds, skipping a plot whose
benchmarks are missing:
  sparsity.png        time of BM_Linear/gsparse_{f32,i8}@<pct> vs sparsity per shape, with the
                      dense_f32 / dense_i8 / eigen_f32 times of the same run as horizontal lines;
                      block_shapes.png: the same per block shape (BM_SparseBlockShape), with the
                      dense crossover marked.
  int8_vs_fp32.png    per M x K x N and thread count: time of eigen_f32, dense_f32, dense_i8
                      and dense_i8_lut; and the speed-up of gsparse_i8 over gsparse_f32 vs
                      sparsity.
  attention_skip.png  BM_Attention/gated_head@skip<X>: time relative to skip 0 vs the measured
                      fraction of (query, head) pairs skipped.
  attention_seqlen.png  BM_Attention/{naive,streaming,gated_output}: time vs sequence length.
  parallel.png        BM_Parallel* speed-up over one rank (from parallel_bench.cpp), and the
                      threads:2 / threads:1 speed-up of each BM_Linear format.
  roofline.png        achieved rate vs arithmetic intensity of every kernel benchmark with
                      roofline counters, under the roofs measured by BM_Roofline*.
"""
import collections
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (roofs and % of roof, shared with the README tables)


def load(path):
    with open(path) as f:
        data = json.load(f)
    times, counters = {}, {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = re.sub(r"/repeats:\d+", "", b["name"]).replace("/real_time", "").replace("/manual_time", "")
        ms = b["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        if name in times and times[name] <= ms:
            continue  # repetitions (the roofline benchmarks): keep the fastest
        times[name] = ms
        counters[name] = b
    return data.get("context", {}), times, counters


def grid(n, cols=4, w=4.2, h=3.4):
    cols = min(n, cols)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def save(fig, out):
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def shape_key(shape):
    return tuple(int(x) for x in shape.split("x"))


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
    fig, axes = grid(len(shapes))
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
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Group-sparse linear layers (64x4 blocks): time vs sparsity")
    save(fig, out)
    return True


def plot_block_shapes(times, out):
    pat = re.compile(r"BM_SparseBlockShape/(i8_)?(\d+x\d+)@(\d+)/(\S+)/threads:1$")
    series = collections.defaultdict(list)
    for name, t in times.items():
        m = pat.match(name)
        if m:
            series[(m.group(4), bool(m.group(1)), m.group(2))].append((int(m.group(3)), t))
    panels = sorted({(s, i8) for s, i8, _ in series}, key=lambda p: (shape_key(p[0]), p[1]))
    if not panels:
        return False
    fig, axes = grid(len(panels), cols=2, w=5.2, h=3.8)
    for ax, (shape, i8) in zip(axes.flat, panels):
        base = times.get(f"BM_Linear/dense_{'i8' if i8 else 'f32'}/{shape}/threads:1")
        blocks = sorted({b for s, q, b in series if s == shape and q == i8}, key=shape_key)
        for block in blocks:
            pts = sorted(series[(shape, i8, block)])
            line, = ax.plot([p for p, _ in pts], [t for _, t in pts], "o-", label=block, markersize=3)
            if base:
                cross = next((p for p, t in pts if t <= base), None)
                if cross is not None:
                    ax.plot([cross], [dict(pts)[cross]], "*", color=line.get_color(), markersize=12)
        if base:
            ax.axhline(base, color="black", linestyle="--", linewidth=1, label=f"dense_{'i8' if i8 else 'f32'}")
        ax.set_title(f"{'INT8' if i8 else 'FP32'} {shape} (MxKxN), 1 thread", fontsize=9)
        ax.set_xlabel("blocks removed (%)")
        ax.set_ylabel("ms per call")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Block shapes: time vs sparsity; a star marks the first sparsity at which sparse beats dense")
    save(fig, out)
    return True


def plot_int8(times, out):
    pat = re.compile(r"BM_Linear/dense_f32/(\S+)/threads:(\d+)$")
    keys = sorted({m.groups() for n in times for m in [pat.match(n)] if m}, key=lambda k: (int(k[1]), shape_key(k[0])))
    sp = collections.defaultdict(dict)
    for name, t in times.items():
        m = re.match(r"BM_Linear/gsparse_(f32|i8)@(\d+)/(\S+)/threads:(\d+)$", name)
        if m:
            sp[(m.group(3), m.group(4))].setdefault(int(m.group(2)), {})[m.group(1)] = t
    if not keys and not sp:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), squeeze=False)
    ax = axes[0][0]
    fmts = [("eigen_f32", "black"), ("dense_f32", "tab:blue"), ("dense_i8", "tab:orange"), ("dense_i8_lut", "tab:red")]
    width = 0.8 / len(fmts)
    for i, (fmt, color) in enumerate(fmts):
        xs, ys = [], []
        for j, (shape, th) in enumerate(keys):
            t = times.get(f"BM_Linear/{fmt}/{shape}/threads:{th}")
            if t is not None:
                xs.append(j + (i - (len(fmts) - 1) / 2) * width)
                ys.append(t)
        ax.bar(xs, ys, width, color=color, label=fmt)
    for j, (shape, th) in enumerate(keys):
        f, q = times.get(f"BM_Linear/dense_f32/{shape}/threads:{th}"), times.get(f"BM_Linear/dense_i8/{shape}/threads:{th}")
        if f and q:
            ax.annotate(f"{f / q:.1f}x", (j, max(f, q) * 1.15), ha="center", fontsize=7)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{s} T={th}" for s, th in keys], fontsize=7, rotation=35, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("ms per call")
    ax.set_title("Dense layers per M x K x N and thread count (label: dense_i8 speed-up over dense_f32)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    ax = axes[0][1]
    for (shape, th), pts in sorted(sp.items(), key=lambda kv: (int(kv[0][1]), shape_key(kv[0][0]))):
        xs = sorted(p for p in pts if "f32" in pts[p] and "i8" in pts[p])
        if xs:
            ax.plot(xs, [pts[p]["f32"] / pts[p]["i8"] for p in xs], "o-" if th == "1" else "s--",
                    label=f"{shape} T={th}", markersize=4)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xlabel("blocks removed (%)")
    ax.set_ylabel("gsparse_f32 time / gsparse_i8 time")
    ax.set_title("Group-sparse (64x4): INT8 speed-up over FP32 by sparsity", fontsize=9)
    ax.grid(True, alpha=0.3)
    if sp:
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("INT8 vs FP32")
    save(fig, out)
    return True


def plot_attention_skip(times, counters, out):
    pat = re.compile(r"BM_Attention/gated_head@skip(\d+)/(E\d+/H\d+/L\d+/threads:\d+)$")
    series = collections.defaultdict(list)
    for name, t in times.items():
        m = pat.match(name)
        if m:
            series[m.group(2)].append((counters[name].get("skipped", int(m.group(1)) / 100), int(m.group(1)), t))
    series = {k: sorted(v) for k, v in series.items() if any(p[1] == 0 for p in v) and len(v) > 1}
    if not series:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), squeeze=False)
    for k, pts in sorted(series.items(), key=lambda kv: (kv[0].split("/")[1], int(kv[0].split("/")[2][1:]))):
        base = next(t for _, s, t in pts if s == 0)
        label = k.replace("/threads:", " T=").replace("/", " ")
        line, = axes[0][0].plot([f for f, _, _ in pts], [t for _, _, t in pts], "o-", label=label)
        axes[0][1].plot([f for f, _, _ in pts], [t / base for _, _, t in pts], "o-", color=line.get_color(), label=label)
    axes[0][1].plot([0, 1], [1, 0], ":", color="gray", label="time proportional to work kept")
    axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel("ms per call")
    axes[0][1].set_ylabel("time / time at skip 0")
    axes[0][1].set_ylim(0, 1.1)
    for ax in axes[0]:
        ax.set_xlabel("fraction of (query, head) pairs skipped by the head gate")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Gated attention module (projections + attention + gate): time vs skipped fraction")
    save(fig, out)
    return True


def plot_attention_seqlen(times, out):
    pat = re.compile(r"BM_Attention/(naive|streaming|gated_output)/E(\d+)/H(\d+)/L(\d+)/threads:(\d+)$")
    series = collections.defaultdict(list)
    for name, t in times.items():
        m = pat.match(name)
        if m:
            v, e, h, l, th = m.groups()
            series[(e, h, th, v)].append((int(l), t))
    series = {k: sorted(v) for k, v in series.items() if len(v) > 1}
    if not series:
        return False
    panels = sorted({k[:3] for k in series}, key=lambda p: (int(p[2]), int(p[1])))
    fig, axes = grid(len(panels), cols=2, w=5.4, h=4.0)
    styles = {"naive": ("tab:red", "o-"), "streaming": ("tab:green", "s-"), "gated_output": ("tab:purple", "^--")}
    for ax, (e, h, th) in zip(axes.flat, panels):
        for v, (color, style) in styles.items():
            pts = series.get((e, h, th, v))
            if pts:
                ax.plot([l for l, _ in pts], [t for _, t in pts], style, color=color, label=v)
        ref = series.get((e, h, th, "streaming")) or next(series[k] for k in series if k[:3] == (e, h, th))
        l0, t0 = ref[0]
        ls = [l for l, _ in ref]
        ax.plot(ls, [t0 * (l / l0) ** 2 for l in ls], ":", color="gray", label="~ L^2")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("ms per call")
        ax.set_title(f"E{e}, {h} heads, {th} thread(s)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Attention time vs sequence length (naive: [L, L] scores per head; streaming: online softmax)")
    save(fig, out)
    return True


def plot_parallel(times, counters, out):
    par = sorted(n for n in counters if n.startswith("BM_Parallel") and "speedup" in counters[n])
    intra = collections.defaultdict(dict)
    for name, t in times.items():
        m = re.match(r"BM_Linear/(eigen_f32|dense_f32|dense_i8)/(\S+)/threads:2$", name)
        if m:
            t1 = times.get(name.replace("threads:2", "threads:1"))
            if t1:
                intra[m.group(2)][m.group(1)] = t1 / t
    if not par and not intra:
        return False
    panels = [p for p in (par and "par", intra and "intra") if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "par":
            labels = [re.sub(r"/iterations:\d+", "", n.replace("BM_Parallel", "")).replace("/", "\n", 1) for n in par]
            vals = [counters[n]["speedup"] for n in par]
            bars = ax.bar(range(len(par)), vals, color="tab:blue")
            for b, n in zip(bars, par):
                c = counters[n]
                ax.annotate(f"{c['speedup']:.2f}x\n{c.get('one_rank_ms', 0):.0f} -> {c.get('parallel_ms', 0):.0f} ms",
                            (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(par)))
            ax.set_xticklabels(labels, fontsize=7)
            ax.set_ylabel("one-rank time / parallel time")
            ax.set_title("Prefill across 2 ranks (threads), each rank 1 thread", fontsize=9)
        else:
            shapes = sorted(intra, key=shape_key)
            fmts = ["eigen_f32", "dense_f32", "dense_i8"]
            width = 0.8 / len(fmts)
            for i, fmt in enumerate(fmts):
                xs = [j + (i - 1) * width for j, s in enumerate(shapes) if fmt in intra[s]]
                ax.bar(xs, [intra[s][fmt] for s in shapes if fmt in intra[s]], width, label=fmt)
            ax.set_xticks(range(len(shapes)))
            ax.set_xticklabels(shapes, fontsize=7)
            ax.set_ylabel("time at 1 thread / time at 2 threads")
            ax.set_title("Linear layers: threads inside one call (M x K x N)", fontsize=9)
            ax.legend(fontsize=7)
        ax.axhline(2.0, color="gray", linestyle=":", label="ideal (2 cores)")
        ax.axhline(1.0, color="black", linewidth=1)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Parallel scaling on 2 cores")
    save(fig, out)
    return True


def family(name):
    if name.startswith("BM_Linear/"):
        fmt = name.split("/")[1].split("@")[0]
        return fmt
    if name.startswith("BM_SparseBlockShape/"):
        return "gsparse_i8" if "/i8_" in name else "gsparse_f32"
    if name.startswith("BM_AttentionDecode/"):
        return "attention decode"
    if name.startswith("BM_Attention/"):
        return "attention " + ("core" if re.match(r"BM_Attention/(naive|streaming)/", name) else "module")
    if name.startswith("BM_Simd"):
        return "simd primitive"
    return "other"


def plot_roofline(ctx, times, counters, out):
    peaks = report.roofs(counters)
    if not peaks.get("FmaF32"):
        return False
    pts = collections.defaultdict(lambda: collections.defaultdict(list))
    for name, b in counters.items():
        r = report.roof_of(name, b, times.get(name), ctx, peaks)
        if r:
            pts[report.thread_count(name)][family(name)].append((r[0], r[1], name))
    ths = sorted(th for th in pts if any(th2 == th for s in peaks.values() for th2 in s)) or [1]
    fig, axes = plt.subplots(1, len(ths), figsize=(7.0 * len(ths), 5.4), squeeze=False)
    colors = {"eigen_f32": "black", "dense_f32": "tab:blue", "dense_i8": "tab:orange", "dense_i8_lut": "tab:red",
              "gsparse_f32": "tab:cyan", "gsparse_i8": "gold", "attention core": "tab:green",
              "attention module": "tab:purple", "attention decode": "tab:brown", "simd primitive": "tab:gray"}
    for ax, th in zip(axes[0], ths):
        xs_all = [x for fam in pts[th].values() for x, _, _ in fam] or [1.0]
        lo, hi = min(xs_all + [0.1]) / 2, max(xs_all + [1000.0]) * 2
        fma, dot = report.at_threads(peaks.get("FmaF32"), th), report.at_threads(peaks.get("DotS8"), th)
        for level, style in (("L1", ":"), ("L2", "-."), ("L3", "--"), ("DRAM", "-")):
            bw = report.at_threads(peaks.get(f"Read/{level}"), th)
            if not bw:
                continue
            top = max(fma, dot or 0)
            x_end = top / bw
            ax.plot([lo, x_end], [bw * lo, top], style, color="gray", linewidth=1,
                    label=f"{level} read {bw / 1e9:.0f} GB/s")
        ax.plot([lo, hi], [fma, fma], "-", color="tab:blue", linewidth=1.5)
        ax.annotate(f"FP32 FMA peak {fma / 1e9:.0f} GFLOP/s", (hi / 40, fma * 1.08), fontsize=7, color="tab:blue")
        if dot:
            ax.plot([lo, hi], [dot, dot], "-", color="tab:orange", linewidth=1.5)
            ax.annotate(f"INT8 dot peak {dot / 1e9:.0f} GOP/s", (hi / 40, dot * 1.08), fontsize=7, color="tab:orange")
        for fam, ps in sorted(pts[th].items()):
            ax.scatter([x for x, _, _ in ps], [y for _, y, _ in ps], s=14, color=colors.get(fam, "tab:pink"),
                       label=fam, alpha=0.8, edgecolors="none")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("arithmetic intensity (ops per byte of weights + activations)")
        ax.set_ylabel("achieved (FLOP/s, or int8 OP/s)")
        ax.set_title(f"{th} thread{'s' if th > 1 else ''}", fontsize=9)
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    fig.suptitle("Roofline: kernels against this machine's measured peaks and read bandwidths")
    save(fig, out)
    return True


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ctx, times, counters = load(sys.argv[1])
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    made = []
    for fname, fn in [("sparsity.png", lambda p: plot_sparsity(times, p)),
                      ("block_shapes.png", lambda p: plot_block_shapes(times, p)),
                      ("int8_vs_fp32.png", lambda p: plot_int8(times, p)),
                      ("attention_skip.png", lambda p: plot_attention_skip(times, counters, p)),
                      ("attention_seqlen.png", lambda p: plot_attention_seqlen(times, p)),
                      ("parallel.png", lambda p: plot_parallel(times, counters, p)),
                      ("roofline.png", lambda p: plot_roofline(ctx, times, counters, p))]:
        if fn(os.path.join(out, fname)):
            made.append(fname)
    print("plot.py: wrote " + (", ".join(made) if made else "nothing (no matching benchmarks)"))


if __name__ == "__main__":
    main()
