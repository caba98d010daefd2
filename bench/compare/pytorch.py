#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""dynasparse against PyTorch on the same weights and thread count.

Usage (from the repository root, after building the default preset):
    /usr/bin/python3 bench/compare/pytorch.py [--threads 1] [--layers 1] [--prefill 128] [--context 512]
Needs Debian's python3-torch and numpy. Builds the reference model of examples/python
(hidden 512, 8 heads, FFN 2048, head-gated attention), exports it, checks that dynasparse's
logits match PyTorch's, then times prefill and decode in both and prints them side by side,
with PyTorch's nn.TransformerEncoderLayer (same shapes) as a second prefill baseline. Every
figure is the median over 15 runs of the best of 3 calls (`dynasparse bench --repeat 3` is
one run of ours), the runs alternating between the two libraries so that both see the same load.
Decode at context C (default 512): the time per token of 64 consecutive decode steps at
positions C - 31 .. C + 32, after C - 32 prefilled tokens; the cost of attending to the cache
grows linearly with the position, so their mean is the cost at context C (plus half a token).
The reference module has no KV cache, so CachedDecoder below runs the same block math one
token at a time over a preallocated cache; it is checked against the module's full forward
pass before it is timed (`dynasparse bench --prefill <C - 32> --decode 64` on our side).
These are steady steps: the first step after a prefill is several times slower in
dynasparse (measured: `--prefill 511 --decode 1`), most likely because the prefill's
activations pushed weights out of the caches, so one step per prefill would mostly time that.
INT8: PyTorch's dynamic quantization (torch.ao.quantization.quantize_dynamic on nn.Linear,
with the first quantized engine the build has; the script says so when it has none) next to
`dynasparse quantize` (FFN only, the same scope, and every linear layer); both INT8 outputs
are checked against the FP32 logits. Ends with a Markdown table of all rows.
"""
import argparse
import copy
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
from export import save_model  # noqa: E402
from model import Model, default_config, init_  # noqa: E402

CLI = os.path.join(ROOT, "build", "default", "examples", "dynasparse")


def best_of(fn, reps=3):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# dynasparse's INT8 logits may differ from FP32 by this fraction of the largest |FP32 logit|.
# Per-channel weights and per-row dynamic activations each round to 1/254 of their range;
# through the block's linears and LayerNorms that gives 2-3e-2 on this model (PyTorch's
# dynamic INT8: ~4e-2), so 5e-2 catches a wrong scale or a sign error (errors of order 1)
# without failing on rounding. PyTorch beyond it is reported, not fatal: not ours to fix.
INT8_MAX_ERROR = 5e-2


def int8_error(logits, ref):
    """(max |logits - ref| / max |ref|, fraction of positions with the same argmax)."""
    err = float(np.abs(logits - ref).max() / np.abs(ref).max())
    return err, float((logits.argmax(-1) == ref.argmax(-1)).mean())


def pick_quantized_engine():
    """The first of PyTorch's x86/ARM INT8 engines this build has, or None."""
    engines = torch.backends.quantized.supported_engines
    return next((e for e in ("x86", "fbgemm", "onednn", "qnnpack") if e in engines), None)


# The cached decode step must reproduce the module's full forward pass to this fraction of the
# largest |logit| (FP32; it differs only in the order of the sums).
DECODE_MAX_ERROR = 1e-5
# Runs of each measurement (each the best of 3 calls), whose median is reported.
RUNS = 15
# Decode steps timed together, centred on the context length.
DECODE_WINDOW = 64


