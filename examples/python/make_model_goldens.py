#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes tests/data/model/*.safetensors: two small random-weight models with golden logits.

Run from the repository root with Debian's PyTorch (python3-torch):
    /usr/bin/python3 examples/python/make_model_goldens.py
Each file holds the model (state_dict + "dynasparse.config") plus `golden.tokens` (I32 [L])
and `golden.logits` (F32 [L, vocab]) computed by model.py. CI only reads the files.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import save_model  # noqa: E402
from model import Model, default_config, init_  # noqa: E402

OUT = os.path.join("tests", "data", "model")

CASES = {
    # Head-gated (head-wise), LayerNorm, GELU, causal decoder, tied head.
    "tiny_head_gate": default_config(hidden=32, heads=4, ffn=64, layers=2, max_seq_len=16),
    # The seed's output gate, RMSNorm, SiLU, untied head, bidirectional encoder.
    "tiny_output_gate": default_config(hidden=32, heads=0, ffn=48, layers=2, max_seq_len=16, gate="output",
                                       gate_granularity="elementwise", norm="rmsnorm", norm_eps=1e-6,
                                       activation="silu", tied_lm_head=False, causal=False),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (name, cfg) in enumerate(sorted(CASES.items())):
        torch.manual_seed(100 + i)
        model = init_(Model(cfg), seed=200 + i).eval()
        tokens = torch.randint(0, cfg["vocab"], (11,), generator=torch.Generator().manual_seed(300 + i))
        with torch.no_grad():
            logits = model(tokens)
        save_model(model, os.path.join(OUT, name + ".safetensors"),
                   extra={"golden.tokens": tokens.to(torch.int32), "golden.logits": logits})
        print(name, tuple(logits.shape), float(logits.abs().max()))


if __name__ == "__main__":
    main()
