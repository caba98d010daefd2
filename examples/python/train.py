#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Trains the demo models shipped in examples/models: a causal byte-level language model of
dynasparse's architecture (head-position, head-wise gated attention; FFN) on the fortune
databases of Debian's `fortunes` package (BSD licence; examples/models/CORPUS.md).

    /usr/bin/python3 examples/python/train.py --mode sparse   # fortunes_sparse70.safetensors
    /usr/bin/python3 examples/python/train.py --mode dense    # fortunes_dense.safetensors

Both runs use the same data order, steps and seed; they differ only in the sparsity schedule
(the seed's, DIGEST §3.3):
  - steps [0, 10%): dense;
  - [10%, 70%): group-lasso on the 16x4 weight blocks of every linear layer but the head
    gates (q, k, v and out_proj of attention, up and down of the FFN; `--sparse-layers ffn`
    for the FFN only) with a coefficient growing linearly from 0, and magnitude pruning
    (smallest block L2 norms, each matrix on its own) at 30% of blocks, then +10% per round,
    up to the target (70%), rounds evenly spaced;
  - [70%, 100%): fine-tuning with the mask fixed, no penalty.
Both runs also carry a small L1 penalty on the head gates' sigmoid outputs (off for the
first 20% of steps, then ramped up over 30%), so that gates of heads a query does not need
move towards zero and dynasparse's tau can skip them.

The corpus is split by fortune (deterministic shuffle): 90% train, 10% held out. The held-out
text is written to examples/models/fortunes_heldout.txt; bits per byte are computed on it
exactly as `dynasparse eval` does (windows of max_seq_len overlapping by one byte).
Weights are saved as F16 (dynasparse widens them to float on load) to keep the files small.

Speed: where page faults are expensive (some virtual machines), glibc's allocator returning
each step's large tensors to the kernel can take most of the time. On the 2-core machine the
models were trained on, a step took about 7 s that way and about 1 s with jemalloc keeping
the memory, and one OpenBLAS thread:

    OPENBLAS_NUM_THREADS=1 MALLOC_CONF="dirty_decay_ms:-1,muzzy_decay_ms:-1,retain:true" \
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 \
        /usr/bin/python3 examples/python/train.py --mode sparse     # Debian: libjemalloc2
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export import save_model  # noqa: E402
from model import Model, default_config  # noqa: E402

FORTUNES = "/usr/share/games/fortunes"
BLOCK = (16, 4)  # rows (outputs) x cols (inputs): dynasparse's default LoadOptions::sparse_block


def load_corpus(seed):
    """Every fortune file (not the .dat indexes, not the offensive `off/` set), split by fortune."""
    items = []
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if name.endswith(".dat") or os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            items += [t.strip(b"\n") for t in f.read().split(b"\n%\n") if t.strip()]
    random.Random(seed).shuffle(items)
    n_eval = len(items) // 10
    sep = b"\n%\n"
    return sep.join(items[n_eval:]) + sep, sep.join(items[:n_eval]) + sep


def sparse_weights(model, which):
    """The matrices the schedule prunes: FFN up and down, and with which == "all" also q, k, v
    (row blocks of the packed in_proj_weight, as views) and out_proj of every layer. Taken
    afresh each step, since the slices are autograd views."""
    ws = [m.weight for b in model.layers for m in (b.ffn.up, b.ffn.down)]
    if which == "all":
        for b in model.layers:
            mha = b.attn.attention
            e = mha.embed_dim
            ws += [mha.in_proj_weight[i * e:(i + 1) * e] for i in range(3)] + [mha.out_proj.weight]
    return ws