class CachedDecoder:
    """model.py's Model, one token at a time with a KV cache: for every block the new token's
    q, k and v from the packed in_proj, k and v written into a preallocated [H, max_len, d]
    cache, one query's attention over the cache (no mask needed: the cache holds only the
    past), the gate (head: per head or per feature before out_proj; output: after it),
    out_proj, the residuals, norm2 and the FFN; then norm_f and the tied or separate head.

    rows=False: the token is a vector [E] and every linear layer a matrix-vector product
    (torch.addmv), PyTorch's fastest one-token path here (a one-row addmm through OpenBLAS
    takes 2-4x longer). rows=True: a row [1, E] through the model's own Linear modules, as
    batched code runs them; needed for a dynamically quantized copy of the model, whose INT8
    Linear modules take no vector."""

    def __init__(self, model, max_len, rows=False):
        self.model, self.cfg, self.rows = model, model.cfg, rows
        assert self.cfg["skip_threshold"] == 0.0, "CachedDecoder computes every head (tau = 0)"
        e, h = self.cfg["hidden"], self.cfg["heads"]
        self.h, self.d = h, e // h
        self.k = [torch.zeros(h, max_len, self.d) for _ in model.layers]
        self.v = [torch.zeros(h, max_len, self.d) for _ in model.layers]

    def linear(self, x, module=None, weight=None, bias=None):
        if module is not None and self.rows:
            return module(x)
        if module is not None:
            weight, bias = module.weight, module.bias
        if self.rows:
            return F.linear(x, weight, bias)
        return torch.addmv(bias, weight, x) if bias is not None else torch.mv(weight, x)

    def step(self, token, pos):
        """Logits [vocab] of `token` at position `pos`; the cache must hold positions < pos."""
        m, h, d = self.model, self.h, self.d
        x = m.embed.weight[token] + m.pos_embed.weight[pos]
        if self.rows:
            x = x.unsqueeze(0)
        for i, block in enumerate(m.layers):
            n = block.norm1(x)
            mha = block.attn.attention
            q, k, v = self.linear(n, weight=mha.in_proj_weight, bias=mha.in_proj_bias).view(3, h, d)
            self.k[i][:, pos] = k
            self.v[i][:, pos] = v
            keys, values = self.k[i][:, :pos + 1], self.v[i][:, :pos + 1]  # [H, pos+1, d]
            scores = torch.bmm((q / math.sqrt(d)).unsqueeze(1), keys.transpose(1, 2))  # [H, 1, pos+1]
            o = torch.bmm(torch.softmax(scores, dim=-1), values).view(h, d)
            gate = self.cfg["gate"]
            if gate == "head":
                g = torch.sigmoid(self.linear(n, block.attn.gate[0]))
                o = o * g.view(h, 1 if self.cfg["gate_granularity"] == "headwise" else d)
            a = self.linear(o.reshape(x.shape), mha.out_proj)
            if gate == "output":
                a = a * torch.sigmoid(self.linear(n, block.attn.gate[0]))
            x = x + a
            ffn = block.ffn
            x = x + self.linear(ffn.act(self.linear(block.norm2(x), ffn.up)), ffn.down)
        x = m.norm_f(x)
        head = m.embed.weight if self.cfg["tied_lm_head"] else m.lm_head.weight
        return self.linear(x, weight=head).reshape(-1)

    def fill(self, tokens):
        """Runs tokens[0 .. n-1] at positions 0 .. n-1; returns their logits [n, vocab]."""
        return torch.stack([self.step(int(t), p) for p, t in enumerate(tokens)])


def set_blas_threads(n):
    """Debian's PyTorch calls the system BLAS (OpenBLAS through libblas.so.3), whose own thread
    pool ignores torch.set_num_threads and starts one thread per core: set it too. Returns
    what the BLAS is, for the report."""
    try:
        lib = ctypes.CDLL("libblas.so.3")
    except OSError:
        return "BLAS unknown"
    if not hasattr(lib, "openblas_set_num_threads"):
        return "BLAS not OpenBLAS"
    lib.openblas_set_num_threads(n)
    return f"OpenBLAS at {lib.openblas_get_num_threads()} thread(s)"


# OpenBLAS's idle workers spin for about 2^28 cycles (0.1 s here) after each call before they
# sleep. With several threads they would hold a core while our CLI runs right after a PyTorch
# call, so the CLI starts only once they sleep. (OPENBLAS_THREAD_TIMEOUT would stop the spin,
# but it also makes PyTorch wake its workers on every call, which slows it at 2 threads.)
BLAS_SPIN_S = 0.3


