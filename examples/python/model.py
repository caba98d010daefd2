#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The PyTorch reference of dynasparse::Model: a pre-norm transformer with gated attention.

Its state_dict names are exactly what Model::load reads (prefixes shown for layer i):
  embed.weight [vocab, E]                 token embedding
  pos_embed.weight [max_seq_len, E]       learned positions (absent with positions = "rotary")
  layers.i.norm1.weight/.bias [E]         LayerNorm (RMSNorm: weight only)
  layers.i.attn.attention.in_proj_weight [3E, E], .in_proj_bias [3E]
  layers.i.attn.attention.out_proj.weight [E, E], .out_proj.bias [E]
  layers.i.attn.gate.0.weight [E or H, E], .gate.0.bias      (absent when gate = "none")
  layers.i.norm2.weight/.bias [E]
  layers.i.ffn.up.weight [F, E], .up.bias [F], layers.i.ffn.down.weight [E, F], .down.bias [E]
  norm_f.weight/.bias [E]
  lm_head.weight [vocab, E]               only when tied_lm_head is false (and no classifier)
  classifier.weight [C, E], .bias [C]     only when num_classes C > 0 (replaces the LM head)
Rotary positions (positions = "rotary", base rope_base) rotate each head's q and k after the
projection, GPT-NeoX / Hugging Face Llama rotate_half layout: pairs (c, c + d/2) turn by
pos * rope_base^(-2c/d), angles and cos/sin in float64 (as dynasparse computes them).
The configuration (ModelConfig's JSON) travels in the safetensors metadata under
"dynasparse.config"; export.py writes both.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def rotate(x, base):
    """x [L, N, H, d] (float32), token i at position i -> rotated copy (rotate_half layout).

    The rotation runs in float64 and rounds once, like dynasparse's GatedAttention."""
    length, d = x.shape[0], x.shape[-1]
    half = d // 2
    inv_freq = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / d)
    theta = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [L, d/2]
    cos, sin = theta.cos()[:, None, None, :], theta.sin()[:, None, None, :]
    x1, x2 = x[..., :half].double(), x[..., half:].double()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).float()


def rotary_self_attention(attn, x, attn_mask, base):
    """Self-attention of `attn` (a PlainAttention, MaskedDynamicAttention or HeadGatedAttention,
    with its own weights and gate) over x [L, N, E], with rotary q and k (never v)."""
    mha = attn.attention
    e, h = mha.embed_dim, mha.num_heads
    d = e // h
    length, n, _ = x.shape
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    q = rotate(F.linear(x, w_q, b_q).view(length, n, h, d), base)
    k = rotate(F.linear(x, w_k, b_k).view(length, n, h, d), base)
    v = F.linear(x, w_v, b_v).view(length, n, h, d)
    q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))  # [N, H, L, d]
    scores = (q / math.sqrt(d)) @ k.transpose(-1, -2)  # [N, H, L, L]
    if attn_mask is not None:
        scores = scores.masked_fill(attn_mask, float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v  # [N, H, L, d]
    if isinstance(attn, HeadGatedAttention):
        g = attn.gate(x)  # [L, N, H or E]
        if attn.headwise:
            g_mul = g.permute(1, 2, 0).unsqueeze(-1)
            g_skip = g.permute(1, 2, 0)
        else:
            g_mul = g.view(length, n, h, d).permute(1, 2, 0, 3)
            g_skip = g_mul.amax(dim=-1)
        o = o * g_mul
        if attn.tau > 0:
            o = torch.where((g_skip < attn.tau).unsqueeze(-1), torch.zeros_like(o), o)
    out = F.linear(o.permute(2, 0, 1, 3).reshape(length, n, e), mha.out_proj.weight, mha.out_proj.bias)
    if isinstance(attn, MaskedDynamicAttention):
        out = out * attn.gate(x)
    return out


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
        self.rope_base = cfg.get("rope_base", 10000.0) if cfg["positions"] == "rotary" else 0.0

    def forward(self, x, attn_mask):
        # x: [L, 1, E] (PyTorch's (L, N, E) layout, one sequence)
        n = self.norm1(x)
        if self.rope_base:
            x = x + rotary_self_attention(self.attn, n, attn_mask, self.rope_base)
        else:
            x = x + self.attn(n, n, n, attn_mask=attn_mask)
        return x + self.ffn(self.norm2(x))


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        self.embed = nn.Embedding(cfg["vocab"], cfg["hidden"])
        if cfg["positions"] != "rotary":
            self.pos_embed = nn.Embedding(cfg["max_seq_len"], cfg["hidden"])
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg["layers"])])
        self.norm_f = make_norm(cfg)
        if cfg.get("num_classes", 0):
            self.classifier = nn.Linear(cfg["hidden"], cfg["num_classes"])
        elif not cfg["tied_lm_head"]:
            self.lm_head = nn.Linear(cfg["hidden"], cfg["vocab"], bias=False)

    def forward(self, tokens):
        """tokens: LongTensor [L] -> logits [L, vocab], or class logits [L, num_classes]."""
        length = tokens.shape[0]
        x = self.embed(tokens)
        if self.cfg["positions"] != "rotary":
            x = x + self.pos_embed(torch.arange(length))
        x = x.unsqueeze(1)
        mask = None
        if self.cfg["causal"]:
            mask = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        for block in self.layers:
            x = block(x, mask)
        x = self.norm_f(x.squeeze(1))
        if self.cfg.get("num_classes", 0):
            return self.classifier(x)
        weight = self.embed.weight if self.cfg["tied_lm_head"] else self.lm_head.weight
        return x @ weight.t()

    def classify(self, tokens):
        """tokens: LongTensor [L] -> class logits [num_classes] of the sequence: the mean of the
        per-token class logits for an encoder (causal false), the last token's for a causal model
        (the only token that has seen the whole sequence)."""
        logits = self.forward(tokens)
        if self.cfg["causal"]:
            return logits[-1]
        return logits.double().mean(0).float()


def default_config(**overrides):
    cfg = {
        "vocab": 256, "hidden": 64, "layers": 2, "heads": 8, "ffn": 256, "activation": "gelu",
        "norm": "layernorm", "norm_eps": 1e-5, "positions": "learned", "max_seq_len": 128,
        "gate": "head", "gate_granularity": "headwise", "skip_threshold": 0.0, "causal": True,
        "tied_lm_head": True, "num_classes": 0, "formats": {},
    }
    cfg.update(overrides)
    if cfg["positions"] == "rotary":
        cfg.setdefault("rope_base", 10000.0)
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
