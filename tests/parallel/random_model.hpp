// SPDX-License-Identifier: Apache-2.0
// A small random-weight Model file, written in memory, for the parallel tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/model/model.hpp"
#include "support/random.hpp"

namespace dynasparse_test {

/// hidden 64, 4 heads of 16 (so TP 4 keeps whole 16-row blocks), 4 layers (PP up to 4),
/// FFN 128, vocab 40, up to 32 tokens; gate and causality as given.
inline dynasparse::ModelConfig small_config(dynasparse::GatePosition gate = dynasparse::GatePosition::Head,
                                            dynasparse::HeadGate kind = dynasparse::HeadGate::Headwise,
                                            bool causal = true) {
  dynasparse::ModelConfig c;
  c.vocab = 40;
  c.hidden = 64;
  c.heads = 4;
  c.layers = 4;
  c.ffn = 128;
  c.max_seq_len = 32;
  c.gate = gate;
  c.gate_granularity = kind;
  c.causal = causal;
  return c;
}

/// The file's bytes: every tensor uniform in +-scale / sqrt(fan-in) (norm weights near 1),
/// from a fixed seed, so activations stay O(1) through the layers.
inline std::vector<std::uint8_t> write_model(const dynasparse::ModelConfig& c, std::uint32_t seed = 7) {
  namespace ds = dynasparse;
  ds::io::SafetensorsWriter w;
  std::uint32_t s = seed;
  auto add = [&](const std::string& name, std::vector<std::size_t> shape, float lo, float hi) {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    const auto v = uniform_floats(n, lo, hi, ++s);
    w.add<float>(name, shape, v.data());
  };
  const std::size_t e = c.hidden, f = c.ffn;
  const float ae = 1.7f / std::sqrt(static_cast<float>(e)), af = 1.7f / std::sqrt(static_cast<float>(f));
  add("embed.weight", {c.vocab, e}, -1.0f, 1.0f);
  add("pos_embed.weight", {c.max_seq_len, e}, -0.3f, 0.3f);
  for (std::size_t l = 0; l < c.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "norm1.weight", {e}, 0.8f, 1.2f);
    if (c.norm == ds::NormKind::LayerNorm) add(p + "norm1.bias", {e}, -0.1f, 0.1f);
    add(p + "attn.attention.in_proj_weight", {3 * e, e}, -ae, ae);
    add(p + "attn.attention.in_proj_bias", {3 * e}, -0.1f, 0.1f);
    add(p + "attn.attention.out_proj.weight", {e, e}, -ae, ae);
    add(p + "attn.attention.out_proj.bias", {e}, -0.1f, 0.1f);
    if (c.gate != ds::GatePosition::None) {
      const std::size_t gw =
          c.gate == ds::GatePosition::Head && c.gate_granularity == ds::HeadGate::Headwise ? c.num_heads() : e;
      add(p + "attn.gate.0.weight", {gw, e}, -ae, ae);
      add(p + "attn.gate.0.bias", {gw}, 0.0f, 0.5f);
    }
    add(p + "norm2.weight", {e}, 0.8f, 1.2f);
    if (c.norm == ds::NormKind::LayerNorm) add(p + "norm2.bias", {e}, -0.1f, 0.1f);
    add(p + "ffn.up.weight", {f, e}, -ae, ae);
    add(p + "ffn.up.bias", {f}, -0.1f, 0.1f);
    add(p + "ffn.down.weight", {e, f}, -af, af);
    add(p + "ffn.down.bias", {e}, -0.1f, 0.1f);
  }
  add("norm_f.weight", {e}, 0.8f, 1.2f);
  if (c.norm == ds::NormKind::LayerNorm) add("norm_f.bias", {e}, -0.1f, 0.1f);
  if (!c.tied_lm_head) add("lm_head.weight", {c.vocab, e}, -ae, ae);
  w.set_metadata("dynasparse.config", ds::to_json(c).dump());
  return w.to_bytes();
}

/// Tokens 0 .. n-1 of a fixed pseudo-random sequence below `vocab`.
inline std::vector<std::int32_t> test_tokens(std::size_t n, std::size_t vocab) {
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::int32_t>((i * 7 + 3) % vocab);
  return t;
}

/// Tolerance of a sharded FP32 forward against one device: the shards sum in another order.
inline constexpr double kFp32Rel = 1e-5;

/// max |a - b| / max |b|: the error relative to the logits' scale.
inline double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace dynasparse_test
