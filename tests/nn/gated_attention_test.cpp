// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/nn/gated_attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "support/random.hpp"
#include <gtest/gtest.h>

#include "dynasparse/core/threading.hpp"
#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/nn/kv_cache.hpp"
#include "dynasparse/sparse/block_mask.hpp"
#include "dynasparse/sparse/group_sparse_f32.hpp"
#include "dynasparse/sparse/group_sparse_i8.hpp"

namespace {

namespace ds = dynasparse;
namespace nn = dynasparse::nn;
using dynasparse_test::uniform_floats;
using Dense = nn::Linear<nn::DenseF32>;
using Attention = nn::GatedAttention<Dense>;

// PyTorch parity budget: |got - want| <= 1e-5 * max |want| over the output tensor. Both
// sides compute in float32; the products sum E (<= 512) terms in different orders, which
// moves results by a few 1e-7 of the output's scale.
constexpr double kGoldenRel = 1e-5;

// The generator's hash_weight() (examples/python/make_attention_goldens.py), bit for bit.
float hash_weight(std::uint64_t seed, std::uint64_t i, std::uint64_t j) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + j * 0x94D049BB133111EBull;
  x ^= x >> 31;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return static_cast<float>(static_cast<std::int64_t>(x >> 44) - (1 << 19)) / 16777216.0f;
}

std::vector<float> hashed(std::uint64_t seed, std::size_t rows, std::size_t cols) {
  std::vector<float> v(rows * cols);
  for (std::size_t i = 0; i < rows; ++i) {
    for (std::size_t j = 0; j < cols; ++j) v[i * cols + j] = hash_weight(seed, i, j);
  }
  return v;
}

Dense dense(const std::vector<float>& w, std::size_t rows, std::size_t cols, std::vector<float> b,
            const std::string& name) {
  return Dense(nn::DenseF32(ds::ConstMatrixView(w.data(), rows, cols), std::move(b), name));
}

// The module of a hashed-weight golden file (see the generator's HASH_SEEDS).
Attention hashed_attention(const nn::GatedAttentionConfig& cfg) {
  const std::size_t e = cfg.embed_dim;
  const auto in_w = hashed(1, 3 * e, e), in_b = hashed(2, 1, 3 * e);
  auto part = [&](std::size_t i) {
    return std::vector<float>(in_w.begin() + i * e * e, in_w.begin() + (i + 1) * e * e);
  };
  auto bias = [&](std::size_t i) { return std::vector<float>(in_b.begin() + i * e, in_b.begin() + (i + 1) * e); };
  const std::size_t gw = cfg.gate == nn::GatePosition::Head && cfg.head_gate == nn::HeadGate::Headwise
                             ? cfg.num_heads
                             : e;
  return Attention(cfg, dense(part(0), e, e, bias(0), "q"), dense(part(1), e, e, bias(1), "k"),
                   dense(part(2), e, e, bias(2), "v"), dense(hashed(3, e, e), e, e, hashed(4, 1, e), "out"),
                   dense(hashed(5, gw, e), gw, e, hashed(6, 1, gw), "gate"));
}

std::string meta(const ds::io::SafetensorsFile& f, const std::string& key) {
  const auto it = f.metadata().find(key);
  EXPECT_NE(it, f.metadata().end()) << key;
  return it == f.metadata().end() ? std::string() : it->second;
}

void expect_matches_golden(const std::vector<float>& got, const ds::io::TensorData<float>& want,
                           const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (std::isfinite(want.data()[i])) scale = std::max(scale, std::fabs(double(want.data()[i])));
  }
  std::size_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const float w = want.data()[i];
    if (std::isnan(w)) {
      if (!std::isnan(got[i]) && bad++ < 5) ADD_FAILURE() << what << ": expected NaN at " << i << ", got " << got[i];
    } else if (!(std::fabs(double(got[i]) - w) <= kGoldenRel * scale) && bad++ < 5) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << w;
    }
  }
  EXPECT_EQ(bad, 0u) << what;
}

