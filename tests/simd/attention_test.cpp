// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/attention.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"
#include "support/arches.hpp"
#include "support/random.hpp"

namespace {

using namespace dynasparse_test;
namespace ds = dynasparse;
namespace simd = dynasparse::simd;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Budget against a double-precision reference, relative to max |v|: the output is a convex
// combination of values, each weight carrying the error of a d-term float dot product
// (scores here stay below ~10 in magnitude: 10 * d * eps ~ 8e-5 relative at d = 64 would
// be the worst case; random signs keep it well under 1e-5), xsimd::exp's 4 ulp and one
// rescaling per block.
constexpr double kAttentionRel = 2e-5;

// One head's operands with K and V stored transposed and padded rows (stride > lkv).
struct Problem {
  std::size_t lq, lkv, d, stride;
  std::vector<float> q, kt, vt, mask;
  std::vector<char> bool_mask, key_padding;  // char: std::vector<bool> has no data()
  bool use_mask = false, use_bool = false, use_padding = false, causal = false;

  Problem(std::size_t lq_, std::size_t lkv_, std::size_t d_, std::uint32_t seed)
      : lq(lq_), lkv(lkv_), d(d_), stride(lkv_ + 5) {
    q = uniform_floats(lq * d, -2.0f, 2.0f, seed);
    kt = uniform_floats(d * stride, -2.0f, 2.0f, seed + 1);
    vt = uniform_floats(d * stride, -1.0f, 1.0f, seed + 2);
    mask = uniform_floats(lq * lkv, -3.0f, 3.0f, seed + 3);
    const auto coin = uniform_floats(lq * lkv + lkv, 0.0f, 1.0f, seed + 4);
    bool_mask.resize(lq * lkv);
    key_padding.resize(lkv);
    for (std::size_t i = 0; i < lq * lkv; ++i) bool_mask[i] = coin[i] < 0.3f;
    for (std::size_t j = 0; j < lkv; ++j) key_padding[j] = coin[lq * lkv + j] < 0.2f;
  }

  simd::AttentionArgs args(float* out) const {
    simd::AttentionArgs a;
    a.q = q.data();
    a.q_stride = d;
    a.lq = lq;
    a.d = d;
    a.kt = kt.data();
    a.vt = vt.data();
    a.kv_stride = stride;
    a.lkv = lkv;
    a.scale = 1.0f / std::sqrt(static_cast<float>(d));
    if (use_mask) {
      a.mask = mask.data();
      a.mask_stride = lkv;
    }
    if (use_bool) {
      a.bool_mask = reinterpret_cast<const bool*>(bool_mask.data());
      a.bool_mask_stride = lkv;
    }
    if (use_padding) a.key_padding = reinterpret_cast<const bool*>(key_padding.data());
    a.causal = causal;
    a.out = out;
    a.out_stride = d;
    return a;
  }

  // PyTorch's definition in double: masked scores are -inf; a row with only -inf is NaN.
  std::vector<double> reference() const {
    std::vector<double> out(lq * d);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    for (std::size_t i = 0; i < lq; ++i) {
      std::vector<double> s(lkv);
      double m = -kInf;
      for (std::size_t j = 0; j < lkv; ++j) {
        double t = 0.0;
        for (std::size_t c = 0; c < d; ++c) t += static_cast<double>(q[i * d + c]) * kt[c * stride + j];
        t *= scale;
        if (use_mask) t += mask[i * lkv + j];
        if (use_bool && bool_mask[i * lkv + j]) t = -kInf;
        if (use_padding && key_padding[j]) t = -kInf;
        if (causal && j + lq > i + lkv) t = -kInf;
        s[j] = t;
        m = std::max(m, t);
      }
      double sum = 0.0;
      for (double& t : s) {
        t = std::exp(t - m);
        sum += t;
      }
      for (std::size_t c = 0; c < d; ++c) {
        double o = 0.0;
        for (std::size_t j = 0; j < lkv; ++j) o += s[j] * vt[c * stride + j];
        out[i * d + c] = m == -kInf ? std::nan("") : o / sum;
      }
    }
    return out;
  }
};

template <class Arch>
std::vector<float> run_streaming(const Problem& p) {
  std::vector<float> out(p.lq * p.d, 7.0f);
  ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<Arch>(p.d));
  simd::attention_f32<Arch>(p.args(out.data()), scratch.data());
  return out;
}

