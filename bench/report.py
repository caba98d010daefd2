#!/usr/bin/env python3
"""Turns dynasparse_bench JSON into README's performance tables (Markdown on stdout).

Usage: report.py BENCH.json
Every figure is a ratio against a baseline measured in the same run, so the tables stay
meaningful on a shared, noisy machine. Benchmarks missing from the JSON are left out.
"""
import json
import re
import sys


def load(path):
    with open(path) as f:
        data = json.load(f)
    t, counters = {}, {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        name = b["name"].replace("/real_time", "")
        unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        t[name] = b["real_time"] * unit  # milliseconds
        counters[name] = b
    return data.get("context", {}), t, counters


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
    for name in sorted(t, key=lambda n: (n.split("/")[2], n)):
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
    return ("| M x K x N | threads | eigen_f32 ms | dense_f32 ms (x eigen) | dense_i8 ms (x eigen) | "
            "dense_i8_lut ms (x eigen) | dense_i8 GOP/s |\n| --- | --- | --- | --- | --- | --- | --- |\n" +
            "\n".join(rows) + "\n")


def sparse_table(t):
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
    return ("Speed-up of 16x4 group-sparse layers over the dense layer of the same precision "
            "(dense_f32 or dense_i8), by fraction of blocks removed:\n\n"
            "| format | M x K x N | threads | dense ms | 0% | 30% | 50% | 70% | 90% |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")


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


def attention_table(t):
    pat = re.compile(r"BM_Attention/naive/(E\d+/H\d+/L\d+/threads:\d+)$")
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
        for skip in [25, 50, 75]:
            v = t.get(f"BM_Attention/gated_head@skip{skip}/{k}")
            cells.append(f"{s0 / v:.2f}x" if s0 and v else "-")
        rows.append("| " + " | ".join(cells) + " |")
    dec = []
    for ctx in [1024, 16384]:
        f = t.get(f"BM_AttentionDecode/f32kv/E512/H64/ctx{ctx}")
        q = t.get(f"BM_AttentionDecode/i8kv/E512/H64/ctx{ctx}")
        if f and q:
            dec.append(f"| {ctx} | {ms(f)} | {ms(q)} | {q / f:.2f}x |")
    out = ""
    if rows:
        out += ("| shape | naive ms | streaming ms | streaming speed-up | gated_output ms | head skip 25% | "
                "skip 50% | skip 75% (speed-up over skip 0%) |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n" +
                "\n".join(rows) + "\n")
    if dec:
        out += ("\nDecoding one token (E512, H64): FP32 vs INT8 KV cache\n\n| context | f32 KV ms | i8 KV ms | "
                "i8 / f32 time |\n| --- | --- | --- | --- |\n" + "\n".join(dec) + "\n")
    return out


def main():
    ctx, t, c = load(sys.argv[1])
    print(f"Machine: {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz; "
          f"{ctx.get('dynasparse', '')}; Google Benchmark, `real_time`.\n")
    for title, table in [("SIMD primitives", simd_table(t)), ("Linear layers", linear_table(t, c)),
                         ("Group sparsity", sparse_table(t)), ("Block shapes", block_table(t)),
                         ("Attention", attention_table(t))]:
        if table:
            print(f"#### {title}\n\n{table}")


if __name__ == "__main__":
    main()