TEST(GatedAttentionGolden, MatchesPyTorchOnEveryGoldenFile) {
  const std::string dir = std::string(DYNASPARSE_TEST_DATA_DIR) + "/attention";
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") paths.push_back(entry.path().string());
  }
  std::sort(paths.begin(), paths.end());
  ASSERT_GE(paths.size(), 16u) << "golden files missing from " << dir;
  bool saw_nan = false, saw_skip = false;
  for (const std::string& path : paths) {
    SCOPED_TRACE(path);
    const ds::io::SafetensorsFile f(path);
    nn::GatedAttentionConfig cfg;
    cfg.embed_dim = std::stoul(meta(f, "embed_dim"));
    cfg.num_heads = std::stoul(meta(f, "num_heads"));
    cfg.batch_first = meta(f, "batch_first") == "1";
    cfg.gate = meta(f, "gate") == "head" ? nn::GatePosition::Head : nn::GatePosition::Output;
    cfg.head_gate = meta(f, "head_gate") == "headwise" ? nn::HeadGate::Headwise : nn::HeadGate::Elementwise;
    cfg.tau = std::stof(meta(f, "tau"));
    const std::size_t batch = std::stoul(meta(f, "batch"));
    const Attention layer = meta(f, "weights") == "stored" ? nn::load_gated_attention(f, cfg) : hashed_attention(cfg);

    const auto query = f.load<float>("query");
    const bool self = meta(f, "self") == "1";
    const auto key = f.load<float>(self ? "query" : "key");
    const auto value = f.load<float>(self ? "query" : "value");
    const auto want = f.load<float>("output");
    // Inputs are stored 3-D; view them as [L * N, E].
    const std::size_t e = cfg.embed_dim;
    const ds::ConstMatrixView q(query.data(), query.size() / e, e);
    const ds::ConstMatrixView k(key.data(), key.size() / e, e);
    const ds::ConstMatrixView v(value.data(), value.size() / e, e);

    nn::AttentionMasks masks;
    ds::io::TensorData<float> fmask;
    ds::io::TensorData<bool> bmask, kpm;
    if (f.contains("attn_mask")) {
      if (f.info("attn_mask").dtype == ds::DType::BOOL) {
        bmask = f.load<bool>("attn_mask");
        masks.bool_attn_mask = bmask.view();
      } else {
        fmask = f.load<float>("attn_mask");
        masks.attn_mask = fmask.view();
      }
    }
    if (f.contains("key_padding_mask")) {
      kpm = f.load<bool>("key_padding_mask");
      masks.key_padding_mask = kpm.view();
    }
    std::vector<float> out(q.rows() * e);
    ds::Workspace ws;
    const auto stats = layer.forward(q, k, v, batch, ds::MatrixView(out.data(), q.rows(), e), ws, masks);
    expect_matches_golden(out, want, path);
    EXPECT_EQ(stats.pairs, q.rows() * cfg.num_heads);
    if (cfg.tau > 0.0f) {
      EXPECT_GT(stats.skipped, 0u);
      EXPECT_LT(stats.skipped, stats.pairs);
      saw_skip = true;
    } else {
      EXPECT_EQ(stats.skipped, 0u);
    }
    for (std::size_t i = 0; i < want.size(); ++i) saw_nan |= std::isnan(want.data()[i]);

    // The causal flag is the same as PyTorch's triangular bool mask.
    if (meta(f, "causal") == "1") {
      nn::AttentionMasks causal;
      causal.causal = true;
      std::fill(out.begin(), out.end(), 0.0f);
      layer.forward(q, k, v, batch, ds::MatrixView(out.data(), q.rows(), e), ws, causal);
      expect_matches_golden(out, want, path + " (causal flag)");
    }
  }
  EXPECT_TRUE(saw_nan) << "no golden covers a fully padded sequence";
  EXPECT_TRUE(saw_skip) << "no golden covers skipped heads";
}

// A small random layer: E = 64, H = 8 by default (head_dim 8).
struct RandomLayer {
  std::size_t e;
  std::vector<float> wq, wk, wv, wo, wg, bq, bk, bv, bo, bg;

  RandomLayer(std::size_t e_, std::size_t gate_rows, std::uint32_t seed, bool identity_out = false) : e(e_) {
    const float r = 1.0f / std::sqrt(static_cast<float>(e));
    wq = uniform_floats(e * e, -r, r, seed);
    wk = uniform_floats(e * e, -r, r, seed + 1);
    wv = uniform_floats(e * e, -r, r, seed + 2);
    wo = uniform_floats(e * e, -r, r, seed + 3);
    wg = uniform_floats(gate_rows * e, -4 * r, 4 * r, seed + 4);  // spread sigmoid over (0, 1)
    bq = uniform_floats(e, -r, r, seed + 5);
    bk = uniform_floats(e, -r, r, seed + 6);
    bv = uniform_floats(e, -r, r, seed + 7);
    bo = uniform_floats(e, -r, r, seed + 8);
    bg = uniform_floats(gate_rows, -r, r, seed + 9);
    if (identity_out) {
      std::fill(wo.begin(), wo.end(), 0.0f);
      for (std::size_t i = 0; i < e; ++i) wo[i * e + i] = 1.0f;
      std::fill(bo.begin(), bo.end(), 0.0f);
    }
  }

  Attention make(const nn::GatedAttentionConfig& cfg) const {
    const std::size_t gw = wg.size() / e;
    return Attention(cfg, dense(wq, e, e, bq, "q"), dense(wk, e, e, bk, "k"), dense(wv, e, e, bv, "v"),
                     dense(wo, e, e, bo, "out"), dense(wg, gw, e, bg, "gate"));
  }
};

nn::GatedAttentionConfig head_config(std::size_t e, std::size_t h, nn::HeadGate kind, float tau) {
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  cfg.num_heads = h;
  cfg.gate = nn::GatePosition::Head;
  cfg.head_gate = kind;
  cfg.tau = tau;
  return cfg;
}

std::vector<float> run(const Attention& layer, const std::vector<float>& x, std::size_t batch,
                       const nn::AttentionMasks& masks = {}, nn::AttentionStats* stats = nullptr) {
  const std::size_t e = layer.embed_dim(), rows = x.size() / e;
  std::vector<float> out(rows * e);
  ds::Workspace ws;
  const auto s = layer.forward(ds::ConstMatrixView(x.data(), rows, e), ds::ConstMatrixView(x.data(), rows, e),
                               ds::ConstMatrixView(x.data(), rows, e), batch, ds::MatrixView(out.data(), rows, e),
                               ws, masks);
  if (stats != nullptr) *stats = s;
  return out;
}