def block_norms(w):
    r, c = BLOCK
    out, inp = w.shape
    # The epsilon keeps the gradient finite at pruned (all-zero) blocks.
    return (w.view(out // r, r, inp // c, c).pow(2).sum(dim=(1, 3)) + 1e-12).sqrt()


def prune(w, fraction):
    """Mask [out, in] (0/1 float) keeping the blocks of largest L2 norm; `fraction` of blocks dropped."""
    norms = block_norms(w.detach())
    k = int(round(fraction * norms.numel()))
    keep = torch.ones_like(norms)
    if k > 0:
        keep.view(-1)[norms.view(-1).argsort()[:k]] = 0
    r, c = BLOCK
    return keep.repeat_interleave(r, 0).repeat_interleave(c, 1)


def forward(model, tokens, gates=None):
    """tokens [N, L] -> logits [N, L, vocab]; appends each layer's gate outputs to `gates`."""
    n, length = tokens.shape
    x = model.embed(tokens) + model.pos_embed(torch.arange(length))
    x = x.transpose(0, 1)  # [L, N, E]
    mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    for block in model.layers:
        x = block(x, mask)
    x = model.norm_f(x.transpose(0, 1))
    return x @ model.embed.weight.t()


@torch.no_grad()
def bits_per_byte(model, data, window, max_bytes):
    ids = torch.tensor(list(data[:max_bytes]), dtype=torch.long)
    bits, scored, start = 0.0, 0, 0
    while start + 1 < len(ids):
        chunk = ids[start:start + window]
        logits = forward(model, chunk.unsqueeze(0))[0]
        nll = F.cross_entropy(logits[:-1], chunk[1:], reduction="sum")
        bits += float(nll) / math.log(2)
        scored += len(chunk) - 1
        start += window - 1
    return bits / scored


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["dense", "sparse"], required=True)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--target", type=float, default=0.7, help="fraction of blocks pruned in each sparse matrix")
    ap.add_argument("--sparse-layers", choices=["all", "ffn"], default="all",
                    help="the matrices pruned: every linear layer but the head gates, or the FFN only")
    ap.add_argument("--lasso", type=float, default=0.02, help="final group-lasso coefficient")
    ap.add_argument("--gate-l1", type=float, default=0.01, help="final L1 coefficient on head-gate outputs")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-bytes", type=int, default=65536)
    ap.add_argument("--out", default=os.path.join("examples", "models"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    train, held_out = load_corpus(args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fortunes_heldout.txt"), "wb") as f:
        f.write(held_out)
    cfg = default_config(hidden=256, layers=4, heads=32, ffn=512, max_seq_len=256, gate="head",
                         gate_granularity="headwise", skip_threshold=0.0)
    model = Model(cfg)
    with torch.no_grad():  # GPT-2 style small init keeps the residual stream tame early on
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
            elif name.endswith("bias"):
                p.zero_()
    gates = []
    for block in model.layers:
        block.attn.gate.register_forward_hook(lambda mod, inp, out: gates.append(out))

    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    other = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    steps, seq = args.steps, cfg["max_seq_len"]
    dense_end, prune_end = int(0.1 * steps), int(0.7 * steps)
    rounds = [0.3 + 0.1 * i for i in range(int(round((args.target - 0.3) / 0.1)) + 1)] if args.mode == "sparse" else []
    round_at = {dense_end + i * (prune_end - dense_end) // len(rounds): s for i, s in enumerate(rounds)}
    masks = None
    data = torch.tensor(list(train), dtype=torch.uint8)
    rng = torch.Generator().manual_seed(args.seed + 1)
    log, t0 = [], time.time()
    for step in range(steps):
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        if step in round_at:
            masks = [prune(w, round_at[step]) for w in sparse_weights(model, args.sparse_layers)]
        starts = torch.randint(0, len(data) - seq - 1, (args.batch,), generator=rng)
        batch = torch.stack([data[s:s + seq + 1] for s in starts]).long()
        gates.clear()
        logits = forward(model, batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg["vocab"]), batch[:, 1:].reshape(-1))
        # The gate penalty waits until attention has learned something (gates that close
        # before then starve attention of gradient), then ramps up over 30% of the steps.
        gate_coef = args.gate_l1 * min(1.0, max(0.0, (step - 0.2 * steps) / (0.3 * steps)))
        total = loss + gate_coef * torch.stack([g.mean() for g in gates]).mean()
        lasso = 0.0
        if args.mode == "sparse" and dense_end <= step < prune_end:
            lasso = args.lasso * (step - dense_end + 1) / (prune_end - dense_end)
            total = total + lasso * sum(block_norms(w).mean() for w in sparse_weights(model, args.sparse_layers))
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if masks is not None:
            with torch.no_grad():
                for w, m in zip(sparse_weights(model, args.sparse_layers), masks):
                    w.mul_(m)
        if step % 50 == 0 or step == steps - 1:
            gate_mean = float(torch.stack([g.mean() for g in gates]).mean())
            sparsity = 0.0 if masks is None else float(1 - sum(m.sum() for m in masks) / sum(m.numel() for m in masks))
            row = {"step": step, "loss_bits": float(loss) / math.log(2), "lr": lr, "lasso": lasso, "gate_l1": gate_coef,
                   "block_sparsity": sparsity, "gate_mean": gate_mean, "seconds": time.time() - t0}
            log.append(row)
            print(json.dumps(row), flush=True)

    model.eval()
    bpb = bits_per_byte(model, held_out, seq, args.eval_bytes)
    name = "fortunes_dense" if args.mode == "dense" else "fortunes_sparse%d" % round(100 * args.target)
    if args.mode == "sparse":
        names = ["ffn.up", "ffn.down"]
        if args.sparse_layers == "all":
            names += ["attn.attention.%s_proj" % p for p in ("q", "k", "v", "out")]
        model.cfg["formats"] = {"layers.%d.%s" % (i, n): "gsparse_f32" for i in range(cfg["layers"]) for n in names}
    save_model(model, os.path.join(args.out, name + ".safetensors"), dtype=torch.float16)
    summary = {"name": name, "args": vars(args), "config": model.cfg, "held_out_bits_per_byte": bpb,
               "held_out_bytes_scored": min(len(held_out), args.eval_bytes), "train_bytes": len(train),
               "held_out_bytes": len(held_out), "seconds": time.time() - t0, "log": log}
    with open(os.path.join(args.out, name + ".train.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("%s: held-out %.4f bits per byte (first %d bytes), %.0f s" % (name, bpb, summary["held_out_bytes_scored"],
                                                                         summary["seconds"]))


if __name__ == "__main__":
    main()