template <class Arch>
std::vector<float> run_naive(const Problem& p) {
  std::vector<float> out(p.lq * p.d, 7.0f);
  const auto a = p.args(out.data());
  ds::AlignedBuffer<float> scratch(simd::attention_naive_scratch_floats(a));
  simd::attention_naive_f32<Arch>(a, scratch.data());
  return out;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, const Problem& p,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " i=" << i;
    } else {
      EXPECT_NEAR(got[i], want[i], kAttentionRel) << what << " lq=" << p.lq << " lkv=" << p.lkv
                                                  << " d=" << p.d << " i=" << i;
    }
  }
}

template <class Arch>
class SimdAttention : public ::testing::Test {};
TYPED_TEST_SUITE(SimdAttention, FloatArches, ArchNames);

TYPED_TEST(SimdAttention, StreamingNaiveAndScalarMatchReferenceOnOddSizes) {
  std::uint32_t seed = 1;
  for (std::size_t d : {1u, 3u, 8u, 17u, 64u}) {
    for (std::size_t lq : {1u, 3u, 17u, 40u}) {
      for (std::size_t lkv : {1u, 3u, 17u, 127u, 300u}) {
        for (bool causal : {false, true}) {
          Problem p(lq, lkv, d, seed += 7);
          p.causal = causal;
          const auto want = p.reference();
          expect_close(run_streaming<TypeParam>(p), want, p, "streaming");
          expect_close(run_naive<TypeParam>(p), want, p, "naive");
        }
      }
    }
  }
}

TYPED_TEST(SimdAttention, ScalarTwinAgrees) {
  Problem p(19, 259, 8, 3u);
  p.use_mask = true;
  const auto want = run_streaming<simd::ScalarArch>(p);
  const auto got = run_streaming<TypeParam>(p);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], kAttentionRel) << i;
}

TYPED_TEST(SimdAttention, MasksPaddingAndCausalFollowPyTorch) {
  std::uint32_t seed = 100;
  for (std::size_t d : {8u, 64u}) {
    for (int variant = 0; variant < 8; ++variant) {
      Problem p(23, 261, d, seed += 11);
      p.use_mask = variant & 1;
      p.use_bool = variant & 2;
      p.use_padding = variant & 4;
      p.causal = variant == 7;
      const auto want = p.reference();
      expect_close(run_streaming<TypeParam>(p), want, p, "streaming");
      expect_close(run_naive<TypeParam>(p), want, p, "naive");
    }
  }
}

TYPED_TEST(SimdAttention, FullyMaskedRowIsNaNAndOthersAreNot) {
  Problem p(5, 200, 8, 9u);
  p.use_bool = true;
  std::fill(p.bool_mask.begin(), p.bool_mask.end(), 0);
  for (std::size_t j = 0; j < p.lkv; ++j) p.bool_mask[2 * p.lkv + j] = 1;
  // Float mask of -inf on another row: the same outcome through the additive path.
  p.use_mask = true;
  std::fill(p.mask.begin(), p.mask.end(), 0.0f);
  for (std::size_t j = 0; j < p.lkv; ++j) p.mask[4 * p.lkv + j] = -kInf;
  for (const auto& out : {run_streaming<TypeParam>(p), run_naive<TypeParam>(p)}) {
    for (std::size_t i = 0; i < p.lq; ++i) {
      for (std::size_t c = 0; c < p.d; ++c) {
        EXPECT_EQ(std::isnan(out[i * p.d + c]), i == 2 || i == 4) << i << "," << c;
      }
    }
  }
}

TYPED_TEST(SimdAttention, NaNAndInfinityPropagate) {
  Problem p(4, 150, 8, 21u);
  p.q[1 * p.d + 3] = kNaN;       // one query row
  p.kt[2 * p.stride + 140] = kInf;  // +inf score for rows with q[2] > 0, -inf for q[2] < 0
  const auto out = run_streaming<TypeParam>(p);
  const auto want = p.reference();
  for (std::size_t c = 0; c < p.d; ++c) EXPECT_TRUE(std::isnan(out[1 * p.d + c]));
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_EQ(std::isnan(out[i]), std::isnan(want[i])) << i;
  Problem v(3, 70, 8, 22u);
  v.vt[5 * v.stride + 33] = kNaN;  // a value: every row reads it
  const auto vo = run_streaming<TypeParam>(v);
  for (std::size_t i = 0; i < v.lq; ++i) EXPECT_TRUE(std::isnan(vo[i * v.d + 5])) << i;
}