TEST(GatedAttentionSkip, TauZeroIsExactAndSkippedPairsAreCountedAndZero) {
  const std::size_t e = 64, h = 8, d = 8, l = 37, batch = 2;
  for (nn::HeadGate kind : {nn::HeadGate::Headwise, nn::HeadGate::Elementwise}) {
    const std::size_t gw = kind == nn::HeadGate::Headwise ? h : e;
    // Identity out_proj: the output is the gated concatenation of the heads.
    const RandomLayer w(e, gw, 11u, true);
    const auto x = uniform_floats(l * batch * e, -2.0f, 2.0f, 12u);
    nn::AttentionStats s0, s1;
    const auto exact = run(w.make(head_config(e, h, kind, 0.0f)), x, batch, {}, &s0);
    EXPECT_EQ(s0.skipped, 0u);
    EXPECT_EQ(s0.pairs, l * batch * h);
    // Element-wise gates skip on the max of 8 sigmoids, so they need a higher threshold.
    const float tau = kind == nn::HeadGate::Headwise ? 0.5f : 0.95f;
    const auto skipped = run(w.make(head_config(e, h, kind, tau)), x, batch, {}, &s1);

    // Expected skips from the gate computed here.
    std::size_t expect = 0;
    for (std::size_t r = 0; r < l * batch; ++r) {
      for (std::size_t hd = 0; hd < h; ++hd) {
        float g = -1.0f;
        for (std::size_t c = 0; c < (kind == nn::HeadGate::Headwise ? 1 : d); ++c) {
          const std::size_t gi = kind == nn::HeadGate::Headwise ? hd : hd * d + c;
          double a = w.bg[gi];
          for (std::size_t k = 0; k < e; ++k) a += double(w.wg[gi * e + k]) * x[r * e + k];
          g = std::max(g, static_cast<float>(1.0 / (1.0 + std::exp(-a))));
        }
        const bool skip = g < tau;
        expect += skip;
        for (std::size_t c = 0; c < d; ++c) {
          const std::size_t i = r * e + hd * d + c;
          if (skip) {
            EXPECT_EQ(skipped[i], 0.0f) << r << "," << hd;
            // Error bound: the dropped contribution is g * o with g < tau and |o| <= max|v|.
            EXPECT_LE(std::fabs(exact[i]), tau * 4.0f);
          } else {
            EXPECT_EQ(skipped[i], exact[i]) << r << "," << hd;
          }
        }
      }
    }
    EXPECT_EQ(s1.skipped, expect);
    EXPECT_GT(s1.skipped_fraction(), 0.1);
    EXPECT_LT(s1.skipped_fraction(), 0.9);
  }
}

TEST(GatedAttentionSkip, ChangeIsBoundedByTauThroughOutProj) {
  const std::size_t e = 64, h = 8, l = 20;
  const RandomLayer w(e, h, 21u);
  const auto x = uniform_floats(l * e, -1.0f, 1.0f, 22u);
  const auto exact = run(w.make(head_config(e, h, nn::HeadGate::Headwise, 0.0f)), x, 1);
  const float tau = 0.4f;
  nn::AttentionStats st;
  const auto approx = run(w.make(head_config(e, h, nn::HeadGate::Headwise, tau)), x, 1, {}, &st);
  ASSERT_GT(st.skipped, 0u);
  // |v| <= max |V| for every head; out_proj row r mixes it with sum_c |wo[r, c]|.
  double vmax = 0.0;
  for (std::size_t r = 0; r < l; ++r) {
    for (std::size_t j = 0; j < e; ++j) {
      double a = w.bv[j];
      for (std::size_t k = 0; k < e; ++k) a += double(w.wv[j * e + k]) * x[r * e + k];
      vmax = std::max(vmax, std::fabs(a));
    }
  }
  double wo_row = 0.0;
  for (std::size_t r = 0; r < e; ++r) {
    double s = 0.0;
    for (std::size_t c = 0; c < e; ++c) s += std::fabs(w.wo[r * e + c]);
    wo_row = std::max(wo_row, s);
  }
  for (std::size_t i = 0; i < exact.size(); ++i) EXPECT_LE(std::fabs(approx[i] - exact[i]), tau * vmax * wo_row + 1e-6);
}

// The same weights behind a linear type GatedAttention does not know: it then projects
// every query head and reads every head in out_proj, the reference for the head groups.
template <class L>
struct OpaqueOf {
  L inner;
  void forward(ds::ConstMatrixView x, ds::MatrixView y, ds::Workspace& ws) const {
    inner.forward(x, y, ws);
  }
  std::size_t in_features() const noexcept { return inner.in_features(); }
  std::size_t out_features() const noexcept { return inner.out_features(); }
};
using Opaque = OpaqueOf<Dense>;

