#!/usr/bin/env python3
"""Turns dynasparse_bench JSON into README's performance tables (Markdown on stdout).

Usage: report.py BENCH.json
Every figure is a ratio against a baseline measured in the same run, so the tables stay
meaningful on a shared, noisy machine. Benchmarks missing from the JSON are left out.

Roofline: when the JSON holds the BM_Roofline* peaks (bench/roofline_bench.cpp), every kernel
benchmark with the counters ops_per_call, bytes_per_call and int8_ops gets its % of roof:
achieved ops/s over min(peak compute, bandwidth x ops_per_call / bytes_per_call). The peak is
the FP32 FMA or the INT8 dot-product rate at the benchmark's thread count; the bandwidth is the
streaming read rate of the smallest memory level that holds bytes_per_call (L1 and L2 per
thread, L3 shared, else DRAM), from the cache sizes in the JSON context.
"""
import collections
import json
import re
import sys


def load(path):
    with open(path) as f:
        data = json.load(f)
    samples = collections.defaultdict(list)
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = re.sub(r"/repeats:\d+", "", b["name"]).replace("/real_time", "").replace("/manual_time", "")
        unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        samples[name].append((b["real_time"] * unit, b))  # milliseconds
    t, counters, runs = {}, {}, collections.Counter()
    for name, runs_of in samples.items():
        runs_of.sort(key=lambda x: x[0])
        runs[name] = len(runs_of)
        # Repeated linear-layer benchmarks (interleaved in random order) are compared by
        # their median run: a ratio of two fastest runs compares the quietest moment each
        # side happened to get, and on a machine whose DRAM bandwidth is shared that moment
        # can be 1.7x faster than the usual. The roofline's repetitions keep the fastest run
        # (a peak is what they measure).
        pick = (len(runs_of) - 1) // 2 if name.startswith(("BM_Linear/", "BM_ModelDecode/")) else 0
        t[name], counters[name] = runs_of[pick]
    return data.get("context", {}), t, counters, runs


def ms(v):
    return f"{v:.3f}" if v < 1 else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def simd_table(t):
    rows = []
    for op in ["Exp", "Softmax", "Sigmoid", "Tanh", "Gelu", "Silu", "Dot", "Sum", "Max", "Axpy", "Quantize",
               "Dequantize", "DotS8"]:
        s, r = t.get(f"BM_Simd{op}/simd/4096"), t.get(f"BM_Simd{op}/scalar/4096")
        a = t.get(f"BM_Simd{op}/autovec/4096")
        if s is None or r is None:
            continue
        extra = f" | {a / s:.1f}x" if a else " | "
        rows.append(f"| {op} | {s * 1e6:.0f} ns | {r * 1e6:.0f} ns | {r / s:.1f}x{extra} |")
    if not rows:
        return ""
    return ("| primitive (n = 4096) | SIMD | scalar twin | speed-up | vs plain loop at -O3 |\n"
            "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")


def linear_table(t, c):
    pat = re.compile(r"BM_Linear/eigen_f32/(\S+)/threads:(\d+)$")
    rows = []
    for name in sorted(t, key=lambda n: (n.split("/")[2] if n.count("/") >= 2 else "", n)):
        m = pat.match(name)
        if not m:
            continue
        shape, th = m.groups()
        base = t[name]
        cells = [shape, th, ms(base)]
        for fmt in ["dense_f32", "dense_i8", "dense_i8_lut"]:
            v = t.get(f"BM_Linear/{fmt}/{shape}/threads:{th}")
            cells.append(f"{ms(v)} ({base / v:.2f}x)" if v else "-")
        gops = c.get(f"BM_Linear/dense_i8/{shape}/threads:{th}", {}).get("GOP/s")
        cells.append(f"{gops / 1e9:.0f}" if gops else "-")
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return ""
    memory = ""
    f32 = c.get("BM_Linear/dense_f32/1x4096x4096/threads:1", {}).get("weight_MB")
    i8 = c.get("BM_Linear/dense_i8/1x4096x4096/threads:1", {}).get("weight_MB")
    if f32 and i8:
        memory = (f"\nWeight memory of a 4096x4096 layer (the `weight_MB` counter, packing, scales and sums "
                  f"included): DenseF32 {f32:.2f} MB, DenseI8 {i8:.2f} MB ({100 * i8 / f32:.1f}%).\n")
    return ("| M x K x N | threads | eigen_f32 ms | dense_f32 ms (x eigen) | dense_i8 ms (x eigen) | "
            "dense_i8_lut ms (x eigen) | dense_i8 GOP/s |\n| --- | --- | --- | --- | --- | --- | --- |\n" +
            "\n".join(rows) + "\n" + memory)