TYPED_TEST(SimdAttention, LargeScoresDoNotOverflow) {
  Problem p(3, 300, 64, 31u);
  for (float& x : p.q) x *= 40.0f;  // scores in the hundreds
  const auto out = run_streaming<TypeParam>(p);
  const auto want = p.reference();
  for (std::size_t i = 0; i < out.size(); ++i) {
    ASSERT_TRUE(std::isfinite(out[i]));
    EXPECT_NEAR(out[i], want[i], 1e-4) << i;  // scores ~500: the dot product's rounding grows
  }
}

TYPED_TEST(SimdAttention, SelectedRowsOnlyAreWritten) {
  Problem p(37, 130, 8, 41u);
  p.causal = true;
  const std::vector<std::uint32_t> rows = {0, 5, 6, 20, 36};
  std::vector<float> out(p.lq * p.d, 7.0f);
  auto a = p.args(out.data());
  a.rows = rows.data();
  a.num_rows = rows.size();
  ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<TypeParam>(p.d));
  simd::attention_f32<TypeParam>(a, scratch.data());
  const auto want = p.reference();
  for (std::size_t i = 0; i < p.lq; ++i) {
    const bool sel = std::find(rows.begin(), rows.end(), i) != rows.end();
    for (std::size_t c = 0; c < p.d; ++c) {
      if (sel) {
        EXPECT_NEAR(out[i * p.d + c], want[i * p.d + c], kAttentionRel);
      } else {
        EXPECT_EQ(out[i * p.d + c], 7.0f);
      }
    }
  }
}

// p's queries, masks and output with INT8 K and V (same layout as p's float ones).
simd::AttentionArgs int8_args(const Problem& p, float* out, const std::vector<std::int8_t>& k8,
                              const std::vector<std::int8_t>& v8, const std::vector<float>& ks,
                              const std::vector<float>& vs) {
  auto a = p.args(out);
  a.kt = a.vt = nullptr;
  a.kt_s8 = k8.data();
  a.vt_s8 = v8.data();
  a.k_scale = ks.data();
  a.v_scale = vs.data();
  return a;
}

TYPED_TEST(SimdAttention, Int8KeysAndValuesMatchTheirDequantizedFloats) {
  for (std::size_t d : {8u, 64u}) {
    Problem p(9, 333, d, 51u);
    p.causal = true;
    const auto k8 = uniform_int8(d * p.stride, -127, 127, 52u);
    const auto v8 = uniform_int8(d * p.stride, -127, 127, 53u);
    const auto ks = uniform_floats(p.stride, 0.001f, 0.02f, 54u);
    const auto vs = uniform_floats(p.stride, 0.001f, 0.01f, 55u);
    for (std::size_t c = 0; c < d; ++c) {
      for (std::size_t j = 0; j < p.stride; ++j) {
        p.kt[c * p.stride + j] = static_cast<float>(k8[c * p.stride + j]) * ks[j];
        p.vt[c * p.stride + j] = static_cast<float>(v8[c * p.stride + j]) * vs[j];
      }
    }
    std::vector<float> out(p.lq * d);
    const auto a = int8_args(p, out.data(), k8, v8, ks, vs);
    ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<TypeParam>(d));
    simd::attention_s8kv_f32<TypeParam>(a, scratch.data());
    const auto want = p.reference();
    for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want[i], kAttentionRel) << i;
  }
}

// The same K and V in the cache's long layouts: K in panels of 16 keys, V in blocks of 256
// keys with a row stride over 256, both padded with NaN that the kernel may read
// (kv_padded) but must never let through.
struct Relaid {
  std::vector<float> kp, vb;
  std::size_t vstride, vblock_stride;
};

Relaid relay(const Problem& p) {
  constexpr std::size_t panel = simd::attention_k_panel, block = simd::attention_kv_block;
  Relaid r;
  r.vstride = block + 3;
  r.vblock_stride = p.d * r.vstride + 5;
  const std::size_t blocks = (p.lkv + block - 1) / block;
  r.kp.assign((p.lkv + panel - 1) / panel * panel * p.d, kNaN);
  r.vb.assign(blocks * r.vblock_stride, kNaN);
  for (std::size_t c = 0; c < p.d; ++c) {
    for (std::size_t j = 0; j < p.lkv; ++j) {
      r.kp[j / panel * panel * p.d + c * panel + j % panel] = p.kt[c * p.stride + j];
      r.vb[j / block * r.vblock_stride + c * r.vstride + j % block] = p.vt[c * p.stride + j];
    }
  }
  return r;
}