TEST(GatedAttentionSkip, HeadsNoQueryNeedsAreSkippedInTheProjectionsToo) {
  // Heads 1, 2 and 5 are gated off for every query: q_proj (and, without a cache, k_proj
  // and v_proj) leave them out and out_proj does not read them (DenseF32's group
  // products); the output must not change. Also
  // through AnyLinear, with rotary positions, element-wise gates, batch_first, and through
  // the cache one and three tokens at a time.
  const std::size_t e = 64, h = 8, d = 8, l = 21, batch = 2;
  struct Case {
    float rotary;
    nn::HeadGate kind;
    bool batch_first;
    std::size_t step;  // tokens per forward_cached call; 0: no cached decoding
  };
  for (const Case& k : {Case{0.0f, nn::HeadGate::Headwise, false, 1},
                        Case{10000.0f, nn::HeadGate::Headwise, false, 3},
                        Case{0.0f, nn::HeadGate::Elementwise, true, 0},
                        Case{10000.0f, nn::HeadGate::Elementwise, false, 1}}) {
    const bool elementwise = k.kind == nn::HeadGate::Elementwise;
    const std::size_t gw = elementwise ? e : h;
    RandomLayer w(e, gw, 71u);
    for (std::size_t hd : {1u, 2u, 5u}) {
      for (std::size_t c = 0; c < (elementwise ? d : 1); ++c)
        w.bg[elementwise ? hd * d + c : hd] = -40.0f;
    }
    const auto x = uniform_floats(l * batch * e, -1.0f, 1.0f, 72u);
    auto cfg = head_config(e, h, k.kind, elementwise ? 0.9f : 0.3f);
    cfg.rotary_base = k.rotary;
    cfg.batch_first = k.batch_first;
    const auto opaque = [&](const std::vector<float>& m, std::size_t rows,
                            const std::vector<float>& b,
                            const char* n) { return Opaque{dense(m, rows, e, b, n)}; };
    const nn::GatedAttention<Opaque> ref(
        cfg, opaque(w.wq, e, w.bq, "q"), opaque(w.wk, e, w.bk, "k"), opaque(w.wv, e, w.bv, "v"),
        opaque(w.wo, e, w.bo, "out"), opaque(w.wg, gw, w.bg, "gate"));
    const auto any = [&](const std::vector<float>& m, std::size_t rows, const std::vector<float>& b,
                         const char* n) { return nn::AnyLinear(dense(m, rows, e, b, n)); };
    const nn::GatedAttention<nn::AnyLinear> via_any(
        cfg, any(w.wq, e, w.bq, "q"), any(w.wk, e, w.bk, "k"), any(w.wv, e, w.bv, "v"),
        any(w.wo, e, w.bo, "out"), any(w.wg, gw, w.bg, "gate"));
    const auto fast = w.make(cfg);
    nn::AttentionMasks causal;
    causal.causal = true;
    const std::size_t rows = l * batch;
    std::vector<float> want(rows * e), got(rows * e), got_any(rows * e);
    // A workspace each: in a shared one, a projection left out by mistake would find the
    // reference's values at the same addresses.
    ds::Workspace ws, ws_ref, ws_any;
    const ds::ConstMatrixView xv(x.data(), rows, e);
    const auto s_ref =
        ref.forward(xv, xv, xv, batch, ds::MatrixView(want.data(), rows, e), ws_ref, causal);
    const auto s_fast =
        fast.forward(xv, xv, xv, batch, ds::MatrixView(got.data(), rows, e), ws, causal);
    via_any.forward(xv, xv, xv, batch, ds::MatrixView(got_any.data(), rows, e), ws_any, causal);
    const std::string what = "rotary " + std::to_string(k.rotary) +
                             (elementwise ? " elementwise" : " headwise") +
                             (k.batch_first ? " batch_first" : "");
    EXPECT_EQ(s_fast.skipped, s_ref.skipped) << what;
    EXPECT_GE(s_fast.skipped, 3 * rows) << what;  // at least the three closed heads
    EXPECT_LT(s_fast.skipped, h * rows) << what;
    double scale = 0.0;
    for (float v : want) scale = std::max(scale, std::fabs(double(v)));
    for (std::size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-6 * scale) << what << " i=" << i;
      ASSERT_NEAR(got_any[i], want[i], 1e-6 * scale) << what << " i=" << i;
    }
    if (k.step == 0) continue;
    // Through the cache (the used heads change with every call). batch_first is off here:
    // the rows of tokens i .. i + step - 1 are i * batch .. (i + step) * batch - 1.
    nn::KVCache cache(batch, h, e / h, l);
    std::vector<float> dec(rows * e);
    for (std::size_t i = 0; i < l; i += k.step) {
      fast.forward_cached(ds::ConstMatrixView(x.data() + i * batch * e, k.step * batch, e), batch,
                          cache, ds::MatrixView(dec.data() + i * batch * e, k.step * batch, e), ws);
    }
    for (std::size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(dec[i], want[i], 1e-5 * scale) << what << " decode i=" << i;
  }
}

