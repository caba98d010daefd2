// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/nn/kv_cache.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "support/random.hpp"
#include <gtest/gtest.h>

#include "dynasparse/core/threading.hpp"

namespace {

namespace ds = dynasparse;
namespace nn = dynasparse::nn;
using dynasparse_test::uniform_floats;

// Reads element (c, j) of head h, sequence n back as float.
float stored(const nn::KVCache& cache, std::size_t n, std::size_t h, std::size_t c, std::size_t j, bool value) {
  ds::simd::AttentionArgs a;
  cache.bind(n, h, a);
  if (cache.dtype() == nn::KVDType::F32)
    return value ? a.vt[a.kv_index(c, j)] : a.kt[a.k_index(c, j)];
  const auto* q = value ? a.vt_s8 : a.kt_s8;
  return static_cast<float>(q[a.kv_index(c, j)]) * (value ? a.v_scale_at(j) : a.k_scale_at(j));
}

// The largest error a stored element may have, given the largest |x| of its head and of
// its token (nn::KVDType's contracts), with room for the rounding of the products.
float int8_tolerance(nn::KVDType dtype, float head_max, float token_max) {
  if (dtype == nn::KVDType::F32) return 0.0f;
  if (dtype == nn::KVDType::I8) return head_max / 254 * 1.0001f;
  return std::max(std::sqrt(2.0f) * head_max, token_max / 128) / 254 * 1.0001f;
}

TEST(KVCache, BytesPerToken) {
  const nn::KVCache f(1, 64, 8, 16);
  const nn::KVCache q(1, 64, 8, 16, nn::KVDType::I8);
  EXPECT_EQ(f.bytes_per_token(), 2u * 512 * 4);
  EXPECT_EQ(q.bytes_per_token(), 2u * 64 * (8 + 4));  // a float scale per (token, head)
  EXPECT_EQ(f.bytes(), f.bytes_per_token() * 16);
  const nn::KVCache q64(2, 8, 64, 16, nn::KVDType::I8);
  EXPECT_LE(q64.bytes_per_token() * 100, nn::KVCache(2, 8, 64, 16).bytes_per_token() * 27);
  // Compact: a float per token for K and for V, and a 4-bit code per (token, head) for each.
  const nn::KVCache c(1, 64, 8, 16, nn::KVDType::I8Compact);
  EXPECT_EQ(c.bytes_per_token(), 2u * 512 + 2 * 4 + 64);
  EXPECT_LE(c.bytes_per_token() * 100, f.bytes_per_token() * 27);
  EXPECT_EQ(c.bytes(), c.bytes_per_token() * 16);
}

TEST(KVCache, LongCachesAllocateWholeBlocks) {
  // 300 tokens, heads of 8: two blocks of 256 for float V, 19 panels of 16 for float K and
  // for INT8 K and V.
  const nn::KVCache f(1, 2, 8, 300);
  const nn::KVCache q(1, 2, 8, 300, nn::KVDType::I8);
  const std::size_t v_row = ds::simd::attention_kv_stride(256);
  EXPECT_EQ(f.bytes(), (2 * 8 * 304 + 2 * 2 * 8 * v_row) * sizeof(float));
  EXPECT_EQ(q.bytes(), 2 * (2 * 8 * 304) + 2 * 2 * 304 * sizeof(float));
  const nn::KVCache c(1, 2, 8, 300, nn::KVDType::I8Compact);
  EXPECT_EQ(c.bytes(), 2 * (2 * 8 * 304) + 2 * 304 * sizeof(float) + 2 * 2 * 304 / 2);
  // Heads wider than 8: INT8 K and V in two blocks of 256, like float V.
  const nn::KVCache w(1, 2, 16, 300, nn::KVDType::I8);
  EXPECT_EQ(w.bytes(), 2 * (2 * 2 * 16 * 256) + 2 * 2 * 304 * sizeof(float));
}

// Heads of 8 (INT8 in panels of 16) and of 16 (INT8 in blocks of 256), appended many
// tokens at a time and one at a time (decoding's path).
TEST(KVCache, LongCachesStoreEveryTokenAcrossPanelsAndBlocks) {
  const std::size_t batch = 2, h = 2, len = 300;
  for (const std::size_t d : {8u, 16u}) {
    const std::size_t e = h * d;
    const auto k = uniform_floats(len * batch * e, -2.0f, 2.0f, 5u);
    const auto v = uniform_floats(len * batch * e, -2.0f, 2.0f, 6u);
    for (auto dtype : {nn::KVDType::F32, nn::KVDType::I8, nn::KVDType::I8Compact}) {
      nn::KVCache cache(batch, h, d, len, dtype);
      // 250 tokens, then 30, then 20 one by one: the second call crosses the first block's
      // end, the last ones a panel's.
      cache.append(ds::ConstMatrixView(k.data(), 250 * batch, e),
                   ds::ConstMatrixView(v.data(), 250 * batch, e));
      cache.append(ds::ConstMatrixView(k.data() + 250 * batch * e, 30 * batch, e),
                   ds::ConstMatrixView(v.data() + 250 * batch * e, 30 * batch, e));
      for (std::size_t t = 280; t < len; ++t) {
        cache.append(ds::ConstMatrixView(k.data() + t * batch * e, batch, e),
                     ds::ConstMatrixView(v.data() + t * batch * e, batch, e));
      }
      for (std::size_t t = 0; t < len; ++t) {
        for (std::size_t n = 0; n < batch; ++n) {
          const std::size_t row = t * batch + n;  // (L, N, E) in each call
          for (std::size_t hd = 0; hd < h; ++hd) {
            for (std::size_t c = 0; c < d; ++c) {
              const float kw = k[row * e + hd * d + c], vw = v[row * e + hd * d + c];
              // INT8: half a step of at most 2 / 127 (times sqrt(2), compact).
              const float tol = int8_tolerance(dtype, 2.0f, 2.0f);
              ASSERT_NEAR(stored(cache, n, hd, c, t, false), kw, tol)
                  << t << "," << n << "," << hd << "," << c;
              ASSERT_NEAR(stored(cache, n, hd, c, t, true), vw, tol)
                  << t << "," << n << "," << hd << "," << c << " d " << d;
            }
          }
        }
      }
    }
  }
}

TEST(KVCache, ALongAppendSplitAcrossThreadsStoresWhatOneThreadStores) {
  // 300 tokens of 3 heads of 80 (a prefill large enough to split by heads; 80 also takes
  // INT8 quantization past its 64-value chunks), in both layouts, at one and two threads.
  const std::size_t batch = 2, h = 3, d = 80, e = h * d, len = 300;
  const auto k = uniform_floats(len * batch * e, -2.0f, 2.0f, 15u);
  const auto v = uniform_floats(len * batch * e, -2.0f, 2.0f, 16u);
  for (auto dtype : {nn::KVDType::F32, nn::KVDType::I8, nn::KVDType::I8Compact}) {
    for (auto layout : {nn::SeqLayout::SeqBatch, nn::SeqLayout::BatchSeq}) {
      nn::KVCache one(batch, h, d, len, dtype), two(batch, h, d, len, dtype);
      ds::set_num_threads(1);
      one.append(ds::ConstMatrixView(k.data(), len * batch, e),
                 ds::ConstMatrixView(v.data(), len * batch, e), layout);
      ds::set_num_threads(2);
      two.append(ds::ConstMatrixView(k.data(), len * batch, e),
                 ds::ConstMatrixView(v.data(), len * batch, e), layout);
      ds::set_num_threads(0);
      for (std::size_t n = 0; n < batch; ++n) {
        for (std::size_t t = 0; t < len; ++t) {
          const std::size_t row = nn::layout_row(layout, n, t, len, batch);
          for (std::size_t hd = 0; hd < h; ++hd) {
            for (std::size_t c = 0; c < d; ++c) {
              for (bool value : {false, true}) {
                const float a = stored(one, n, hd, c, t, value),
                            b = stored(two, n, hd, c, t, value);
                ASSERT_EQ(a, b) << n << "," << t << "," << hd << "," << c << "," << value;
                const float want = (value ? v : k)[row * e + hd * d + c];
                ASSERT_NEAR(a, want, int8_tolerance(dtype, 2.0f, 2.0f));
              }
            }
          }
        }
      }
    }
  }
}

TEST(KVCache, AppendStoresBothLayoutsAndInt8WithinHalfAStep) {
  // Heads of 520 values are wider than the compact append's 512-value chunk.
  for (const std::size_t d : {std::size_t{5}, std::size_t{520}}) {
    const std::size_t batch = 2, h = 3, e = h * d;
    for (auto dtype : {nn::KVDType::F32, nn::KVDType::I8, nn::KVDType::I8Compact}) {
      for (auto layout : {nn::SeqLayout::SeqBatch, nn::SeqLayout::BatchSeq}) {
        nn::KVCache cache(batch, h, d, 10, dtype);
        const auto k = uniform_floats(3 * batch * e, -2.0f, 2.0f, 1u);
        const auto v = uniform_floats(3 * batch * e, -2.0f, 2.0f, 2u);
        cache.append(ds::ConstMatrixView(k.data(), 2 * batch, e),
                     ds::ConstMatrixView(v.data(), 2 * batch, e), layout);
        cache.append(ds::ConstMatrixView(k.data() + 2 * batch * e, batch, e),
                     ds::ConstMatrixView(v.data() + 2 * batch * e, batch, e), layout);
        ASSERT_EQ(cache.size(), 3u);
        for (std::size_t n = 0; n < batch; ++n) {
          for (std::size_t t = 0; t < 3; ++t) {
            // The first append had 2 tokens, the second 1: rows follow each call's layout.
            const std::size_t row = t < 2 ? nn::layout_row(layout, n, t, 2, batch) : 2 * batch + n;
            float ktok = 0.0f, vtok = 0.0f;
            for (std::size_t i = 0; i < e; ++i) {
              ktok = std::max(ktok, std::fabs(k[row * e + i]));
              vtok = std::max(vtok, std::fabs(v[row * e + i]));
            }
            for (std::size_t hd = 0; hd < h; ++hd) {
              float kmax = 0.0f, vmax = 0.0f;
              for (std::size_t c = 0; c < d; ++c) {
                kmax = std::max(kmax, std::fabs(k[row * e + hd * d + c]));
                vmax = std::max(vmax, std::fabs(v[row * e + hd * d + c]));
              }
              for (std::size_t c = 0; c < d; ++c) {
                const float kw = k[row * e + hd * d + c], vw = v[row * e + hd * d + c];
                if (dtype == nn::KVDType::F32) {
                  EXPECT_EQ(stored(cache, n, hd, c, t, false), kw);
                  EXPECT_EQ(stored(cache, n, hd, c, t, true), vw);
                } else {
                  // Half a quantization step, max|x| / 254 (compact: up to sqrt(2) times
                  // that), plus the rounding of the products.
                  EXPECT_NEAR(stored(cache, n, hd, c, t, false), kw,
                              int8_tolerance(dtype, kmax, ktok));
                  EXPECT_NEAR(stored(cache, n, hd, c, t, true), vw,
                              int8_tolerance(dtype, vmax, vtok));
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST(KVCache, ErrorsNameTheCacheAndBothSizes) {
  nn::KVCache cache(1, 2, 4, 3, nn::KVDType::F32, "layer0.cache");
  std::vector<float> x(4 * 8);
  cache.append(ds::ConstMatrixView(x.data(), 2, 8), ds::ConstMatrixView(x.data(), 2, 8));
  try {
    cache.append(ds::ConstMatrixView(x.data(), 2, 8), ds::ConstMatrixView(x.data(), 2, 8));
    FAIL() << "no throw";
  } catch (const ds::ShapeError& e) {
    EXPECT_STREQ(e.what(), "dynasparse.nn: sequence beyond the cache's maximum length; expected <= 3 tokens, "
                           "got 4 tokens [layer0.cache]");
  }
  EXPECT_EQ(cache.size(), 2u);  // a failed append stores nothing
  EXPECT_THROW(cache.append(ds::ConstMatrixView(x.data(), 1, 7), ds::ConstMatrixView(x.data(), 1, 7)), ds::ShapeError);
  EXPECT_THROW(cache.append(ds::ConstMatrixView(x.data(), 1, 8), ds::ConstMatrixView(x.data(), 2, 8)), ds::ShapeError);
  EXPECT_THROW(nn::KVCache(1, 0, 4, 3), ds::ConfigError);
  cache.truncate(1);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_THROW(cache.truncate(2), ds::ShapeError);
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  cache.append(ds::ConstMatrixView(x.data(), 3, 8), ds::ConstMatrixView(x.data(), 3, 8));
  EXPECT_EQ(cache.size(), 3u);
}

TEST(KVCache, TokenByTokenAppendsStoreTheBitsOfOneAppend) {
  // Decoding appends (one token per call) take their own path for F32 and I8: they must
  // store exactly what one call with all the tokens stores, in both row layouts, at head
  // widths on either side of the INT8 quantizer's inline limit (16), with a NaN head and
  // an all-zero one among them.
  // With 250 tokens before them, the appends cross from the first 256-key block of the
  // long (blocked) storage into the second.
  const std::size_t batch = 2, h = 3, len = 7;
  for (std::size_t prefix : {0u, 250u})
    for (std::size_t d : {5u, 8u, 20u}) {
      const std::size_t e = h * d, cap = prefix + len;
      const auto pk = uniform_floats(prefix * batch * e + 1, -2.0f, 2.0f, 30u);
      const auto pv = uniform_floats(prefix * batch * e + 1, -2.0f, 2.0f, 31u);
      auto k = uniform_floats(len * batch * e, -2.0f, 2.0f, 40u + static_cast<unsigned>(d));
      auto v = uniform_floats(len * batch * e, -3.0f, 3.0f, 50u + static_cast<unsigned>(d));
      k[3 * e + d + 1] = std::nanf("");                           // row 3, head 1
      std::fill(v.begin() + 4 * e, v.begin() + 4 * e + d, 0.0f);  // row 4, head 0
      for (auto dtype : {nn::KVDType::F32, nn::KVDType::I8, nn::KVDType::I8Compact}) {
        for (auto layout : {nn::SeqLayout::SeqBatch, nn::SeqLayout::BatchSeq}) {
          nn::KVCache whole(batch, h, d, cap, dtype), steps(batch, h, d, cap, dtype);
          if (prefix > 0) {
            for (nn::KVCache* c : {&whole, &steps}) {
              c->append(ds::ConstMatrixView(pk.data(), prefix * batch, e),
                        ds::ConstMatrixView(pv.data(), prefix * batch, e));
            }
          }
          whole.append(ds::ConstMatrixView(k.data(), len * batch, e),
                       ds::ConstMatrixView(v.data(), len * batch, e), layout);
          std::vector<float> kt(batch * e), vt(batch * e);
          for (std::size_t t = 0; t < len; ++t) {
            for (std::size_t n = 0; n < batch; ++n) {
              const std::size_t from = nn::layout_row(layout, n, t, len, batch);
              const std::size_t to = nn::layout_row(layout, n, 0, 1, batch);
              std::copy_n(k.begin() + from * e, e, kt.begin() + to * e);
              std::copy_n(v.begin() + from * e, e, vt.begin() + to * e);
            }
            steps.append(ds::ConstMatrixView(kt.data(), batch, e),
                         ds::ConstMatrixView(vt.data(), batch, e), layout);
          }
          ASSERT_EQ(steps.size(), cap);
          for (std::size_t n = 0; n < batch; ++n) {
            for (std::size_t t = 0; t < cap; ++t) {
              for (std::size_t hd = 0; hd < h; ++hd) {
                for (std::size_t c = 0; c < d; ++c) {
                  for (bool value : {false, true}) {
                    const float a = stored(whole, n, hd, c, t, value),
                                b = stored(steps, n, hd, c, t, value);
                    const auto where = ::testing::Message()
                                       << "prefix " << prefix << " d " << d << " dtype "
                                       << static_cast<int>(dtype) << " n " << n << " t " << t
                                       << " head " << hd << " c " << c << " value " << value;
                    if (std::isnan(a)) {
                      EXPECT_TRUE(std::isnan(b)) << where;
                    } else {
                      EXPECT_EQ(a, b) << where;
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
}

TEST(KVCache, Int8HeadsOfZerosAndNaN) {
  nn::KVCache cache(1, 2, 4, 2, nn::KVDType::I8);
  std::vector<float> k(8, 0.0f), v(8, 1.0f);
  k[5] = std::nanf("");
  cache.append(ds::ConstMatrixView(k.data(), 1, 8), ds::ConstMatrixView(v.data(), 1, 8));
  for (std::size_t c = 0; c < 4; ++c) {
    EXPECT_EQ(stored(cache, 0, 0, c, 0, false), 0.0f);  // all-zero head: exact zeros
    EXPECT_TRUE(std::isnan(stored(cache, 0, 1, c, 0, false)));  // NaN spreads to its head
    EXPECT_FLOAT_EQ(stored(cache, 0, 1, c, 0, true), 1.0f);
  }
}

TEST(KVCache, CompactScalesTakeTheFinestStepThatHoldsEachHead) {
  // Heads of very different sizes in one token, among them one under 2^-7 of the largest
  // (it shares the coarsest step) and one of zeros.
  const std::size_t h = 6, d = 8, e = h * d;
  const float sizes[h] = {1.0f, 0.9f, 0.3f, 0.05f, 0.002f, 0.0f};
  auto k = uniform_floats(2 * e, -1.0f, 1.0f, 31u);
  for (std::size_t t = 0; t < 2; ++t) {
    for (std::size_t i = 0; i < e; ++i)
      k[t * e + i] *= sizes[(i / d + t) % h] * (t == 0 ? 3.0f : 0.5f);
  }
  nn::KVCache cache(1, h, d, 4, nn::KVDType::I8Compact);
  cache.append(ds::ConstMatrixView(k.data(), 2, e), ds::ConstMatrixView(k.data(), 2, e));
  for (std::size_t t = 0; t < 2; ++t) {
    float tok = 0.0f;
    for (std::size_t i = 0; i < e; ++i) tok = std::max(tok, std::fabs(k[t * e + i]));
    for (std::size_t hd = 0; hd < h; ++hd) {
      float head = 0.0f;
      for (std::size_t c = 0; c < d; ++c) head = std::max(head, std::fabs(k[t * e + hd * d + c]));
      ds::simd::AttentionArgs a;
      cache.bind(0, hd, a);
      const unsigned code = (a.k_code[t / 2] >> (4 * (t % 2))) & 15u;
      ASSERT_LE(code, 14u);
      EXPECT_FLOAT_EQ(a.k_scale[t], tok / 127);
      const float step = ds::simd::kv_code_step(code) * a.k_scale[t];
      EXPECT_EQ(a.k_scale_at(t), step);
      // Holds the head, and the next finer step would not (unless the head is zero).
      EXPECT_GE(step * 127.0f, head) << t << "," << hd;
      if (head > 0.0f && code < 14) {
        EXPECT_LT(ds::simd::kv_code_step(code + 1) * a.k_scale[t] * 127.0f, head) << t << "," << hd;
      }
      for (std::size_t c = 0; c < d; ++c) {
        EXPECT_NEAR(stored(cache, 0, hd, c, t, false), k[t * e + hd * d + c],
                    int8_tolerance(nn::KVDType::I8Compact, head, tok))
            << t << "," << hd << "," << c;
        if (head == 0.0f) {
          EXPECT_EQ(stored(cache, 0, hd, c, t, false), 0.0f);
        }
      }
    }
  }
}

TEST(KVCache, CompactHeadsOfNaNOrInfinityStayTheirs) {
  // One head with NaN, one with infinity: they read as NaN, and the token's scale comes from
  // the finite heads, which keep their precision.
  const std::size_t h = 4, d = 4, e = h * d;
  auto k = uniform_floats(e, -1.0f, 1.0f, 32u);
  k[1 * d + 2] = std::nanf("");
  k[3 * d + 0] = std::numeric_limits<float>::infinity();
  std::vector<float> zeros(e, 0.0f);
  nn::KVCache cache(1, h, d, 2, nn::KVDType::I8Compact);
  cache.append(ds::ConstMatrixView(k.data(), 1, e), ds::ConstMatrixView(zeros.data(), 1, e));
  float tok = 0.0f;
  for (std::size_t hd : {0u, 2u}) {
    for (std::size_t c = 0; c < d; ++c) tok = std::max(tok, std::fabs(k[hd * d + c]));
  }
  for (std::size_t hd = 0; hd < h; ++hd) {
    float head = 0.0f;
    for (std::size_t c = 0; c < d; ++c) head = std::max(head, std::fabs(k[hd * d + c]));
    for (std::size_t c = 0; c < d; ++c) {
      if (hd == 1 || hd == 3) {
        EXPECT_TRUE(std::isnan(stored(cache, 0, hd, c, 0, false))) << hd << "," << c;
      } else {
        EXPECT_NEAR(stored(cache, 0, hd, c, 0, false), k[hd * d + c],
                    int8_tolerance(nn::KVDType::I8Compact, head, tok));
      }
      EXPECT_EQ(stored(cache, 0, hd, c, 0, true), 0.0f);  // a token of zeros stays exact
    }
  }
}

TEST(KVCache, CompactTokensOfTinyValuesStayWithinTheirBound) {
  // A token under kv_compact_min_alpha stores zeros; one just above keeps the element bound
  // in every head, the smallest sharing the coarsest step (whose inverse must stay finite).
  const std::size_t h = 2, d = 4, e = h * d;
  for (float amax :
       {1e-35f, 0.5f * nn::kv_compact_min_alpha, 2.0f * nn::kv_compact_min_alpha, 1e-30f}) {
    std::vector<float> k(e);
    for (std::size_t c = 0; c < d; ++c) {
      k[c] = amax * (c % 2 == 0 ? 1.0f : -0.37f);
      k[d + c] = amax * 1e-3f * (c % 2 == 0 ? -1.0f : 0.61f);
    }
    nn::KVCache cache(1, h, d, 2, nn::KVDType::I8Compact);
    cache.append(ds::ConstMatrixView(k.data(), 1, e), ds::ConstMatrixView(k.data(), 1, e));
    for (std::size_t hd = 0; hd < h; ++hd) {
      const float head = hd == 0 ? amax : amax * 1e-3f;
      for (std::size_t c = 0; c < d; ++c) {
        const float got = stored(cache, 0, hd, c, 0, false), want = k[hd * d + c];
        ASSERT_TRUE(std::isfinite(got)) << amax << "," << hd << "," << c;
        if (amax < nn::kv_compact_min_alpha) {
          EXPECT_EQ(got, 0.0f) << amax;
        } else {
          EXPECT_NEAR(got, want, int8_tolerance(nn::KVDType::I8Compact, head, amax))
              << amax << "," << hd << "," << c;
        }
      }
    }
  }
}

}  // namespace