def cli(*args):
    time.sleep(BLAS_SPIN_S)
    out = subprocess.run([CLI, *args], check=True, capture_output=True, text=True)
    return out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--context", type=int, default=512,
                    help=f"decode {DECODE_WINDOW} tokens centred on this position (1-based)")
    args = ap.parse_args()
    # PyTorch's threads go to its BLAS, which runs its matrix products. With torch's own
    # intra-op threads above 1, OpenBLAS runs each call on one thread: here four rounds of a
    # 128-row block's GEMMs took 35.7 ms at torch.set_num_threads(2) and 18.3 ms at 1 (BLAS
    # at 2 threads in both; 37.3 ms with both at 1).
    torch.set_num_threads(1)
    blas = set_blas_threads(args.threads)
    if not blas.startswith("OpenBLAS"):
        # The reference BLAS that python3-torch alone pulls in is ~20x slower here (449 ms
        # for the 128-token FP32 prefill): a comparison against it would mislead.
        sys.exit(f"pytorch.py: {blas}; install OpenBLAS (scripts/install-deps.sh python)")
    cfg = default_config(hidden=512, heads=8, ffn=2048, layers=args.layers, max_seq_len=1024, vocab=256)
    model = init_(Model(cfg), seed=1).eval()
    tokens = torch.randint(0, 256, (args.prefill,), generator=torch.Generator().manual_seed(2))
    first = args.context - DECODE_WINDOW // 2  # 0-based position of the first decoded token
    context_tokens = torch.randint(0, 256, (first + DECODE_WINDOW,), generator=torch.Generator().manual_seed(3))
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = os.path.join(tmp, "cmp.safetensors")
        save_model(model, path)
        np.save(os.path.join(tmp, "tokens.npy"), tokens.numpy().astype(np.int64))
        cli("run", path, "--tokens", os.path.join(tmp, "tokens.npy"), "-o", os.path.join(tmp, "logits.npy"))
        ours = np.load(os.path.join(tmp, "logits.npy"))
        ref = model(tokens).numpy()
        rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
        if rel > 1e-4:
            sys.exit("dynasparse and PyTorch disagree")
        # INT8: `dynasparse quantize` (per-channel max-abs weights, dynamic per-row activations)
        # over the FFN only (the scope of PyTorch's dynamic quantization, see below) and over
        # every linear layer.
        paths = {"fp32": path}
        for scope in ("ffn", "all"):
            paths["int8_" + scope] = os.path.join(tmp, f"cmp_i8_{scope}.safetensors")
            cli("quantize", path, "-o", paths["int8_" + scope], "--layers", scope)
        errors = {}
        for name, p in paths.items():
            if name != "fp32":
                cli("run", p, "--tokens", os.path.join(tmp, "tokens.npy"), "-o", os.path.join(tmp, "logits8.npy"))
                errors[name] = int8_error(np.load(os.path.join(tmp, "logits8.npy")), ref)
        # The cached steps against the full forward pass over the same tokens, at every position.
        full = model(context_tokens).numpy()
        max_len = len(context_tokens)
        decoders = {"torch_fp32": CachedDecoder(model, max_len),
                    "torch_fp32_rows": CachedDecoder(model, max_len, rows=True)}
        decode_err = max(float(np.abs(d.fill(context_tokens).numpy() - full).max() / np.abs(full).max())
                         for d in decoders.values())
        if decode_err > DECODE_MAX_ERROR:
            sys.exit(f"CachedDecoder disagrees with the reference module: {decode_err:.2e} > {DECODE_MAX_ERROR}")
        engine = pick_quantized_engine()
        enc = torch.nn.TransformerEncoderLayer(512, 8, 2048, dropout=0.0).eval()
        x = torch.randn(args.prefill, 1, 512)
        prefills = {"torch_fp32": lambda: model(tokens), "torch_enc": lambda: [enc(x) for _ in range(args.layers)]}
        qscope = None
        if engine:
            # Dynamic INT8 replaces the nn.Linear modules: FFN up/down and the head gate.
            # nn.MultiheadAttention's projections are not nn.Linear modules (in_proj is a bare
            # parameter, out_proj a NonDynamicallyQuantizableLinear), so attention stays FP32.
            torch.backends.quantized.engine = engine
            qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
            qnames = [n for n, m in qmodel.named_modules()
                      if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
            qscope = ", ".join(sorted({n.split(".", 2)[-1] for n in qnames})) or "nothing"
            errors["torch_int8"] = int8_error(qmodel(tokens).numpy(), ref)
            prefills["torch_int8"] = lambda: qmodel(tokens)
            # Its decode through the same cached step (dynamic INT8 scales each call's
            # activations, so one row at a time is not bit-identical to the full pass: it is
            # checked against the FP32 logits instead).
            decoders["torch_int8"] = CachedDecoder(qmodel, max_len, rows=True)
            errors["torch_int8_decode"] = int8_error(decoders["torch_int8"].fill(context_tokens).numpy(), full)
        # Prefill, then decode: each run times every model once in each library (ours through
        # `dynasparse bench`, best of 3; PyTorch's best of 3 calls, a decode call being a pass
        # over the window's positions that rewrites the cache entries it appends).
        runs = {name: [] for name in [*paths, *prefills]}
        for _ in range(RUNS):
            for name, p in paths.items():
                r = json.loads(cli("bench", p, "--prefill", str(args.prefill), "--decode", "0", "--threads",
                                   str(args.threads), "--repeat", "3", "--json"))
                runs[name].append(args.prefill / r["prefill_tokens_per_s_best"])
            for name, fn in prefills.items():
                runs[name].append(best_of(fn, 3))
        prefill_s = {name: float(np.median(r)) for name, r in runs.items()}
        window = [(int(context_tokens[p]), p) for p in range(first, first + DECODE_WINDOW)]

        def decode_window(d):
            for token, p in window:
                d.step(token, p)

        runs = {name: [] for name in [*paths, *decoders]}
        for _ in range(RUNS):
            for name, p in paths.items():
                runs[name].append(json.loads(cli("bench", p, "--prefill", str(first), "--decode", str(DECODE_WINDOW),
                                                 "--threads", str(args.threads), "--repeat", "3",
                                                 "--json"))["decode_ms_per_token_best"] / 1e3)
            for name, d in decoders.items():
                runs[name].append(best_of(lambda: decode_window(d), 3) / DECODE_WINDOW)
        # For reference: PyTorch's single step at position `context` alone, repeated.
        one_step = float(np.median([best_of(lambda: decoders["torch_fp32"].step(*window[DECODE_WINDOW // 2 - 1]), 3)
                                    for _ in range(RUNS)]))
        decode_s = {name: float(np.median(r)) for name, r in runs.items()}
    print(f"prefill of {args.prefill} tokens, decode of {DECODE_WINDOW} tokens centred on context {args.context}, "
          f"{args.layers} block(s), "
          f"{args.threads} thread(s); torch {torch.__version__} ({blas}), "
          f"quantized engines {torch.backends.quantized.supported_engines}")
    print(f"FP32 logits agree: max |dynasparse - PyTorch| / max |PyTorch| = {rel:.2e}")
    print(f"PyTorch cached decode vs the module's full forward over {len(context_tokens)} tokens: "
          f"max |diff| / max |logit| = {decode_err:.2e}")
    print(f"PyTorch FP32, one step at position {args.context} repeated: {one_step * 1e3:.3f} ms "
          f"(the window's mean: {decode_s['torch_fp32'] * 1e3:.3f} ms)")
    for name, (err, top1) in errors.items():
        print(f"INT8 vs FP32 logits, {name}: max |int8 - fp32| / max |fp32| = {err:.2e}, same top-1 token at "
              f"{top1 * 100:.1f}% of positions")
    if not engine:
        print("PyTorch dynamic INT8: not measured, this torch build has no quantized engine "
              f"(supported_engines = {torch.backends.quantized.supported_engines})")
    # (label, prefill s, decode s or None, INT8 error or None)
    t_ref, t_dec = prefill_s["torch_fp32"], decode_s["torch_fp32"]
    rows = [("PyTorch reference model, FP32 (decode: matrix-vector products)", t_ref, t_dec, None),
            ("PyTorch reference model, FP32 (decode: [1, E] rows through nn.Linear)", None, decode_s["torch_fp32_rows"],
             None),
            ("PyTorch nn.TransformerEncoderLayer, FP32 (no gate, same shapes)", prefill_s["torch_enc"], None, None)]
    if engine:
        rows.append((f"PyTorch dynamic INT8 ({engine}; {qscope})", prefill_s["torch_int8"], decode_s["torch_int8"],
                     errors["torch_int8"]))
    rows += [("dynasparse FP32", prefill_s["fp32"], decode_s["fp32"], None),
             ("dynasparse INT8, FFN (`quantize --layers ffn`)", prefill_s["int8_ffn"], decode_s["int8_ffn"],
              errors["int8_ffn"]),
             ("dynasparse INT8, every linear (`quantize --layers all`)", prefill_s["int8_all"], decode_s["int8_all"],
              errors["int8_all"])]
    print()
    print(f"| | prefill {args.prefill} ms | prefill vs PyTorch FP32 | decode ms at context {args.context} "
          "| decode vs PyTorch FP32 | INT8 logits error (max, top-1 agreement) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, t, dec_s, err in rows:
        dec_ms = f"{dec_s * 1e3:.3f}" if dec_s is not None else "-"
        dec_x = f"{t_dec / dec_s:.2f}x" if dec_s is not None else "-"
        err_s = f"{err[0]:.1e}, {err[1] * 100:.0f}%" if err else "-"
        pre_ms, pre_x = (f"{t * 1e3:.2f}", f"{t_ref / t:.2f}x") if t is not None else ("-", "-")
        print(f"| {label} | {pre_ms} | {pre_x} | {dec_ms} | {dec_x} | {err_s} |")
    if max(errors.get("torch_int8", (0, 1))[0], errors.get("torch_int8_decode", (0, 1))[0]) > INT8_MAX_ERROR:
        print(f"note: PyTorch's dynamic INT8 is further than {INT8_MAX_ERROR} from FP32")
    bad = {k: v for k, v in errors.items() if v[0] > INT8_MAX_ERROR and not k.startswith("torch_int8")}
    if bad:
        sys.exit(f"INT8 logits too far from FP32 (max relative error > {INT8_MAX_ERROR}): {bad}")


if __name__ == "__main__":
    main()