// A head-gated layer whose projections come from make(weights, out, bias, name) (an
// AnyLinear that leaves closed heads out), against the same projections behind a wrapper that
// always computes everything: the same skipped pairs (at least `closed` per row), the same
// output in forward() and when decoding through the cache. Closed heads' gate biases must be
// set in w already.
template <class Make>
void expect_matches_computing_everything(const RandomLayer& w, std::size_t e, std::size_t h,
                                         std::size_t l, std::size_t closed, unsigned seed,
                                         const Make& make, const std::string& what) {
  const std::size_t batch = 2, rows = l * batch;
  const auto cfg = head_config(e, h, nn::HeadGate::Headwise, 0.3f);
  const auto opaque = [&](const std::vector<float>& m, std::size_t out, const std::vector<float>& b,
                          const char* n) { return OpaqueOf<nn::AnyLinear>{make(m, out, b, n)}; };
  const nn::GatedAttention<nn::AnyLinear> layer(
      cfg, make(w.wq, e, w.bq, "q"), make(w.wk, e, w.bk, "k"), make(w.wv, e, w.bv, "v"),
      make(w.wo, e, w.bo, "out"), make(w.wg, h, w.bg, "gate"));
  const nn::GatedAttention<OpaqueOf<nn::AnyLinear>> ref(
      cfg, opaque(w.wq, e, w.bq, "q"), opaque(w.wk, e, w.bk, "k"), opaque(w.wv, e, w.bv, "v"),
      opaque(w.wo, e, w.bo, "out"), opaque(w.wg, h, w.bg, "gate"));
  const auto x = uniform_floats(rows * e, -1.0f, 1.0f, seed);
  nn::AttentionMasks causal;
  causal.causal = true;
  std::vector<float> want(rows * e), got(rows * e), dec(rows * e);
  ds::Workspace ws,
      ws_ref;  // separate: work left out by mistake must not find the reference's values
  const ds::ConstMatrixView xv(x.data(), rows, e);
  const auto s_ref =
      ref.forward(xv, xv, xv, batch, ds::MatrixView(want.data(), rows, e), ws_ref, causal);
  const auto s_got =
      layer.forward(xv, xv, xv, batch, ds::MatrixView(got.data(), rows, e), ws, causal);
  EXPECT_EQ(s_got.skipped, s_ref.skipped) << what;
  EXPECT_GE(s_got.skipped, closed * rows) << what;
  double scale = 0.0;
  for (float v : want) scale = std::max(scale, std::fabs(double(v)));
  ASSERT_GT(scale, 0.0);
  for (std::size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-6 * scale) << what << " " << i;
  nn::KVCache cache(batch, h, e / h, l);
  for (std::size_t i = 0; i < l; ++i) {
    layer.forward_cached(ds::ConstMatrixView(x.data() + i * batch * e, batch, e), batch, cache,
                         ds::MatrixView(dec.data() + i * batch * e, batch, e), ws);
  }
  // Cached K and V are those of the full forward pass up to the order of float sums.
  for (std::size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(dec[i], want[i], 1e-5 * scale) << what << " decode " << i;
}

TEST(GatedAttentionSkip, Int8ProjectionsLeaveOutTilesOfClosedHeads) {
  // E = 128, 8 heads of 16: DenseI8 computes q_proj (and, without a cache, k_proj and
  // v_proj) by 64-column tiles, four heads each. Heads 4-7 (the second tile) and head 1
  // are closed for every query, so the second tile is never computed.
  const std::size_t e = 128, h = 8;
  RandomLayer w(e, h, 81u);
  for (std::size_t hd : {1u, 4u, 5u, 6u, 7u}) w.bg[hd] = -40.0f;
  const auto i8 = [&](const std::vector<float>& m, std::size_t out, const std::vector<float>& b,
                      const char* n) {
    return nn::AnyLinear(nn::Linear<ds::quant::DenseI8>(
        ds::quant::DenseI8(ds::ConstMatrixView(m.data(), out, e), b, n)));
  };
  expect_matches_computing_everything(w, e, h, 13, 5, 82u, i8, "dense_i8");
}

TEST(GatedAttentionSkip, GroupSparseProjectionsLeaveOutBlockRowsOfClosedHeads) {
  // E = 128, 16 heads of 8: a group-sparse q_proj with blocks of 16 outputs holds two heads
  // per block-row. Heads 2, 3 (one whole block-row) and 6 are closed for every query, so
  // that block-row is never computed. In float and INT8, at half the blocks pruned.
  const std::size_t e = 128, h = 16;
  RandomLayer w(e, h, 83u);
  for (std::size_t hd : {2u, 3u, 6u}) w.bg[hd] = -40.0f;
  for (bool int8 : {false, true}) {
    const auto sparse = [&](const std::vector<float>& m, std::size_t out,
                            const std::vector<float>& b, const char* n) {
      const ds::ConstMatrixView wv(m.data(), out, e);
      const auto mask = ds::sparse::prune_by_norm(wv, {{16, 4}, 0.5, false});
      return int8 ? nn::AnyLinear(nn::Linear<ds::sparse::GroupSparseI8>(
                        ds::sparse::GroupSparseI8(wv, mask, b, n)))
                  : nn::AnyLinear(nn::Linear<ds::sparse::GroupSparseF32>(
                        ds::sparse::GroupSparseF32(wv, mask, b, n)));
    };
    expect_matches_computing_everything(w, e, h, 11, 3, 84u, sparse,
                                        int8 ? "gsparse_i8" : "gsparse_f32");
  }
}

// A causal forward of a layer of embed_dim e (heads e / 8) over `batch` sequences of 70
// tokens on `threads` threads, against one thread.
void expect_threads_match_one(std::size_t e, std::size_t batch, int threads, unsigned seed,
                              std::size_t l = 70) {
  const RandomLayer w(e, e, seed);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;  // heads default to e / 8
  const auto layer = w.make(cfg);
  EXPECT_EQ(layer.num_heads(), e / 8);
  const auto x = uniform_floats(l * batch * e, -1.0f, 1.0f, seed + 1);
  nn::AttentionMasks causal;
  causal.causal = true;
  ds::set_num_threads(1);
  const auto one = run(layer, x, batch, causal);
  ds::set_num_threads(threads);
  const auto many = run(layer, x, batch, causal);
  ds::set_num_threads(0);
  for (std::size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(one[i], many[i], 1e-6f) << i;
}

TEST(GatedAttentionThreads, TwoThreadsMatchOne) { expect_threads_match_one(64, 3, 2, 31u); }

TEST(GatedAttentionThreads, ThreeThreadsSplittingTwoHeadsIntoRowChunksMatchOne) {
  // One sequence of two heads on three threads: each head is cut into three chunks of
  // query rows, and the second and third threads start inside a head (unit 2 is chunk 2 of
  // head 0, unit 4 chunk 1 of head 1). 128 rows: attention takes a thread per
  // parallel_min_macs_f32 multiply-adds (2 x 128 x 128 x 8 x 2 = 4 x 2^17 here).
  expect_threads_match_one(16, 1, 3, 33u, 128);
}

// Full causal forward vs token-by-token decoding through a cache. For INT8 the layer has
// no gate and an identity out_proj, so the output is the heads' attention, where the
// error bound of nn::KVDType::I8 applies directly (I8Compact: its steps are up to sqrt(2)
// times I8's, and under the bound's max|k| and max|v| over everything, so the bound holds
// with 254 / sqrt(2) in place of 254).
// A cache longer than 256 tokens takes the blocked and paneled layouts.
void decode_matches_full(nn::KVDType dtype, bool batch_first, std::size_t l = 33,
                         std::size_t max_len = 36) {
  const std::size_t e = 64, h = 8, d = 8, batch = 2;
  const bool int8 = dtype != nn::KVDType::F32;
  const double unit = dtype == nn::KVDType::I8Compact ? 254.0 / std::sqrt(2.0) : 254.0;
  const RandomLayer w(e, e, 41u, int8);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  cfg.num_heads = h;
  cfg.batch_first = batch_first;
  cfg.gate = int8 ? nn::GatePosition::None : nn::GatePosition::Output;
  const auto layer = w.make(cfg);
  const auto x = uniform_floats(l * batch * e, -1.0f, 1.0f, 42u);
  nn::AttentionMasks causal;
  causal.causal = true;
  const auto full = run(layer, x, batch, causal);

  const auto layout = layer.layout();
  auto decode = [&](nn::KVDType kv) {
    nn::KVCache cache(batch, h, d, max_len, kv);
    ds::Workspace ws;
    std::vector<float> step_in(batch * e), step_out(batch * e), decoded(full.size());
    for (std::size_t t = 0; t < l; ++t) {
      for (std::size_t n = 0; n < batch; ++n) {
        std::copy_n(&x[nn::layout_row(layout, n, t, l, batch) * e], e, &step_in[n * e]);
      }
      // One token per sequence: both layouts store it as row n.
      layer.forward_cached(ds::ConstMatrixView(step_in.data(), batch, e), batch, cache,
                           ds::MatrixView(step_out.data(), batch, e), ws);
      for (std::size_t n = 0; n < batch; ++n) {
        std::copy_n(&step_out[n * e], e, &decoded[nn::layout_row(layout, n, t, l, batch) * e]);
      }
    }
    EXPECT_EQ(cache.size(), l);
    return decoded;
  };
  const auto decoded = decode(dtype);
  if (!int8) {
    // 1e-5 relative to the output's scale (the projections of one row and of all rows may
    // sum in different orders).
    double scale = 0.0;
    for (float v : full) scale = std::max(scale, std::fabs(double(v)));
    for (std::size_t i = 0; i < full.size(); ++i) EXPECT_NEAR(decoded[i], full[i], 1e-5 * scale) << i;
    return;
  }
  // |k|, |v| over everything, and each row's q, in double.
  auto project = [&](const std::vector<float>& wm, const std::vector<float>& b, std::size_t r, std::size_t j) {
    double a = b[j];
    for (std::size_t k = 0; k < e; ++k) a += double(wm[j * e + k]) * x[r * e + k];
    return a;
  };
  double kmax = 0.0, vmax = 0.0;
  for (std::size_t r = 0; r < l * batch; ++r) {
    for (std::size_t j = 0; j < e; ++j) {
      kmax = std::max(kmax, std::fabs(project(w.wk, w.bk, r, j)));
      vmax = std::max(vmax, std::fabs(project(w.wv, w.bv, r, j)));
    }
  }
  double worst = 0.0, int8_err = 0.0;
  for (std::size_t r = 0; r < l * batch; ++r) {
    for (std::size_t hd = 0; hd < h; ++hd) {
      double q1 = 0.0;
      for (std::size_t c = 0; c < d; ++c) q1 += std::fabs(project(w.wq, w.bq, r, hd * d + c));
      const double eps_s = q1 * kmax / (unit * std::sqrt(double(d)));
      const double bound = vmax / unit + vmax * (std::exp(2.0 * eps_s) - 1.0) + 1e-5;
      for (std::size_t c = 0; c < d; ++c) {
        const double err = std::fabs(double(decoded[r * e + hd * d + c]) - full[r * e + hd * d + c]);
        EXPECT_LE(err, bound) << r << "," << hd << "," << c;
        worst = std::max(worst, err / bound);
        int8_err = std::max(int8_err, err);
      }
    }
  }
  // It did go through INT8: float decoding differs from the full forward by rounding only
  // (under 1e-7 here), INT8 by its steps (3e-3 to 4e-3).
  const auto float_decoded = decode(nn::KVDType::F32);
  double float_err = 0.0;
  for (std::size_t i = 0; i < full.size(); ++i) {
    float_err = std::max(float_err, std::fabs(double(float_decoded[i]) - full[i]));
  }
  EXPECT_GT(int8_err, 100.0 * float_err) << "INT8 " << int8_err << ", float " << float_err;
  EXPECT_GT(worst, 0.0);
}

TEST(GatedAttentionDecode, Float32CacheEqualsFullCausalForward) {
  decode_matches_full(nn::KVDType::F32, false);
  decode_matches_full(nn::KVDType::F32, true);
}

TEST(GatedAttentionDecode, Int8CacheStaysWithinBound) { decode_matches_full(nn::KVDType::I8, false); }

TEST(GatedAttentionDecode, CompactInt8CacheStaysWithinItsBound) {
  decode_matches_full(nn::KVDType::I8Compact, false);
  decode_matches_full(nn::KVDType::I8Compact, true, 300, 520);
}

TEST(GatedAttentionDecode, LongCachesInTheirBlockedLayoutsMatchTheFullForward) {
  decode_matches_full(nn::KVDType::F32, false, 300, 520);
  decode_matches_full(nn::KVDType::I8, true, 300, 520);
}

TEST(GatedAttentionDecode, PrefillThenDecodeEqualsFullForward) {
  const std::size_t e = 64, h = 8, l = 20, prefix = 13;
  const RandomLayer w(e, e, 51u);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  cfg.num_heads = h;
  const auto layer = w.make(cfg);
  const auto x = uniform_floats(l * e, -1.0f, 1.0f, 52u);
  nn::AttentionMasks causal;
  causal.causal = true;
  const auto full = run(layer, x, 1, causal);
  nn::KVCache cache(1, h, e / h, l);
  ds::Workspace ws;
  std::vector<float> out(l * e);
  layer.forward_cached(ds::ConstMatrixView(x.data(), prefix, e), 1, cache, ds::MatrixView(out.data(), prefix, e), ws);
  layer.forward_cached(ds::ConstMatrixView(x.data() + prefix * e, l - prefix, e), 1, cache,
                       ds::MatrixView(out.data() + prefix * e, l - prefix, e), ws);
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], full[i], 1e-5) << i;
  // The cache is full now: one more token is past its maximum.
  try {
    layer.forward_cached(ds::ConstMatrixView(x.data(), 1, e), 1, cache, ds::MatrixView(out.data(), 1, e), ws);
    FAIL() << "no throw";
  } catch (const ds::ShapeError& err) {
    EXPECT_STREQ(err.what(),
                 "dynasparse.nn: sequence beyond the cache's maximum length; expected <= 20 tokens, got 21 tokens "
                 "[kv_cache]");
  }
  nn::KVCache wrong(1, 4, 16, 8);
  EXPECT_THROW(layer.forward_cached(ds::ConstMatrixView(x.data(), 1, e), 1, wrong, ds::MatrixView(out.data(), 1, e),
                                    ws),
               ds::ConfigError);
}

