// SPDX-License-Identifier: Apache-2.0
// Rotary positions (RoPE) in GatedAttention, against a scalar double-precision reference
// written here: projections, rotate_half rotation of q and k, naive softmax attention.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dynasparse/nn/gated_attention.hpp"
#include "dynasparse/nn/kv_cache.hpp"
#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
namespace nn = dynasparse::nn;
using dynasparse_test::uniform_floats;
using Dense = nn::Linear<nn::DenseF32>;
using Attention = nn::GatedAttention<Dense>;

constexpr float kBase = 10000.0f;

// Budget against the double reference: float projections of E terms, one rounding per
// rotated element, float scores and an online softmax over L_kv keys. On these sizes that
// is a few 1e-7 of the output's scale; 1e-5 leaves room without hiding a wrong angle or a
// wrong position (a position off by one moves outputs by ~1e-2 of the scale).
constexpr double kRefRel = 1e-5;

struct Weights {
  std::size_t e;
  std::vector<float> wq, wk, wv, wo, bq, bk, bv, bo;
  Weights(std::size_t e_, std::uint32_t seed) : e(e_) {
    const float r = 1.0f / std::sqrt(static_cast<float>(e));
    wq = uniform_floats(e * e, -r, r, seed);
    wk = uniform_floats(e * e, -r, r, seed + 1);
    wv = uniform_floats(e * e, -r, r, seed + 2);
    wo = uniform_floats(e * e, -r, r, seed + 3);
    bq = uniform_floats(e, -r, r, seed + 4);
    bk = uniform_floats(e, -r, r, seed + 5);
    bv = uniform_floats(e, -r, r, seed + 6);
    bo = uniform_floats(e, -r, r, seed + 7);
  }
  static Dense dense(const std::vector<float>& w, std::size_t rows, std::size_t cols, std::vector<float> b,
                     const std::string& name) {
    return Dense(nn::DenseF32(ds::ConstMatrixView(w.data(), rows, cols), std::move(b), name));
  }
  // The layer holding heads [h0, h0 + hn) (all heads when hn == num_heads).
  Attention make(nn::GatedAttentionConfig cfg, std::size_t h0 = 0, std::size_t hn = 0) const {
    const std::size_t h = cfg.num_heads, d = e / h;
    if (hn == 0) hn = h;
    cfg.local_heads = hn;
    const std::size_t r0 = h0 * d, rn = hn * d;
    auto rows = [&](const std::vector<float>& w, const std::vector<float>& b, const char* name) {
      std::vector<float> ws(w.begin() + r0 * e, w.begin() + (r0 + rn) * e);
      return dense(ws, rn, e, std::vector<float>(b.begin() + r0, b.begin() + r0 + rn), name);
    };
    std::vector<float> wo_cols(e * rn);
    for (std::size_t i = 0; i < e; ++i) std::copy_n(&wo[i * e + r0], rn, &wo_cols[i * rn]);
    return Attention(cfg, rows(wq, bq, "q"), rows(wk, bk, "k"), rows(wv, bv, "v"),
                     dense(wo_cols, e, rn, h0 == 0 ? bo : std::vector<float>{}, "out"), std::nullopt);
  }
};

nn::GatedAttentionConfig rotary_config(std::size_t e, std::size_t h, bool batch_first = false) {
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  cfg.num_heads = h;
  cfg.gate = nn::GatePosition::None;
  cfg.rotary_base = kBase;
  cfg.batch_first = batch_first;
  return cfg;
}

// rotate_half on one head vector v [d] at position pos, in double.
void rotate_reference(double* v, std::size_t d, double pos) {
  const std::size_t half = d / 2;
  for (std::size_t c = 0; c < half; ++c) {
    const double theta = pos * std::pow(static_cast<double>(kBase), -2.0 * static_cast<double>(c) / d);
    const double x1 = v[c], x2 = v[c + half];
    v[c] = x1 * std::cos(theta) - x2 * std::sin(theta);
    v[c + half] = x2 * std::cos(theta) + x1 * std::sin(theta);
  }
}