// attention_f32<Arch> of p with K in panels and V in blocks (relay), rows padded.
template <class Arch>
std::vector<float> run_relaid(const Problem& p) {
  const Relaid r = relay(p);
  std::vector<float> out(p.lq * p.d, 7.0f);
  auto a = p.args(out.data());
  a.kt = r.kp.data();
  a.k_panels = true;
  a.vt = r.vb.data();
  a.kv_stride = r.vstride;
  a.kv_block = simd::attention_kv_block;
  a.kv_block_stride = r.vblock_stride;
  a.kv_padded = true;
  ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<Arch>(p.d));
  simd::attention_f32<Arch>(a, scratch.data());
  return out;
}

// attention_f32<Arch> of p in the plain layout, rows padded to a multiple of 16 with `pad`.
template <class Arch>
std::vector<float> run_plain_padded(const Problem& p, float pad) {
  Problem q = p;
  q.stride = (p.lkv + 15) / 16 * 16;
  q.kt.assign(p.d * q.stride, pad);
  q.vt.assign(p.d * q.stride, pad);
  for (std::size_t c = 0; c < p.d; ++c) {
    std::copy_n(p.kt.begin() + c * p.stride, p.lkv, q.kt.begin() + c * q.stride);
    std::copy_n(p.vt.begin() + c * p.stride, p.lkv, q.vt.begin() + c * q.stride);
  }
  std::vector<float> out(p.lq * p.d, 7.0f);
  auto a = q.args(out.data());
  a.kv_padded = true;
  ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<Arch>(p.d));
  simd::attention_f32<Arch>(a, scratch.data());
  return out;
}

TYPED_TEST(SimdAttention, PaneledKBlockedVAndPaddedRowsGiveThePlainResult) {
  std::uint32_t seed = 300;
  for (std::size_t d : {1u, 8u, 17u, 64u}) {
    for (std::size_t lq : {1u, 6u}) {
      for (std::size_t lkv : {1u, 17u, 300u, 530u}) {
        Problem p(lq, lkv, d, seed += 13);
        p.causal = lq > 1;
        p.use_padding = lkv > 100;
        const auto want = p.reference();
        expect_close(run_relaid<TypeParam>(p), want, p, "paneled K, blocked V");
        // Plain layout, rows padded to a multiple of 16 with NaN.
        expect_close(run_plain_padded<TypeParam>(p, kNaN), want, p, "plain, padded");
      }
    }
  }
}

TYPED_TEST(SimdAttention, DecodingRowsEitherSideOfTheOnePassLimitMatchTheReference) {
  // One query over padded K and V: up to attention_decode_row_max_keys keys one pass sums
  // every value column (head_dim <= 8), past it the columns go one by one. Both layouts,
  // with key padding and an additive mask so that the masks reach both kernels.
  constexpr std::size_t limit = simd::detail::attention_decode_row_max_keys;
  std::uint32_t seed = 900;
  for (std::size_t d : {3u, 8u}) {
    for (std::size_t lkv : {limit - 1, limit, limit + 1, limit + 300}) {
      Problem p(1, lkv, d, seed += 11);
      p.use_padding = true;
      p.use_mask = true;
      const auto want = p.reference();
      expect_close(run_relaid<TypeParam>(p), want, p, "paneled K, blocked V");
      expect_close(run_plain_padded<TypeParam>(p, kNaN), want, p, "plain, padded");
    }
  }
}

TYPED_TEST(SimdAttention, DecodingRowsKeepMaskedBlocksAndNaNAsPyTorch) {
  // One query over padded rows (the one-pass decoding kernel at head_dim <= 8): a first
  // block of 256 keys all masked, then admissible keys; the same with a NaN value under a
  // masked key of that block (PyTorch multiplies it by its zero weight: NaN); a NaN key
  // among the first block's admissible ones.
  std::uint32_t seed = 950;
  for (std::size_t d : {1u, 5u, 8u}) {
    for (int variant = 0; variant < 3; ++variant) {
      Problem p(1, 600, d, seed += 3);
      p.use_padding = true;
      for (std::size_t j = 0; j < 600; ++j)
        p.key_padding[j] = (variant < 2 && j < 256) || j % 7 == 0;
      if (variant == 1) p.vt[(d - 1) * p.stride + 17] = kNaN;  // masked key: column d - 1
      if (variant == 2) p.kt[10] = kNaN;                       // admissible key: every column
      const auto want = p.reference();
      for (std::size_t c = 0; c < d; ++c) {
        ASSERT_EQ(std::isnan(want[c]), variant == 2 || (variant == 1 && c == d - 1))
            << "the reference itself, d=" << d << " c=" << c;
      }
      expect_close(run_plain_padded<TypeParam>(p, 0.0f), want, p,
                   variant == 0 ? "masked block" : "NaN");
    }
  }
}