// Batched decoding of left-padded sequences with an additive bias: masks given to
// forward_cached() cover every cached key, and decoding equals the full causal forward with
// the same masks.
TEST(GatedAttentionCache, MasksApplyToEveryCachedKey) {
  const std::size_t e = 64, h = 8, l = 12, batch = 2, pad = 3;
  const RandomLayer w(e, e, 55u);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  cfg.num_heads = h;
  cfg.batch_first = true;
  cfg.gate = nn::GatePosition::Head;
  cfg.head_gate = nn::HeadGate::Elementwise;
  const auto layer = w.make(cfg);
  const auto x = uniform_floats(batch * l * e, -1.0f, 1.0f, 56u);
  const auto bias = uniform_floats(l * l, -2.0f, 2.0f, 57u);
  std::unique_ptr<bool[]> padding(new bool[batch * l]);
  for (std::size_t n = 0; n < batch; ++n) {
    for (std::size_t j = 0; j < l; ++j) padding[n * l + j] = n == 1 && j < pad;  // sequence 1 is left-padded
  }
  nn::AttentionMasks full_masks;
  full_masks.causal = true;
  full_masks.attn_mask = ds::ConstMatrixView(bias.data(), l, l);
  full_masks.key_padding_mask = ds::TensorView<const bool>(padding.get(), batch, l);
  const auto full = run(layer, x, batch, full_masks);

  nn::KVCache cache(batch, h, e / h, l);
  ds::Workspace ws;
  std::vector<float> in(batch * e), out(batch * e);
  double scale = 0.0;
  for (float v : full) scale = std::isnan(v) ? scale : std::max(scale, std::fabs(double(v)));
  for (std::size_t t = 0; t < l; ++t) {
    for (std::size_t n = 0; n < batch; ++n) std::copy_n(&x[(n * l + t) * e], e, &in[n * e]);
    nn::AttentionMasks m;
    m.attn_mask = ds::ConstMatrixView(bias.data() + t * l, 1, t + 1, l);
    m.key_padding_mask = ds::TensorView<const bool>(padding.get(), batch, t + 1, l);
    layer.forward_cached(ds::ConstMatrixView(in.data(), batch, e), batch, cache, ds::MatrixView(out.data(), batch, e),
                         ws, m);
    for (std::size_t n = 0; n < batch; ++n) {
      for (std::size_t c = 0; c < e; ++c) {
        const float want = full[(n * l + t) * e + c], got = out[n * e + c];
        if (n == 1 && t < pad) {
          // Only padding to attend to: NaN, as in PyTorch (and as the full forward).
          EXPECT_TRUE(std::isnan(want) && std::isnan(got)) << t << "," << c;
        } else {
          ASSERT_NEAR(got, want, 1e-5 * scale) << "sequence " << n << " token " << t << " feature " << c;
        }
      }
    }
  }
  // The same decoding without the masks gives other outputs: the masks really act.
  nn::KVCache plain(batch, h, e / h, l);
  for (std::size_t t = 0; t < l; ++t) {
    for (std::size_t n = 0; n < batch; ++n) std::copy_n(&x[(n * l + t) * e], e, &in[n * e]);
    layer.forward_cached(ds::ConstMatrixView(in.data(), batch, e), batch, plain, ds::MatrixView(out.data(), batch, e),
                         ws);
  }
  EXPECT_GT(std::fabs(out[e] - full[(l + l - 1) * e]), 1e-4);

  // A mask shaped for the new tokens only (not every cached key) is refused before the
  // cache changes.
  nn::AttentionMasks wrong;
  wrong.key_padding_mask = ds::TensorView<const bool>(padding.get(), batch, 1, l);
  nn::KVCache c2(batch, h, e / h, l);
  layer.forward_cached(ds::ConstMatrixView(in.data(), batch, e), batch, c2, ds::MatrixView(out.data(), batch, e), ws);
  EXPECT_THROW(layer.forward_cached(ds::ConstMatrixView(in.data(), batch, e), batch, c2,
                                    ds::MatrixView(out.data(), batch, e), ws, wrong),
               ds::ShapeError);
  EXPECT_EQ(c2.size(), 1u);
}