def sparse_table(t, c=None):
    pat = re.compile(r"BM_Linear/gsparse_(f32|i8)@(\d+)/(\S+)/threads:(\d+)$")
    series = {}
    for name, v in t.items():
        m = pat.match(name)
        if m:
            fmt, pct, shape, th = m.groups()
            series.setdefault((fmt, shape, th), {})[int(pct)] = v
    rows = []
    for (fmt, shape, th), pts in sorted(series.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        base = t.get(f"BM_Linear/dense_{fmt}/{shape}/threads:{th}")
        if not base:
            continue
        cells = [f"gsparse_{fmt}", shape, th, ms(base)]
        for pct in [0, 30, 50, 70, 90]:
            cells.append(f"{base / pts[pct]:.2f}x" if pct in pts else "-")
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return ""
    c = c or {}
    memory = []
    for fmt in ["f32", "i8"]:
        dense = c.get(f"BM_Linear/dense_{fmt}/1x4096x4096/threads:1", {}).get("weight_MB")
        for pct in [50, 70]:
            mb = c.get(f"BM_Linear/gsparse_{fmt}@{pct}/1x4096x4096/threads:1", {}).get("weight_MB")
            if dense and mb:
                memory.append(f"gsparse_{fmt}@{pct} {mb:.2f} MB ({100 * mb / dense:.1f}% of dense_{fmt})")
    note = ("\nWeight memory of the 4096x4096 layer, block indices, scales and sums included: " +
            "; ".join(memory) + ".\n") if memory else ""
    return ("Speed-up of 64x4 group-sparse layers (`recommended_block_shape`; other shapes in the next table) over the dense layer of the same precision "
            "(dense_f32 or dense_i8), by fraction of blocks removed:\n\n"
            "| format | M x K x N | threads | dense ms | 0% | 30% | 50% | 70% | 90% |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n" + note)


def block_table(t):
    pat = re.compile(r"BM_SparseBlockShape/((?:i8_)?\d+x\d+)@(\d+)/(\S+)/threads:1$")
    series = {}
    for name, v in t.items():
        m = pat.match(name)
        if m:
            series.setdefault((m.group(1), m.group(3)), {})[int(m.group(2))] = v
    rows = []
    for (block, shape), pts in sorted(series.items()):
        base = t.get(f"BM_Linear/dense_{'i8' if block.startswith('i8') else 'f32'}/{shape}/threads:1")
        if not base:
            continue
        ratios = {p: base / v for p, v in pts.items()}
        cross = next((p for p in sorted(ratios) if ratios[p] >= 1.0), None)
        cells = [block, shape] + [f"{ratios[p]:.2f}x" if p in ratios else "-" for p in [0, 10, 20, 30, 50, 70]]
        cells.append(f"{cross}%" if cross is not None else "> 70%")
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return ""
    return ("Block shapes against the dense layer (1 thread); the crossover is the first measured sparsity "
            "at which sparse is at least as fast:\n\n"
            "| block | M x K x N | 0% | 10% | 20% | 30% | 50% | 70% | crossover |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")


def attention_table(t, c=None):
    rows = []
    keys = sorted({m.group(1) for n in t for m in [re.match(r"BM_Attention/\w+(?:@skip\d+)?/(E\d+/H\d+/L\d+/threads:\d+)$", n)] if m},
                  key=lambda k: (k.split("/")[1], int(k.split("/")[2][1:]), k))
    for k in keys:
        base = t.get(f"BM_Attention/streaming/{k}")
        naive = t.get(f"BM_Attention/naive/{k}")
        s0 = t.get(f"BM_Attention/gated_head@skip0/{k}")
        cells = [k.replace("/", " "), ms(naive) if naive else "-", ms(base) if base else "-",
                 f"{naive / base:.2f}x" if naive and base else "-"]
        go = t.get(f"BM_Attention/gated_output/{k}")
        cells.append(ms(go) if go else "-")
        for name in ["gated_head@skip25", "gated_head@skip50", "gated_head@skip75",
                     "gated_head_scattered@skip50", "gated_head_scattered@skip75"]:
            v = t.get(f"BM_Attention/{name}/{k}")
            cells.append(f"{s0 / v:.2f}x" if s0 and v else "-")
        rows.append("| " + " | ".join(cells) + " |")
    dec = []
    c = c or {}
    for ctx in [1024, 16384]:
        fn = f"BM_AttentionDecode/f32kv/E512/H64/ctx{ctx}"
        f = t.get(fn)
        if not f:
            continue
        for kind, label in [("i8kv", "I8"), ("i8compactkv", "I8Compact")]:
            qn = f"BM_AttentionDecode/{kind}/E512/H64/ctx{ctx}"
            q = t.get(qn)
            if not q:
                continue
            fm, qm = c.get(fn, {}).get("kv_MB"), c.get(qn, {}).get("kv_MB")
            mb = f"{fm:.1f} | {qm:.1f} | {100 * qm / fm:.1f}%" if fm and qm else "- | - | -"
            dec.append(f"| {ctx} | {label} | {ms(f)} | {ms(q)} | {q / f:.2f}x | {mb} |")
    out = ""
    if rows:
        out += ("| shape | naive ms | streaming ms | streaming speed-up | gated_output ms | head skip 25% | "
                "skip 50% | skip 75% | scattered 50% | scattered 75% (speed-ups over skip 0%) |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")
    if dec:
        out += ("\nDecoding one token (E512, H64, so head_dim 8): FP32 vs INT8 KV cache (`KVDType::I8`, "
                "a float scale per token and head; `I8Compact`, a float per token and a 4-bit code per "
                "head), and the cache's MB at that context\n\n| context | INT8 cache | f32 KV ms | INT8 KV ms | "
                "INT8 / f32 time | f32 KV MB | INT8 KV MB | INT8 / f32 bytes |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(dec) + "\n")
    return out


def parallel_table(t, c):
    """BM_Parallel*: speed-up over one rank measured in the same iterations, and the
    partitioner's prediction over the measured time for each set of device constants."""
    def get(b, k):
        v = b.get(k)
        return f"{v:.2f}" if isinstance(v, (int, float)) else "-"

    rows, dec = [], []
    for name, b in sorted(c.items()):
        m = re.match(r"BM_Parallel(TpPrefill|PipelinePrefill|PipelineStream)/E\d+/L(\d+)(.*?)(?:/iterations:\d+)?$", name)
        if m:
            kind = {"TpPrefill": "TP=2 prefill", "PipelinePrefill": "2-stage pipeline prefill",
                    "PipelineStream": "2-stage pipeline, prompts back to back"}[m.group(1)]
            detail = m.group(3).strip("/").replace("layers:2", "").replace("/", ", ").replace(":", " ").strip(", ")
            ideal = ""
            mi = re.search(r"micro:(\d+)", name)
            pr = re.search(r"prompts:(\d+)", name)
            if mi and m.group(1) != "TpPrefill":
                k = int(mi.group(1)) * (int(pr.group(1)) if pr else 1)
                ideal = f"{2 * k / (k + 1):.2f}x"
            rows.append(f"| {kind} | {detail or '-'} | {b['one_rank_ms']:.0f} | {b['parallel_ms']:.0f} | "
                        f"{b['speedup']:.2f}x | {ideal or '-'} | {get(b, 'pred_ratio')} | {get(b, 'pred_busy_ratio')} | "
                        f"{get(b, 'pred_file_ratio')} |")
        m = re.match(r"BM_ParallelDecode/E\d+/ctx:(\d+)/tp:(\d+)/pp:(\d+)", name)
        if m:
            dec.append(f"| tp={m.group(2)} pp={m.group(3)} | {m.group(1)} | {b['one_rank_ms']:.2f} | "
                       f"{b['ms_per_token']:.2f} | {b['speedup']:.2f}x | {get(b, 'pred_file_ms')} | "
                       f"{get(b, 'pred_file_ratio')} | {b.get('label', '')} |")
    out = ""
    pool, omp = (t.get(f"BM_ParallelForOverhead/{k}/threads:2") for k in ("pool", "openmp"))
    if pool and omp:
        out += (f"Fixed cost of splitting one call over two threads (`BM_ParallelForOverhead`, back-to-back "
                f"calls whose two parts touch a cache line each): `parallel_for`'s worker pool "
                f"{pool * 1e6:.0f} ns, an OpenMP parallel region {omp * 1e6:.0f} ns "
                f"({omp / pool:.1f}x).\n\n")
    if rows:
        out += ("In-process ranks on threads, one thread each, model hidden 1024, FFN 4096, 2 layers, 512 tokens "
                "(`bench/parallel_bench.cpp`). Ideal: 2m / (m + 1) for m micro-batches in flight. Prediction / "
                "measured: `pred` with the FLOP/s one rank reached alone, `pred_busy` with the FLOP/s of two "
                "one-rank runs at once, `pred_file` with `examples/plans/two_cores.json`.\n\n"
                "| plan | setting | one rank ms | parallel ms | speed-up | ideal | pred / measured | "
                "pred_busy / measured | pred_file / measured |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" +
                "\n".join(rows) + "\n")
    if dec:
        out += ("\nCached decoding of one sequence (one token per step after a 256-token prompt), predicted with "
                "`two_cores.json` (its `memory_bandwidth` bounds decoding):\n\n| plan | context | one rank ms/token | "
                "plan ms/token | speed-up | predicted ms | predicted / measured | bound |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(dec) + "\n")
    return out


# ---------------------------------------------------------------- roofline

def thread_count(name):
    m = re.search(r"threads:(\d+)", name)
    return int(m.group(1)) if m else 1


def roofs(c):
    """Peaks measured by bench/roofline_bench.cpp: {kind: {threads: rate}} in units per second."""
    out = collections.defaultdict(dict)
    for name, b in c.items():
        m = re.match(r"BM_Roofline(FmaF32|DotS8|Read/\w+|Copy/DRAM|Triad/DRAM)/threads:(\d+)$", name)
        if not m:
            continue
        kind, th = m.group(1), int(m.group(2))
        key = {"FmaF32": "FLOP/s", "DotS8": "OP/s"}.get(kind, "bytes/s")
        if key in b:
            out[kind][th] = b[key]
    return out


def at_threads(series, th):
    """The rate measured at `th` threads, else at the nearest measured count."""
    if not series:
        return None
    if th in series:
        return series[th]
    return series[min(series, key=lambda k: (abs(k - th), -k))]


def memory_level(ctx, bytes_per_call, th):
    """The smallest memory level that holds one call's bytes, from Google Benchmark's cache list
    in the JSON context (L1 and L2 private: their size times the threads; L3 shared). The whole
    capacity counts, so a working set near a cache's size gets that cache's (higher) roof:
    the bound stays an upper bound, and the table names the roof used."""
    caps = {}
    for cache in ctx.get("caches", []):
        if cache.get("type") == "Instruction":
            continue
        lvl, size, share = cache["level"], cache["size"], max(1, cache.get("num_sharing", 1))
        caps[f"L{lvl}"] = size * th if share == 1 else size
    for lvl in ("L1", "L2", "L3"):
        if lvl in caps and bytes_per_call <= caps[lvl]:
            return lvl
    return "DRAM"


def roof_of(name, b, t_ms, ctx, peaks):
    """(intensity, achieved, bound, limiter, pct) for a benchmark with roofline counters, or None.
    achieved and bound in ops/s; the bound is min(peak compute, bandwidth x intensity) with the
    bandwidth of the memory level that holds the call's working set."""
    ops, nbytes = b.get("ops_per_call"), b.get("bytes_per_call")
    if not ops or not nbytes or not t_ms:
        return None
    th = thread_count(name)
    peak = at_threads(peaks.get("DotS8" if b.get("int8_ops") else "FmaF32"), th)
    level = memory_level(ctx, nbytes, th)
    bw = at_threads(peaks.get(f"Read/{level}"), th)
    if peak is None or bw is None:
        return None
    intensity = ops / nbytes
    achieved = ops / (t_ms * 1e-3)
    bound, limiter = min((peak, "compute"), (bw * intensity, level))
    return intensity, achieved, bound, limiter, 100.0 * achieved / bound


def g(v):
    return f"{v / 1e9:.1f}" if v < 1e10 else f"{v / 1e9:.0f}"


def roofline_section(ctx, t, c):
    peaks = roofs(c)
    if not peaks.get("FmaF32"):
        return ""
    ths = sorted({th for s in peaks.values() for th in s})
    head = "| roof | " + " | ".join(f"{th} thread{'s' if th > 1 else ''}" for th in ths) + " |"
    rows = []
    for kind, what, unit in [("FmaF32", "FP32 FMA", "GFLOP/s"), ("DotS8", f"INT8 dot ({c.get('BM_RooflineDotS8/threads:1', {}).get('label', '').split(';')[0]})", "GOP/s"),
                             ("Read/L1", "read, L1-sized buffer", "GB/s"), ("Read/L2", "read, L2-sized buffer", "GB/s"),
                             ("Read/L3", "read, L3-sized buffer", "GB/s"), ("Read/DRAM", "read, DRAM (32x LLC)", "GB/s"),
                             ("Copy/DRAM", "copy, DRAM (STREAM bytes)", "GB/s"),
                             ("Triad/DRAM", "triad, DRAM (STREAM bytes)", "GB/s")]:
        s = peaks.get(kind)
        if s:
            rows.append(f"| {what} {unit} | " + " | ".join(g(s[th]) if th in s else "-" for th in ths) + " |")
    out = ("Peaks measured by `BM_Roofline*` in the same run, best of 3 (register-resident FMA and `vpdpbusd` chains; "
           "streaming reads of buffers sized for each memory level):\n\n" + head + "\n" +
           "|" + " --- |" * (len(ths) + 1) + "\n" + "\n".join(rows) + "\n")
    fma1, dram1 = at_threads(peaks["FmaF32"], 1), at_threads(peaks.get("Read/DRAM"), 1)
    if fma1 and dram1:
        out += (f"\nRidge point (1 thread): {fma1 / dram1:.1f} FLOP per DRAM byte for FP32"
                + (f", {at_threads(peaks['DotS8'], 1) / dram1:.1f} int8 ops per byte" if peaks.get("DotS8") else "")
                + ". Below it a kernel is bound by memory.\n")

    res = {}
    for name, b in c.items():
        r = roof_of(name, b, t.get(name), ctx, peaks)
        if r:
            res[name] = r

    def cell(name):
        r = res.get(name)
        if not r:
            return "-"
        lim = {"compute": "C"}.get(r[3], r[3])
        return f"{r[4]:.0f}% {lim}"

    # Linear layers, compact: one row per shape and thread count.
    lin = []
    for name in sorted(t, key=lambda n: (n.split("/")[2] if n.count("/") >= 2 else "", n)):
        m = re.match(r"BM_Linear/eigen_f32/(\S+)/threads:(\d+)$", name)
        if not m:
            continue
        shape, th = m.groups()
        sfx = f"/{shape}/threads:{th}"
        i32, i8 = res.get("BM_Linear/dense_f32" + sfx), res.get("BM_Linear/dense_i8" + sfx)
        lin.append(f"| {shape} | {th} | {i32[0]:.1f} | {i8[0]:.1f} | " if i32 and i8 else f"| {shape} | {th} | - | - | ")
        lin[-1] += " | ".join(cell(f"BM_Linear/{f}{sfx}") for f in ("eigen_f32", "dense_f32", "dense_i8", "dense_i8_lut")) + " |"
    if lin:
        out += ("\nPercent of roof of the linear layers: achieved / min(peak compute, bandwidth x intensity), where "
                "intensity = ops per call / (weight bytes + float input and output bytes) and the bandwidth is that of "
                "the smallest memory level holding those bytes; the letter says which roof binds (C: compute).\n\n"
                "| M x K x N | threads | FP32 ops/B | INT8 ops/B | eigen_f32 | dense_f32 | dense_i8 | dense_i8_lut |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(lin) + "\n")
    # Attention: one row per shape.
    att = []
    keys = sorted({m.group(1) for n in t for m in [re.match(r"BM_Attention/[\w@]+/(E\d+/H\d+/L\d+/threads:\d+)$", n)] if m},
                  key=lambda k: (k.split("/")[1], int(k.split("/")[2][1:]), k))
    for k in keys:
        cells = [cell(f"BM_Attention/{v}/{k}") for v in ("naive", "streaming", "gated_output", "gated_head@skip0",
                                                          "gated_head@skip50", "gated_head@skip75")]
        if any(x != "-" for x in cells):
            att.append(f"| {k.replace('/', ' ')} | " + " | ".join(cells) + " |")
    for name in sorted(n for n in res if n.startswith("BM_AttentionDecode/")):
        att.append(f"| decode {name.split('/', 1)[1].replace('/', ' ')} | - | - | {cell(name)} | - | - | - |")
    if att:
        out += ("\nPercent of roof of attention (FP32; FLOPs of the products actually done, skipped heads not counted; "
                "decode rows: the whole module for one token over a KV cache):\n\n"
                "| shape | naive | streaming | gated_output / decode | head skip 0% | skip 50% | skip 75% |\n"
                "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(att) + "\n")
    # Every kernel benchmark, one row each.
    full = []
    for name in sorted(res, key=lambda n: (n.split("/")[0], thread_count(n), n)):
        inten, ach, bound, lim, pct = res[name]
        unit = "GOP/s" if c[name].get("int8_ops") else "GFLOP/s"
        full.append(f"| {name} | {inten:.2f} | {g(ach)} {unit} | {g(bound)} ({lim}) | {pct:.0f}% |")
    if full:
        out += ("\n<details><summary>Every kernel benchmark: intensity, achieved rate, bound and % of roof</summary>\n\n"
                "| benchmark | ops/byte | achieved | bound (binding roof) | % of roof |\n| --- | --- | --- | --- | --- |\n" +
                "\n".join(full) + "\n\nThe memory roofs are read bandwidths of a loop that adds what it loads, so on a "
                "core that issues one 512-bit add per cycle the L1 roof is that add rate, below the load ports' limit. "
                "A working set just above a cache's size still partly hits it, which can put a kernel above its DRAM "
                "roof. Exp and softmax in attention are not counted as FLOPs.\n\n</details>\n")
    return out


def model_table(t, c):
    """BM_ModelDecode: the shipped demo models decoding one token at a time, each variant
    against fp32_dense at the same thread count (median runs of interleaved repetitions)."""
    names = {"fp32_dense": "FP32 dense (baseline)", "fp32_sparse70": "FP32 group-sparse 70%",
             "int8_dense": "INT8 dense", "int8_sparse70": "INT8 + group-sparse 70%",
             "int8_sparse70_int8head": "INT8 + group-sparse 70%, INT8 head",
             "int8_sparse70_int8head_i8kv": "INT8 + group-sparse 70%, INT8 head and KV cache"}
    threads = sorted({int(m.group(1)) for n in t for m in [re.match(r"BM_ModelDecode/\w+/threads:(\d+)$", n)] if m})
    if not threads:
        return ""
    out = ("| variant | " + " | ".join(f"{th} thread{'s' if th > 1 else ''}: ms/token | vs FP32 dense" for th in threads)
           + " |\n|---|" + "---|---|" * len(threads) + "\n")
    for key, label in names.items():
        cells = []
        for th in threads:
            v, base = t.get(f"BM_ModelDecode/{key}/threads:{th}"), t.get(f"BM_ModelDecode/fp32_dense/threads:{th}")
            per = c.get(f"BM_ModelDecode/{key}/threads:{th}", {}).get("ms_per_token")
            bper = c.get(f"BM_ModelDecode/fp32_dense/threads:{th}", {}).get("ms_per_token")
            cells += [f"{per:.3f}" if per else "-", f"{bper / per:.2f}x" if per and bper else "-"]
        if any(x != "-" for x in cells):
            out += f"| {label} | " + " | ".join(cells) + " |\n"
    return out + ("\nEach run decodes the 64 held-out bytes after a 128-byte prompt (positions 128-191); "
                  "the prompt's prefill is not timed (`bench/model_bench.cpp`).\n")


def main():
    ctx, t, c, runs = load(sys.argv[1])
    model = f"{ctx['cpu_model']}, " if ctx.get("cpu_model") else ""
    loadavg = ctx.get("load_avg") or []
    busy = f"; load average {loadavg[0]:.2f} at start" if loadavg else ""
    print(f"Machine: {model}{ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz{busy}; "
          f"{ctx.get('dynasparse', '')}; Google Benchmark, `real_time`.\n")
    for prefix, what in (("BM_Linear/", "The linear layers"), ("BM_ModelDecode/", "The demo models' decoding")):
        if any(n > 1 for name, n in runs.items() if name.startswith(prefix)):
            reps = max(n for name, n in runs.items() if name.startswith(prefix))
            print(f"{what} ran {reps} repetitions each in random interleaved order; each is reported by its "
                  "median run (the lower middle one for an even count).\n")
    if ctx.get("notes"):
        # Set when part of the run was measured again (its benchmarks merged into the JSON).
        print(ctx["notes"] + "\n")
    for title, table in [("SIMD primitives", simd_table(t)), ("Linear layers", linear_table(t, c)),
                         ("Group sparsity", sparse_table(t, c)), ("Block shapes", block_table(t)),
                         ("Attention", attention_table(t, c)), ("Decoding the demo models", model_table(t, c)),
                         ("Parallel", parallel_table(t, c)),
                         ("Roofline", roofline_section(ctx, t, c))]:
        if table:
            print(f"#### {title}\n\n{table}")


if __name__ == "__main__":
    main()
