#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes tests/data/model/*.safetensors: small random-weight models with golden logits.

Run from the repository root with Debian's PyTorch (python3-torch):
    /usr/bin/python3 examples/python/make_model_goldens.py [name ...]
(names: only those files; default: all). Each file holds the model (state_dict +
"dynasparse.config") plus `golden.tokens` (I32 [L]) and `golden.logits` (F32 [L, vocab], or
[L, num_classes] for a classifier) computed by model.py; a classifier also gets
`golden.class_logits` (F32 [num_classes], Model.classify). CI only reads the files.
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
    # Rotary positions, RMSNorm, element-wise head gate, causal decoder (no pos_embed).
    "tiny_rotary": default_config(hidden=32, heads=4, ffn=64, layers=2, max_seq_len=16, positions="rotary",
                                  norm="rmsnorm", norm_eps=1e-6, gate_granularity="elementwise"),
    # Encoder with rotary positions (a non-default base) and the seed's output gate, classifier
    # head of 5 classes pooled by the mean over tokens.
    "tiny_rotary_classifier": default_config(hidden=32, heads=0, ffn=48, layers=2, max_seq_len=16,
                                             positions="rotary", rope_base=500.0, gate="output",
                                             gate_granularity="elementwise", causal=False, num_classes=5),
}


def main(names):
    unknown = set(names) - set(CASES)
    if unknown:
        sys.exit("unknown case(s): " + ", ".join(sorted(unknown)))
    os.makedirs(OUT, exist_ok=True)
    # Seeds follow the sorted position among all cases, so writing a subset gives the same files.
    for i, (name, cfg) in enumerate(sorted(CASES.items())):
        if names and name not in names:
            continue
        torch.manual_seed(100 + i)
        model = init_(Model(cfg), seed=200 + i).eval()
        tokens = torch.randint(0, cfg["vocab"], (11,), generator=torch.Generator().manual_seed(300 + i))
        with torch.no_grad():
            logits = model(tokens)
            extra = {"golden.tokens": tokens.to(torch.int32), "golden.logits": logits}
            if cfg["num_classes"]:
                extra["golden.class_logits"] = model.classify(tokens)
        save_model(model, os.path.join(OUT, name + ".safetensors"), extra=extra)
        print(name, tuple(logits.shape), float(logits.abs().max()))


if __name__ == "__main__":
    main(sys.argv[1:])