TEST(GatedAttentionErrors, ShapesAndConfigNameTheTensorAndBothSizes) {
  const std::size_t e = 64;
  const RandomLayer w(e, e, 61u);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  const auto layer = w.make(cfg);
  ds::Workspace ws;
  std::vector<float> x(10 * e), y(10 * e);
  const ds::ConstMatrixView ok(x.data(), 10, e);
  const ds::MatrixView out(y.data(), 10, e);
  try {
    layer.forward(ds::ConstMatrixView(x.data(), 10, 63), ok, ok, 1, out, ws);
    FAIL() << "no throw";
  } catch (const ds::ShapeError& err) {
    EXPECT_STREQ(err.what(), "dynasparse.nn: tensor feature size mismatch; expected [10, 64], got [10, 63] "
                             "[attention query]");
  }
  std::vector<float> m(9 * 10);
  nn::AttentionMasks masks;
  masks.attn_mask = ds::ConstMatrixView(m.data(), 9, 10);
  try {
    layer.forward(ok, ok, ok, 1, out, ws, masks);
    FAIL() << "no throw";
  } catch (const ds::ShapeError& err) {
    EXPECT_STREQ(err.what(), "dynasparse.nn: tensor shape mismatch; expected [10, 10], got [9, 10] [attention attn_mask]");
  }
  std::vector<char> kp(3 * 10);
  nn::AttentionMasks pad;
  pad.key_padding_mask = ds::TensorView<const bool>(reinterpret_cast<const bool*>(kp.data()), 3, 10);
  EXPECT_THROW(layer.forward(ok, ok, ok, 2, out, ws, pad), ds::ShapeError);  // [2, 5] expected
  EXPECT_THROW(layer.forward(ok, ok, ok, 3, out, ws), ds::ShapeError);       // 10 rows, 3 sequences
  EXPECT_THROW(layer.forward(ok, ok, ok, 0, out, ws), ds::ConfigError);
  EXPECT_THROW(layer.forward(ok, ds::ConstMatrixView(x.data(), 8, e), ok, 1, out, ws), ds::ShapeError);

  cfg.num_heads = 6;
  try {
    w.make(cfg);
    FAIL() << "no throw";
  } catch (const ds::ConfigError& err) {
    EXPECT_STREQ(err.what(), "dynasparse.nn: embed_dim must be divisible by num_heads; expected a multiple of 6, "
                             "got 64 [attention]");
  }
  cfg.num_heads = 0;
  cfg.embed_dim = 4;
  EXPECT_THROW(nn::resolve_config(cfg), ds::ConfigError);
  cfg.embed_dim = 48;
  EXPECT_EQ(nn::resolve_config(cfg).num_heads, 6u);
  // A projection whose width is not E.
  nn::GatedAttentionConfig c32;
  c32.embed_dim = 32;
  EXPECT_THROW(w.make(c32), ds::ShapeError);
}