// Blocks of 256 keys, and panels of 16 (the INT8 KV cache's layout).
TYPED_TEST(SimdAttention, BlockedInt8KeysAndValuesMatchTheirDequantizedFloats) {
  for (const std::size_t block : {simd::attention_kv_block, simd::attention_kv_panel_s8}) {
    const bool panels = block == simd::attention_kv_panel_s8;
    const std::size_t d = 8, lkv = 603, stride = block,
                      block_stride = panels ? d * block : d * block + 64;
    const std::size_t blocks = (lkv + block - 1) / block;
    Problem p(3, lkv, d, 61u);
    p.causal = true;
    // Past lkv the int8 storage holds -128, which no quantizer writes: it must not be read.
    std::vector<std::int8_t> k8(blocks * block_stride, -128), v8(blocks * block_stride, -128);
    const auto kq = uniform_int8(d * lkv, -127, 127, 62u);
    const auto vq = uniform_int8(d * lkv, -127, 127, 63u);
    // Scales padded to a multiple of 16 with NaN, which a padded read must not let through.
    auto ks = uniform_floats(608, 0.001f, 0.02f, 64u);
    auto vs = uniform_floats(608, 0.001f, 0.01f, 65u);
    std::fill(ks.begin() + lkv, ks.end(), kNaN);
    std::fill(vs.begin() + lkv, vs.end(), kNaN);
    for (std::size_t c = 0; c < d; ++c) {
      for (std::size_t j = 0; j < lkv; ++j) {
        const std::size_t at = j / block * block_stride + c * stride + j % block;
        k8[at] = kq[c * lkv + j];
        v8[at] = vq[c * lkv + j];
        p.kt[c * p.stride + j] = static_cast<float>(kq[c * lkv + j]) * ks[j];
        p.vt[c * p.stride + j] = static_cast<float>(vq[c * lkv + j]) * vs[j];
      }
    }
    std::vector<float> out(p.lq * d);
    auto a = int8_args(p, out.data(), k8, v8, ks, vs);
    a.kv_stride = stride;
    a.kv_block = block;
    a.kv_block_stride = block_stride;
    ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<TypeParam>(d));
    const auto want = p.reference();
    // Not padded: blocks dequantized first. Padded, with one and with three rows: K and V
    // read as stored where the arch can widen int8 loads.
    for (bool padded : {false, true}) {
      for (std::size_t rows : {1u, 3u}) {
        std::fill(out.begin(), out.end(), 7.0f);
        a.kv_padded = padded;
        const std::uint32_t last[3] = {0, 1, 2};
        a.rows = last + 3 - rows;
        a.num_rows = rows;
        simd::attention_s8kv_f32<TypeParam>(a, scratch.data());
        for (std::size_t i = (3 - rows) * d; i < out.size(); ++i) {
          EXPECT_NEAR(out[i], want[i], kAttentionRel)
              << i << " padded " << padded << " rows " << rows << " block " << block;
        }
      }
    }
  }
}

