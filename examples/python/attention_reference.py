# SPDX-License-Identifier: Apache-2.0
"""Reference PyTorch modules of dynasparse's nn::GatedAttention.

DynamicAttention is the seed's module, verbatim (gate position `output`). HeadGatedAttention
puts the gate on each head's output before out_proj (gate position `head`), with the
threshold tau below which a (query, head) pair is skipped (its output is zero).

Their state_dict names are the ones nn::load_gated_attention expects:
  attention.in_proj_weight [3E, E], attention.in_proj_bias [3E],
  attention.out_proj.weight [E, E], attention.out_proj.bias [E],
  gate.0.weight [E, E] (or [H, E] for a head-wise head gate), gate.0.bias.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class DynamicAttention(nn.Module):
    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.attention = nn.MultiheadAttention(embed_dim, num_heads)
        self.gate = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Sigmoid())
    def forward(self, query, key, value):
        attn_output, _ = self.attention(query, key, value)
        gate_weights = self.gate(query)
        return attn_output * gate_weights


class MaskedDynamicAttention(DynamicAttention):
    """DynamicAttention with nn.MultiheadAttention's masks and layout passed through."""

    def __init__(self, embed_dim, num_heads, batch_first=False):
        nn.Module.__init__(self)
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, batch_first=batch_first)
        self.gate = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Sigmoid())

    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None):
        attn_output, _ = self.attention(query, key, value, attn_mask=attn_mask,
                                        key_padding_mask=key_padding_mask, need_weights=False)
        return attn_output * self.gate(query)


class HeadGatedAttention(nn.Module):
    """Gate per head, from the query, applied to each head's attention output before out_proj.

    headwise=True: one gate per head (gate.0 is Linear(E, H)); False: one per feature
    (Linear(E, E)), and a pair's gate for skipping is the max over the head's slice.
    Pairs whose gate is below tau output zero (dynasparse skips their work).
    """

    def __init__(self, embed_dim, num_heads, headwise=True, tau=0.0, batch_first=False):
        super().__init__()
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, batch_first=batch_first)
        self.gate = nn.Sequential(nn.Linear(embed_dim, num_heads if headwise else embed_dim),
                                  nn.Sigmoid())
        self.headwise = headwise
        self.tau = tau
        self.batch_first = batch_first

    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None):
        if self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        mha = self.attention
        e, h = mha.embed_dim, mha.num_heads
        d = e // h
        lq, n, _ = query.shape
        lkv = key.shape[0]
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q).reshape(lq, n * h, d).transpose(0, 1)
        k = F.linear(key, w_k, b_k).reshape(lkv, n * h, d).transpose(0, 1)
        v = F.linear(value, w_v, b_v).reshape(lkv, n * h, d).transpose(0, 1)
        scores = torch.bmm(q / math.sqrt(d), k.transpose(1, 2))  # [N*H, Lq, Lkv]
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
        if key_padding_mask is not None:
            pad = key_padding_mask.view(n, 1, 1, lkv).expand(-1, h, -1, -1).reshape(n * h, 1, lkv)
            scores = scores.masked_fill(pad, float("-inf"))
        o = torch.bmm(torch.softmax(scores, dim=-1), v).view(n, h, lq, d)
        g = self.gate(query)  # [Lq, N, H or E]
        if self.headwise:
            g_mul = g.permute(1, 2, 0).unsqueeze(-1)  # [N, H, Lq, 1]
            g_skip = g.permute(1, 2, 0)
        else:
            g4 = g.view(lq, n, h, d).permute(1, 2, 0, 3)  # [N, H, Lq, d]
            g_mul = g4
            g_skip = g4.amax(dim=-1)
        o = o * g_mul
        self.skipped_fraction = float((g_skip < self.tau).float().mean()) if self.tau > 0 else 0.0
        if self.tau > 0:
            o = torch.where((g_skip < self.tau).unsqueeze(-1), torch.zeros_like(o), o)
        o = o.permute(2, 0, 1, 3).reshape(lq, n, e)
        out = F.linear(o, mha.out_proj.weight, mha.out_proj.bias)
        return out.transpose(0, 1) if self.batch_first else out