TEST(GatedAttentionErrors, LoaderRejectsWeightsOfAnotherWidth) {
  const std::string path = std::string(DYNASPARSE_TEST_DATA_DIR) + "/attention/seed_e64h8_l1_n1.safetensors";
  const ds::io::SafetensorsFile f(path);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = 128;
  cfg.num_heads = 16;
  try {
    nn::load_gated_attention(f, cfg);
    FAIL() << "no throw";
  } catch (const ds::ShapeError& err) {
    EXPECT_STREQ(err.what(), "dynasparse.nn: weight shape mismatch; expected [384, 128], got [192, 64] "
                             "[attention.in_proj_weight]");
  }
}

TEST(GatedAttentionNaN, PropagatesWithoutCrashing) {
  const std::size_t e = 64, l = 9, batch = 2;
  const RandomLayer w(e, e, 71u);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  const auto layer = w.make(cfg);
  auto x = uniform_floats(l * batch * e, -1.0f, 1.0f, 72u);
  x[(4 * batch + 1) * e + 5] = std::numeric_limits<float>::quiet_NaN();  // token 4 of sequence 1
  nn::AttentionMasks causal;
  causal.causal = true;
  const auto out = run(layer, x, batch, causal);
  for (std::size_t t = 0; t < l; ++t) {
    for (std::size_t n = 0; n < batch; ++n) {
      // Sequence 1 from token 4 on reads the NaN key/value; sequence 0 never does.
      const bool poisoned = n == 1 && t >= 4;
      for (std::size_t c = 0; c < e; ++c) {
        EXPECT_EQ(std::isnan(out[(t * batch + n) * e + c]), poisoned) << t << "," << n << "," << c;
      }
    }
  }
}

TEST(GatedAttentionFormats, RunsOverInt8Weights) {
  const std::size_t e = 64, l = 12;
  const RandomLayer w(e, e, 81u);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  using I8 = nn::Linear<ds::quant::DenseI8>;
  auto mk = [&](const std::vector<float>& m, const std::vector<float>& b) {
    return I8(ds::quant::DenseI8(ds::ConstMatrixView(m.data(), e, e), b));
  };
  const nn::GatedAttention<I8> q8(cfg, mk(w.wq, w.bq), mk(w.wk, w.bk), mk(w.wv, w.bv), mk(w.wo, w.bo), mk(w.wg, w.bg));
  const auto f32 = run(w.make(cfg), uniform_floats(l * e, -1.0f, 1.0f, 82u), 1);
  const auto x = uniform_floats(l * e, -1.0f, 1.0f, 82u);
  std::vector<float> out(l * e);
  ds::Workspace ws;
  const ds::ConstMatrixView xv(x.data(), l, e);
  q8.forward(xv, xv, xv, 1, ds::MatrixView(out.data(), l, e), ws);
  double scale = 0.0, err = 0.0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    scale = std::max(scale, std::fabs(double(f32[i])));
    err = std::max(err, std::fabs(double(out[i]) - f32[i]));
  }
  // W8A8 projections: a few percent of the output scale.
  EXPECT_LE(err, 0.1 * scale);
}

TEST(GatedAttentionFormats, AnyLinearMatchesLinearDenseF32) {
  const std::size_t e = 64, l = 11;
  const RandomLayer w(e, e, 91u);
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  auto mk = [&](const std::vector<float>& m, const std::vector<float>& b) -> nn::AnyLinear {
    return Dense(nn::DenseF32(ds::ConstMatrixView(m.data(), e, e), b));
  };
  const nn::GatedAttention<nn::AnyLinear> any(cfg, mk(w.wq, w.bq), mk(w.wk, w.bk), mk(w.wv, w.bv), mk(w.wo, w.bo),
                                              mk(w.wg, w.bg));
  const auto x = uniform_floats(l * e, -1.0f, 1.0f, 92u);
  const auto want = run(w.make(cfg), x, 1);
  std::vector<float> out(l * e);
  ds::Workspace ws;
  const ds::ConstMatrixView xv(x.data(), l, e);
  any.forward(xv, xv, xv, 1, ds::MatrixView(out.data(), l, e), ws);
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], want[i]) << i;
}

}  // namespace