// One query over padded INT8 K and V (decoding, head_dim <= 8: the one-pass INT8 row),
// plain, in blocks of 256 keys and in panels of 16, with per-key scales and with compact ones: the
// dequantized floats' result within the float budget, and with compact scales the bits the same
// kernel gives with them expanded beforehand. Past lkv the values hold -128 (never written by a
// quantizer) and the scales NaN: both may be read, neither may get through. A NaN V scale
// under a masked key makes the row NaN, as PyTorch multiplies a NaN value by its zero weight.
TYPED_TEST(SimdAttention, Int8DecodingRowsMatchTheirDequantizedFloats) {
  constexpr std::size_t big_block = simd::attention_kv_block;
  std::uint32_t seed = 1200;
  for (std::size_t d : {1u, 4u, 5u, 8u}) {
    for (std::size_t lkv : {1u, 17u, 300u, 600u, 2100u}) {
      for (int layout = 0; layout < 3; ++layout) {  // plain, blocks of 256, panels of 16
        // Past attention_decode_row_max_keys only panels keep the one-pass row.
        if (lkv > simd::detail::attention_decode_row_max_keys && layout != 2) continue;
        const bool blocked = layout != 0;
        const std::size_t block = layout == 2 ? simd::attention_kv_panel_s8 : big_block;
        for (bool compact : {false, true}) {
          Problem p(1, lkv, d, seed += 17);
          p.use_padding = true;
          p.use_mask = true;
          p.key_padding[lkv - 1] = 0;  // a key to attend to
          const bool nan_masked = lkv == 300 && !compact;
          const std::size_t readable = (lkv + 15) / 16 * 16;
          const std::size_t stride = blocked ? block : readable;
          const std::size_t block_stride = layout == 2 ? d * block : d * block + 64;
          const std::size_t blocks = (lkv + block - 1) / block;
          std::vector<std::int8_t> k8(blocked ? blocks * block_stride : d * stride, -128), v8 = k8;
          const auto kq = uniform_int8(d * lkv, -127, 127, seed + 1);
          const auto vq = uniform_int8(d * lkv, -127, 127, seed + 2);
          auto ks = uniform_floats(readable, 0.001f, 0.02f, seed + 3);
          auto vs = uniform_floats(readable, 0.001f, 0.01f, seed + 4);
          std::fill(ks.begin() + lkv, ks.end(), kNaN);
          std::fill(vs.begin() + lkv, vs.end(), kNaN);
          std::vector<std::uint8_t> kc((readable + 1) / 2), vc((readable + 1) / 2);
          const auto r1 = uniform_int8(readable, 0, 14, seed + 5),
                     r2 = uniform_int8(readable, 0, 14, seed + 6);
          for (std::size_t j = 0; j < readable; ++j) {
            kc[j / 2] = static_cast<std::uint8_t>(kc[j / 2] | (r1[j] << (4 * (j % 2))));
            vc[j / 2] = static_cast<std::uint8_t>(vc[j / 2] | (r2[j] << (4 * (j % 2))));
          }
          std::size_t masked = lkv;
          if (nan_masked) {
            for (masked = 0; !p.key_padding[masked]; ++masked) {
            }
            vs[masked] = kNaN;
          }
          std::vector<float> eks(readable, kNaN), evs(readable, kNaN);
          for (std::size_t j = 0; j < lkv; ++j) {
            eks[j] = compact ? simd::AttentionArgs::scale_at(ks.data(), kc.data(), j) : ks[j];
            evs[j] = compact ? simd::AttentionArgs::scale_at(vs.data(), vc.data(), j) : vs[j];
          }
          for (std::size_t c = 0; c < d; ++c) {
            for (std::size_t j = 0; j < lkv; ++j) {
              const std::size_t at =
                  blocked ? j / block * block_stride + c * stride + j % block : c * stride + j;
              k8[at] = kq[c * lkv + j];
              v8[at] = vq[c * lkv + j];
              p.kt[c * p.stride + j] = static_cast<float>(kq[c * lkv + j]) * eks[j];
              p.vt[c * p.stride + j] = static_cast<float>(vq[c * lkv + j]) * evs[j];
            }
          }
          const auto want = p.reference();
          for (std::size_t c = 0; c < d; ++c) ASSERT_EQ(std::isnan(want[c]), nan_masked) << c;
          ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<TypeParam>(d));
          auto run = [&](const std::vector<float>& kscale, const std::vector<float>& vscale,
                         bool codes) {
            std::vector<float> out(d, 7.0f);
            auto a = int8_args(p, out.data(), k8, v8, kscale, vscale);
            a.kv_stride = stride;
            if (blocked) {
              a.kv_block = block;
              a.kv_block_stride = block_stride;
            }
            a.kv_padded = true;
            if (codes) {
              a.k_code = kc.data();
              a.v_code = vc.data();
            }
            simd::attention_s8kv_f32<TypeParam>(a, scratch.data());
            return out;
          };
          const auto got = run(ks, vs, compact);
          const std::string where = "d " + std::to_string(d) + " lkv " + std::to_string(lkv) +
                                    " layout " + std::to_string(layout) + " compact " +
                                    std::to_string(compact);
          expect_close(got, want, p, where.c_str());
          if (compact) {
            const auto expanded = run(eks, evs, false);
            for (std::size_t c = 0; c < d; ++c)
              EXPECT_EQ(got[c], expanded[c]) << where << " c " << c;
          }
        }
      }
    }
  }
}