// Attention of one sequence in double: query rows xq [lq, E], key/value rows xkv [lkv, E].
// Query i is at position i + lkv - lq, key j at j; causal hides keys j > i + lkv - lq, and
// keys j < first_key are padding.
std::vector<double> reference(const Weights& w, std::size_t h, const std::vector<std::vector<float>>& xq,
                              const std::vector<std::vector<float>>& xkv, bool causal, std::size_t first_key = 0) {
  const std::size_t e = w.e, d = e / h, lq = xq.size(), lkv = xkv.size();
  auto project = [&](const std::vector<float>& wm, const std::vector<float>& b, const std::vector<float>& x) {
    std::vector<double> y(e);
    for (std::size_t j = 0; j < e; ++j) {
      double a = b[j];
      for (std::size_t k = 0; k < e; ++k) a += double(wm[j * e + k]) * x[k];
      y[j] = a;
    }
    return y;
  };
  const double shift = static_cast<double>(lkv) - static_cast<double>(lq);
  std::vector<std::vector<double>> q(lq), k(lkv), v(lkv);
  for (std::size_t i = 0; i < lq; ++i) {
    q[i] = project(w.wq, w.bq, xq[i]);
    for (std::size_t hd = 0; hd < h; ++hd) rotate_reference(&q[i][hd * d], d, static_cast<double>(i) + shift);
  }
  for (std::size_t j = 0; j < lkv; ++j) {
    k[j] = project(w.wk, w.bk, xkv[j]);
    v[j] = project(w.wv, w.bv, xkv[j]);  // never rotated
    for (std::size_t hd = 0; hd < h; ++hd) rotate_reference(&k[j][hd * d], d, static_cast<double>(j));
  }
  std::vector<double> out(lq * e);
  for (std::size_t i = 0; i < lq; ++i) {
    std::vector<double> o(e, 0.0);
    for (std::size_t hd = 0; hd < h; ++hd) {
      std::vector<double> s(lkv, -INFINITY);
      double mx = -INFINITY;
      for (std::size_t j = 0; j < lkv; ++j) {
        if (j < first_key || (causal && static_cast<double>(j) > static_cast<double>(i) + shift)) continue;
        double a = 0.0;
        for (std::size_t c = 0; c < d; ++c) a += q[i][hd * d + c] * k[j][hd * d + c];
        s[j] = a / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, s[j]);
      }
      double z = 0.0;
      for (std::size_t j = 0; j < lkv; ++j) z += s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
      for (std::size_t j = 0; j < lkv; ++j) {
        if (s[j] == -INFINITY) continue;
        const double p = std::exp(s[j] - mx) / z;
        for (std::size_t c = 0; c < d; ++c) o[hd * d + c] += p * v[j][hd * d + c];
      }
    }
    for (std::size_t r = 0; r < e; ++r) {
      double a = w.bo[r];
      for (std::size_t c = 0; c < e; ++c) a += double(w.wo[r * e + c]) * o[c];
      out[i * e + r] = a;
    }
  }
  return out;
}

