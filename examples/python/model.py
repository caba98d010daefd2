#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The PyTorch reference of dynasparse::Model: a pre-norm transformer with gated attention.

Its state_dict names are exactly what Model::load reads (prefixes shown for layer i):
  embed.weight [vocab, E]                 token embedding
  pos_embed.weight [max_seq_len, E]       learned positions
  layers.i.norm1.weight/.bias [E]         LayerNorm (RMSNorm: weight only)
  layers.i.attn.attention.in_proj_weight [3E, E], .in_proj_bias [3E]
  layers.i.attn.attention.out_proj.weight [E, E], .out_proj.bias [E]
  layers.i.attn.gate.0.weight [E or H, E], .gate.0.bias      (absent when gate = "none")
  layers.i.norm2.weight/.bias [E]
  layers.i.ffn.up.weight [F, E], .up.bias [F], layers.i.ffn.down.weight [E, F], .down.bias [E]
  norm_f.weight/.bias [E]
  lm_head.weight [vocab, E]               only when tied_lm_head is false
The configuration (ModelConfig's JSON) travels in the safetensors metadata under
"dynasparse.config"; export.py writes both.
"""
import math

import torch
import torch.nn as nn

from attention_reference import HeadGatedAttention, MaskedDynamicAttention


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class PlainAttention(nn.Module):
    """gate = "none": nn.MultiheadAttention alone, under the same `attention.` prefix."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.attention = nn.MultiheadAttention(embed_dim, num_heads)

    def forward(self, query, key, value, attn_mask=None):
        return self.attention(query, key, value, attn_mask=attn_mask, need_weights=False)[0]


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, activation):
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.act = {"gelu": nn.GELU(), "silu": nn.SiLU(), "relu": nn.ReLU()}[activation]

    def forward(self, x):
        return self.down(self.act(self.up(x)))


def make_norm(cfg):
    if cfg["norm"] == "rmsnorm":
        return RMSNorm(cfg["hidden"], cfg["norm_eps"])
    return nn.LayerNorm(cfg["hidden"], eps=cfg["norm_eps"])


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        e, h = cfg["hidden"], cfg["heads"]
        self.norm1 = make_norm(cfg)
        if cfg["gate"] == "output":
            self.attn = MaskedDynamicAttention(e, h)
        elif cfg["gate"] == "head":
            self.attn = HeadGatedAttention(e, h, headwise=cfg["gate_granularity"] == "headwise",
                                           tau=cfg["skip_threshold"])
        else:
            self.attn = PlainAttention(e, h)
        self.norm2 = make_norm(cfg)
        self.ffn = FeedForward(e, cfg["ffn"], cfg["activation"])

    def forward(self, x, attn_mask):
        # x: [L, 1, E] (PyTorch's (L, N, E) layout, one sequence)
        n = self.norm1(x)
        x = x + self.attn(n, n, n, attn_mask=attn_mask)
        return x + self.ffn(self.norm2(x))


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        self.embed = nn.Embedding(cfg["vocab"], cfg["hidden"])
        self.pos_embed = nn.Embedding(cfg["max_seq_len"], cfg["hidden"])
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg["layers"])])
        self.norm_f = make_norm(cfg)
        if not cfg["tied_lm_head"]:
            self.lm_head = nn.Linear(cfg["hidden"], cfg["vocab"], bias=False)

    def forward(self, tokens):
        """tokens: LongTensor [L] -> logits [L, vocab]."""
        length = tokens.shape[0]
        x = self.embed(tokens) + self.pos_embed(torch.arange(length))
        x = x.unsqueeze(1)
        mask = None
        if self.cfg["causal"]:
            mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        for block in self.layers:
            x = block(x, mask)
        x = self.norm_f(x.squeeze(1))
        weight = self.embed.weight if self.cfg["tied_lm_head"] else self.lm_head.weight
        return x @ weight.t()


def default_config(**overrides):
    cfg = {
        "vocab": 256, "hidden": 64, "layers": 2, "heads": 8, "ffn": 256, "activation": "gelu",
        "norm": "layernorm", "norm_eps": 1e-5, "positions": "learned", "max_seq_len": 128,
        "gate": "head", "gate_granularity": "headwise", "skip_threshold": 0.0, "causal": True,
        "tied_lm_head": True, "num_classes": 0, "formats": {},
    }
    cfg.update(overrides)
    if not cfg["heads"]:
        cfg["heads"] = cfg["hidden"] // 8
    assert cfg["hidden"] % cfg["heads"] == 0, "hidden must be divisible by heads"
    return cfg


def init_(model, seed, scale=1.0):
    """Deterministic weights (random-weight goldens need no training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * scale / math.sqrt(p.shape[-1]))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model