// The INT8 decoding row at the edges of DecodingRowsKeepMaskedBlocksAndNaNAsPyTorch: a first
// block of 256 keys all masked (the row's running max stays -inf through it), then
// admissible keys; the same with a NaN V scale (per-key scales) or a code 15 (compact) under
// a masked key of that block, which PyTorch's dequantized values make NaN in every column.
TYPED_TEST(SimdAttention, Int8DecodingRowsKeepMaskedBlocksAndNaNAsPyTorch) {
  std::uint32_t seed = 1300;
  for (std::size_t d : {1u, 5u, 8u}) {
    for (int variant = 0; variant < 3; ++variant) {
      const bool compact = variant == 2;
      Problem p(1, 600, d, seed += 5);
      p.use_padding = true;
      for (std::size_t j = 0; j < 600; ++j) p.key_padding[j] = j < 256 || j % 7 == 0;
      const std::size_t readable = 608, stride = readable;
      std::vector<std::int8_t> k8(d * stride, -128), v8(d * stride, -128);
      const auto kq = uniform_int8(d * 600, -127, 127, seed + 1);
      const auto vq = uniform_int8(d * 600, -127, 127, seed + 2);
      auto ks = uniform_floats(readable, 0.001f, 0.02f, seed + 3);
      auto vs = uniform_floats(readable, 0.001f, 0.01f, seed + 4);
      std::fill(ks.begin() + 600, ks.end(), kNaN);
      std::fill(vs.begin() + 600, vs.end(), kNaN);
      std::vector<std::uint8_t> kc(readable / 2), vc(readable / 2);
      const auto r1 = uniform_int8(readable, 0, 14, seed + 5),
                 r2 = uniform_int8(readable, 0, 14, seed + 6);
      for (std::size_t j = 0; j < readable; ++j) {
        kc[j / 2] = static_cast<std::uint8_t>(kc[j / 2] | (r1[j] << (4 * (j % 2))));
        vc[j / 2] = static_cast<std::uint8_t>(vc[j / 2] | (r2[j] << (4 * (j % 2))));
      }
      if (variant == 1) vs[17] = kNaN;
      if (variant == 2) vc[17 / 2] = static_cast<std::uint8_t>((vc[17 / 2] & 0x0Fu) | 0xF0u);
      for (std::size_t c = 0; c < d; ++c) {
        for (std::size_t j = 0; j < 600; ++j) {
          const float kscale =
              compact ? simd::AttentionArgs::scale_at(ks.data(), kc.data(), j) : ks[j];
          const float vscale =
              compact ? simd::AttentionArgs::scale_at(vs.data(), vc.data(), j) : vs[j];
          k8[c * stride + j] = kq[c * 600 + j];
          v8[c * stride + j] = vq[c * 600 + j];
          p.kt[c * p.stride + j] = static_cast<float>(kq[c * 600 + j]) * kscale;
          p.vt[c * p.stride + j] = static_cast<float>(vq[c * 600 + j]) * vscale;
        }
      }
      const auto want = p.reference();
      for (std::size_t c = 0; c < d; ++c) {
        ASSERT_EQ(std::isnan(want[c]), variant > 0)
            << "the reference itself, d=" << d << " c=" << c;
      }
      std::vector<float> out(d, 7.0f);
      auto a = int8_args(p, out.data(), k8, v8, ks, vs);
      a.kv_stride = stride;
      a.kv_padded = true;
      if (compact) {
        a.k_code = kc.data();
        a.v_code = vc.data();
      }
      ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<TypeParam>(d));
      simd::attention_s8kv_f32<TypeParam>(a, scratch.data());
      expect_close(out, want, p, variant == 0 ? "masked block" : "NaN under a masked key");
    }
  }
}