// Row n's token i of an [L * N, E] matrix in the given layout, as a vector.
std::vector<std::vector<float>> sequence(const std::vector<float>& x, std::size_t e, std::size_t n, std::size_t len,
                                         std::size_t batch, nn::SeqLayout layout) {
  std::vector<std::vector<float>> s(len);
  for (std::size_t i = 0; i < len; ++i) {
    const float* r = &x[nn::layout_row(layout, n, i, len, batch) * e];
    s[i].assign(r, r + e);
  }
  return s;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

TEST(RotaryAttention, MatchesScalarReferenceInSelfAndCrossAttention) {
  const std::size_t e = 32, h = 4;
  const Weights w(e, 11u);
  struct Case {
    std::size_t lq, lkv, batch;
    bool causal, batch_first;
  };
  // Self-attention (causal or not), cross-attention with L_q < L_kv (queries continue the
  // keys' positions), both layouts, one and two sequences.
  for (const Case c : {Case{9, 9, 1, true, false}, Case{9, 9, 2, false, true}, Case{5, 13, 2, true, false},
                       Case{5, 13, 1, false, true}, Case{1, 17, 2, true, true}}) {
    const auto cfg = rotary_config(e, h, c.batch_first);
    const Attention layer = w.make(cfg);
    const auto layout = layer.layout();
    const auto xq = uniform_floats(c.lq * c.batch * e, -1.0f, 1.0f, 12u);
    const auto xkv = uniform_floats(c.lkv * c.batch * e, -1.0f, 1.0f, 13u);
    std::vector<float> out(c.lq * c.batch * e);
    ds::Workspace ws;
    nn::AttentionMasks masks;
    masks.causal = c.causal;
    layer.forward(ds::ConstMatrixView(xq.data(), c.lq * c.batch, e), ds::ConstMatrixView(xkv.data(), c.lkv * c.batch, e),
                  ds::ConstMatrixView(xkv.data(), c.lkv * c.batch, e), c.batch,
                  ds::MatrixView(out.data(), c.lq * c.batch, e), ws, masks);
    for (std::size_t n = 0; n < c.batch; ++n) {
      const auto want = reference(w, h, sequence(xq, e, n, c.lq, c.batch, layout),
                                  sequence(xkv, e, n, c.lkv, c.batch, layout), c.causal);
      const double tol = kRefRel * max_abs(want);
      for (std::size_t i = 0; i < c.lq; ++i) {
        const float* got = &out[nn::layout_row(layout, n, i, c.lq, c.batch) * e];
        for (std::size_t r = 0; r < e; ++r) {
          ASSERT_NEAR(got[r], want[i * e + r], tol)
              << "lq " << c.lq << " lkv " << c.lkv << " batch " << c.batch << " seq " << n << " row " << i << "," << r;
        }
      }
    }
  }
}

TEST(RotaryAttention, RotationActuallyChangesTheOutput) {
  // Without rotary the same weights give another result: the test above is not vacuous.
  const std::size_t e = 32, h = 4, l = 9;
  const Weights w(e, 21u);
  auto cfg = rotary_config(e, h);
  const auto x = uniform_floats(l * e, -1.0f, 1.0f, 22u);
  std::vector<float> a(l * e), b(l * e);
  ds::Workspace ws;
  const ds::ConstMatrixView xv(x.data(), l, e);
  w.make(cfg).forward(xv, xv, xv, 1, ds::MatrixView(a.data(), l, e), ws);
  cfg.rotary_base = 0.0f;
  w.make(cfg).forward(xv, xv, xv, 1, ds::MatrixView(b.data(), l, e), ws);
  double diff = 0.0;
  for (std::size_t i = e; i < l * e; ++i) diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
  EXPECT_GT(diff, 1e-3);
  // Token 0 is at position 0 (no rotation) and, unmasked, still sees every key: only the
  // keys' rotation changes its output, so it differs too.
  double diff0 = 0.0;
  for (std::size_t i = 0; i < e; ++i) diff0 = std::max(diff0, std::fabs(double(a[i]) - b[i]));
  EXPECT_GT(diff0, 1e-4);
}

TEST(RotaryAttention, LongPositionsKeepFloatAccuracy) {
  // One query at position 2^16 + 4 attending (through a key padding mask) to the 16 keys just
  // before it. In float, pos * freq rounds by up to ulp(65540 * freq) / 2 per angle; that
  // moves this output by ~1e-4 of its scale (measured: 1.3e-4 with float angles), while
  // double angles stay at float rounding (measured: 1.6e-7). Inputs span [-4, 4] so scores
  // are large and attention is sharp enough to feel the angles.
  const std::size_t e = 16, h = 2, lkv = (std::size_t{1} << 16) + 5, open = 16;
  const Weights w(e, 31u);
  const Attention layer = w.make(rotary_config(e, h));
  const auto xq = uniform_floats(e, -4.0f, 4.0f, 32u);
  const auto xkv = uniform_floats(lkv * e, -4.0f, 4.0f, 33u);
  std::unique_ptr<bool[]> pad(new bool[lkv]);
  for (std::size_t j = 0; j < lkv; ++j) pad[j] = j < lkv - open;
  nn::AttentionMasks masks;
  masks.key_padding_mask = ds::TensorView<const bool>(pad.get(), 1, lkv);
  std::vector<float> out(e);
  ds::Workspace ws;
  layer.forward(ds::ConstMatrixView(xq.data(), 1, e), ds::ConstMatrixView(xkv.data(), lkv, e),
                ds::ConstMatrixView(xkv.data(), lkv, e), 1, ds::MatrixView(out.data(), 1, e), ws, masks);
  const auto want = reference(w, h, sequence(xq, e, 0, 1, 1, layer.layout()),
                              sequence(xkv, e, 0, lkv, 1, layer.layout()), false, lkv - open);
  const double tol = kRefRel * max_abs(want);
  for (std::size_t r = 0; r < e; ++r) EXPECT_NEAR(out[r], want[r], tol) << r;
}

TEST(RotaryAttention, CachedDecodingEqualsFullCausalForward) {
  const std::size_t e = 32, h = 4, l = 14, batch = 2, prefill = 5;
  const Weights w(e, 41u);
  for (bool batch_first : {false, true}) {
    const Attention layer = w.make(rotary_config(e, h, batch_first));
    const auto layout = layer.layout();
    const auto x = uniform_floats(l * batch * e, -1.0f, 1.0f, 42u);
    std::vector<float> full(l * batch * e);
    ds::Workspace ws;
    nn::AttentionMasks causal;
    causal.causal = true;
    const ds::ConstMatrixView xv(x.data(), l * batch, e);
    layer.forward(xv, xv, xv, batch, ds::MatrixView(full.data(), l * batch, e), ws, causal);

    nn::KVCache cache(batch, h, e / h, l);
    std::vector<float> decoded(l * batch * e), in, out;
    // A prefill of several tokens, then one token at a time.
    for (std::size_t t0 = 0; t0 < l;) {
      const std::size_t t = t0 == 0 ? prefill : 1;
      in.assign(t * batch * e, 0.0f);
      out.assign(t * batch * e, 0.0f);
      for (std::size_t n = 0; n < batch; ++n) {
        for (std::size_t i = 0; i < t; ++i) {
          std::copy_n(&x[nn::layout_row(layout, n, t0 + i, l, batch) * e], e, &in[nn::layout_row(layout, n, i, t, batch) * e]);
        }
      }
      layer.forward_cached(ds::ConstMatrixView(in.data(), t * batch, e), batch, cache,
                           ds::MatrixView(out.data(), t * batch, e), ws);
      for (std::size_t n = 0; n < batch; ++n) {
        for (std::size_t i = 0; i < t; ++i) {
          std::copy_n(&out[nn::layout_row(layout, n, i, t, batch) * e], e,
                      &decoded[nn::layout_row(layout, n, t0 + i, l, batch) * e]);
        }
      }
      t0 += t;
    }
    EXPECT_EQ(cache.size(), l);
    // 1e-5 of the output's scale: the projections of a few rows and of all rows may sum in
    // different orders; the rotation itself is the same arithmetic on both paths.
    double scale = 0.0;
    for (float v : full) scale = std::max(scale, std::fabs(double(v)));
    for (std::size_t i = 0; i < full.size(); ++i) {
      ASSERT_NEAR(decoded[i], full[i], 1e-5 * scale) << (batch_first ? "batch_first " : "") << i;
    }
  }
}

TEST(RotaryAttention, HeadSubsetsSumToTheFullLayer) {
  // Tensor-parallel halves (heads [0, 2) and [2, 4)) rotate their own heads; their partial
  // out_proj outputs add up to the whole layer's within float rounding of the sum.
  const std::size_t e = 32, h = 4, l = 7;
  const Weights w(e, 51u);
  const auto cfg = rotary_config(e, h);
  const auto x = uniform_floats(l * e, -1.0f, 1.0f, 52u);
  const ds::ConstMatrixView xv(x.data(), l, e);
  nn::AttentionMasks causal;
  causal.causal = true;
  std::vector<float> full(l * e), a(l * e), b(l * e);
  ds::Workspace ws;
  w.make(cfg).forward(xv, xv, xv, 1, ds::MatrixView(full.data(), l, e), ws, causal);
  w.make(cfg, 0, 2).forward(xv, xv, xv, 1, ds::MatrixView(a.data(), l, e), ws, causal);
  w.make(cfg, 2, 2).forward(xv, xv, xv, 1, ds::MatrixView(b.data(), l, e), ws, causal);
  double scale = 0.0;
  for (float v : full) scale = std::max(scale, std::fabs(double(v)));
  for (std::size_t i = 0; i < full.size(); ++i) EXPECT_NEAR(a[i] + b[i], full[i], 1e-5 * scale) << i;
}

TEST(RotaryAttention, OddHeadDimAndBadBaseAreConfigErrors) {
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = 12;
  cfg.num_heads = 4;  // head_dim 3
  cfg.gate = nn::GatePosition::None;
  cfg.rotary_base = kBase;
  try {
    nn::resolve_config(cfg, "layers.0.attn");
    FAIL() << "no throw";
  } catch (const ds::ConfigError& err) {
    EXPECT_STREQ(err.what(),
                 "dynasparse.nn: rotary positions need an even head dimension; expected even, got 3 [layers.0.attn]");
  }
  cfg.rotary_base = 0.0f;  // no rotary: an odd head_dim is fine
  EXPECT_NO_THROW(nn::resolve_config(cfg));
  cfg.num_heads = 3;  // head_dim 4
  cfg.rotary_base = -1.0f;
  EXPECT_THROW(nn::resolve_config(cfg), ds::ConfigError);
  cfg.rotary_base = INFINITY;
  EXPECT_THROW(nn::resolve_config(cfg), ds::ConfigError);
  cfg.rotary_base = NAN;
  EXPECT_THROW(nn::resolve_config(cfg), ds::ConfigError);
}

}  // namespace
