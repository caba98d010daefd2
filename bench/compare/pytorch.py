#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""dynasparse against PyTorch on the same weights and thread count.

Usage (from the repository root, after building the default preset):
    /usr/bin/python3 bench/compare/pytorch.py [--threads 1] [--layers 1] [--prefill 128]
Needs Debian's python3-torch and numpy. Builds the reference model of examples/python
(hidden 512, 8 heads, FFN 2048, head-gated attention), exports it, checks that dynasparse's
logits match PyTorch's, then times prefill in both (best of several runs) and prints them
side by side, with PyTorch's nn.TransformerEncoderLayer (same shapes) as a second baseline.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
from export import save_model  # noqa: E402
from model import Model, default_config, init_  # noqa: E402

CLI = os.path.join(ROOT, "build", "default", "examples", "dynasparse")


def best_of(fn, reps=7):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cli(*args):
    out = subprocess.run([CLI, *args], check=True, capture_output=True, text=True)
    return out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--prefill", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = default_config(hidden=512, heads=8, ffn=2048, layers=args.layers, max_seq_len=1024, vocab=256)
    model = init_(Model(cfg), seed=1).eval()
    tokens = torch.randint(0, 256, (args.prefill,), generator=torch.Generator().manual_seed(2))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cmp.safetensors")
        save_model(model, path)
        np.save(os.path.join(tmp, "tokens.npy"), tokens.numpy().astype(np.int64))
        cli("run", path, "--tokens", os.path.join(tmp, "tokens.npy"), "-o", os.path.join(tmp, "logits.npy"))
        ours = np.load(os.path.join(tmp, "logits.npy"))
        with torch.no_grad():
            ref = model(tokens).numpy()
        rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
        print(f"logits agree: max |dynasparse - PyTorch| / max |PyTorch| = {rel:.2e}")
        if rel > 1e-4:
            sys.exit("dynasparse and PyTorch disagree")
        # INT8 variant: every linear of every block in dense_i8.
        cfg8 = dict(cfg)
        cfg8["formats"] = {}
        for i in range(args.layers):
            p = f"layers.{i}."
            for name in ("attn.attention.q_proj", "attn.attention.k_proj", "attn.attention.v_proj",
                         "attn.attention.out_proj", "ffn.up", "ffn.down"):
                cfg8["formats"][p + name] = "dense_i8"
        model.cfg = cfg8
        path8 = os.path.join(tmp, "cmp_i8.safetensors")
        save_model(model, path8)
        model.cfg = cfg
        res = {}
        for name, p in (("fp32", path), ("int8", path8)):
            out = json.loads(cli("bench", p, "--prefill", str(args.prefill), "--decode", "32",
                                 "--threads", str(args.threads), "--json"))
            res[name] = out
    with torch.no_grad():
        t_ref = best_of(lambda: model(tokens))
        enc = torch.nn.TransformerEncoderLayer(512, 8, 2048, dropout=0.0).eval()
        x = torch.randn(args.prefill, 1, 512)
        t_enc = best_of(lambda: [enc(x) for _ in range(args.layers)])
    ours32 = args.prefill / res["fp32"]["prefill_tokens_per_s"]
    ours8 = args.prefill / res["int8"]["prefill_tokens_per_s"]
    print(f"prefill of {args.prefill} tokens, {args.layers} block(s), {args.threads} thread(s); torch {torch.__version__}")
    print(f"  PyTorch reference model (fp32)        {t_ref * 1e3:8.2f} ms")
    print(f"  PyTorch nn.TransformerEncoderLayer    {t_enc * 1e3:8.2f} ms  (no gate, same shapes)")
    print(f"  dynasparse fp32                       {ours32 * 1e3:8.2f} ms  ({t_ref / ours32:.1f}x the reference, "
          f"{t_enc / ours32:.1f}x the encoder layer)")
    print(f"  dynasparse int8 (W8A8 linears)        {ours8 * 1e3:8.2f} ms  ({t_ref / ours8:.1f}x the reference, "
          f"{t_enc / ours8:.1f}x the encoder layer)")
    print(f"  dynasparse decode (KV cache): fp32 {res['fp32']['decode_ms_per_token']:.3f} ms/token, "
          f"int8 {res['int8']['decode_ms_per_token']:.3f} ms/token")


if __name__ == "__main__":
    main()