// Compact INT8 scales (a float per key times a 4-bit code) give exactly what the same
// kernel gives with the scales expanded by AttentionArgs::scale_at beforehand: the kernel's
// vector expansion is bit-exact with the scalar definition, in the dequantizing path (not
// padded, or many rows) and in the direct one (padded, few rows). A code of 15 (a head that
// held NaN) must turn every row that sees the key into NaN.
TYPED_TEST(SimdAttention, CompactInt8ScalesGiveTheBitsOfTheirExpandedScales) {
  std::uint32_t seed = 700;
  for (std::size_t d : {8u, 64u}) {
    for (bool nan_code : {false, true}) {
      Problem p(9, 333, d, seed += 7);
      p.causal = true;
      const auto k8 = uniform_int8(d * p.stride, -127, 127, seed + 1);
      const auto v8 = uniform_int8(d * p.stride, -127, 127, seed + 2);
      const auto ks = uniform_floats(p.stride, 0.001f, 0.02f, seed + 3);
      const auto vs = uniform_floats(p.stride, 0.001f, 0.01f, seed + 4);
      std::vector<std::uint8_t> kc(p.stride / 2), vc(p.stride / 2);
      const auto r1 = uniform_int8(p.stride, 0, 14, seed + 5),
                 r2 = uniform_int8(p.stride, 0, 14, seed + 6);
      for (std::size_t j = 0; j < p.stride; ++j) {
        kc[j / 2] = static_cast<std::uint8_t>(kc[j / 2] | (r1[j] << (4 * (j % 2))));
        vc[j / 2] = static_cast<std::uint8_t>(vc[j / 2] | (r2[j] << (4 * (j % 2))));
      }
      if (nan_code)
        vc[300 / 2] = static_cast<std::uint8_t>((vc[300 / 2] & 0xF0u) | simd::kv_code_nonfinite);
      std::vector<float> eks(p.stride), evs(p.stride);
      for (std::size_t j = 0; j < p.stride; ++j) {
        eks[j] = simd::AttentionArgs::scale_at(ks.data(), kc.data(), j);
        evs[j] = simd::AttentionArgs::scale_at(vs.data(), vc.data(), j);
      }
      EXPECT_EQ(std::isnan(evs[300]), nan_code);
      for (std::size_t c = 0; c < d; ++c) {
        for (std::size_t j = 0; j < p.stride; ++j) {
          p.kt[c * p.stride + j] = static_cast<float>(k8[c * p.stride + j]) * eks[j];
          p.vt[c * p.stride + j] = static_cast<float>(v8[c * p.stride + j]) * evs[j];
        }
      }
      const auto want = p.reference();
      ds::AlignedBuffer<float> scratch(simd::attention_scratch_floats<TypeParam>(d));
      for (bool padded : {false, true}) {
        for (std::size_t rows : {1u, 9u}) {
          std::vector<float> got(p.lq * d, 7.0f), expanded(p.lq * d, 7.0f);
          // Scales and codes cut to what the kernel may read (ASan then catches a read past
          // them): lkv keys, or lkv rounded up to 16 when padded.
          const std::size_t readable = padded ? (p.lkv + 15) / 16 * 16 : p.lkv;
          const std::vector<float> ks_cut(ks.begin(), ks.begin() + readable),
              vs_cut(vs.begin(), vs.begin() + readable);
          const std::vector<std::uint8_t> kc_cut(kc.begin(), kc.begin() + (readable + 1) / 2),
              vc_cut(vc.begin(), vc.begin() + (readable + 1) / 2);
          auto a = int8_args(p, got.data(), k8, v8, ks_cut, vs_cut);
          a.k_code = kc_cut.data();
          a.v_code = vc_cut.data();
          a.kv_padded = padded;
          std::vector<std::uint32_t> list(rows);
          for (std::size_t i = 0; i < rows; ++i)
            list[i] = static_cast<std::uint32_t>(p.lq - rows + i);
          a.rows = list.data();
          a.num_rows = rows;
          simd::attention_s8kv_f32<TypeParam>(a, scratch.data());
          auto b = int8_args(p, expanded.data(), k8, v8, eks, evs);
          b.kv_padded = padded;
          b.rows = list.data();
          b.num_rows = rows;
          simd::attention_s8kv_f32<TypeParam>(b, scratch.data());
          for (std::size_t i = 0; i < got.size(); ++i) {
            const std::string where = "d " + std::to_string(d) + " nan " +
                                      std::to_string(nan_code) + " padded " +
                                      std::to_string(padded) + " rows " + std::to_string(rows) +
                                      " i " + std::to_string(i);
            if (std::isnan(expanded[i])) {
              EXPECT_TRUE(std::isnan(got[i])) << where;
            } else {
              EXPECT_EQ(got[i], expanded[i]) << where;
            }
            if (i >= (p.lq - rows) * d) {
              if (std::isnan(want[i])) {
                EXPECT_TRUE(std::isnan(got[i])) << where;
              } else {
                EXPECT_NEAR(got[i], want[i], kAttentionRel) << where;
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace
