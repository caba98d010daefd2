// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/gemm_int8.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "support/arches.hpp"
#include "support/random.hpp"
#include <gtest/gtest.h>

namespace {

using namespace dynasparse_test;
namespace simd = dynasparse::simd;

template <class I8Arch>
class SimdGemmS8 : public ::testing::Test {
 protected:
  // Runs the packed GEMM over columns [n0, n1) and returns C [m, n] (untouched columns 0).
  static std::vector<std::int32_t> run(const std::vector<std::int8_t>& a, const std::vector<std::int8_t>& w,
                                       std::size_t m, std::size_t n, std::size_t k, std::size_t n0,
                                       std::size_t n1) {
    const simd::PackedI8Weights<I8Arch> packed(w.data(), n, k, k);
    const std::size_t lda = simd::gemm_activation_row_bytes<I8Arch>(k);
    std::vector<std::int8_t> prepared(m * lda + 1);
    for (std::size_t r = 0; r < m; ++r) {
      simd::gemm_prepare_activation_row<I8Arch>(a.data() + r * k, k, prepared.data() + r * lda);
    }
    std::vector<std::int32_t> c(m * n, 0);
    std::vector<int> seen(m * n, 0);
    simd::gemm_s8s8_s32<I8Arch>(prepared.data(), lda, packed, m, n0, n1,
                                [&](std::size_t r0, std::size_t rows, std::size_t c0, std::size_t cols,
                                    const std::int32_t* tile, std::size_t ld) {
                                  for (std::size_t r = 0; r < rows; ++r) {
                                    for (std::size_t j = 0; j < cols; ++j) {
                                      c[(r0 + r) * n + c0 + j] = tile[r * ld + j];
                                      ++seen[(r0 + r) * n + c0 + j];
                                    }
                                  }
                                });
    for (std::size_t r = 0; r < m; ++r) {
      for (std::size_t j = 0; j < n; ++j) {
        EXPECT_EQ(seen[r * n + j], (j >= n0 && j < n1) ? 1 : 0) << "each tile element exactly once";
      }
    }
    return c;
  }
};
TYPED_TEST_SUITE(SimdGemmS8, Int8Arches, ArchNames);

TYPED_TEST(SimdGemmS8, BitExactWithScalarReferenceOnOddShapes) {
  for (std::size_t m : {1u, 2u, 5u, 6u, 7u, 13u}) {
    // n = 65, 80, 84, 90, 100, 110 and 120 end in a tile of 1 to 7 panels of 8: one row
    // takes them as 4 + 2 + 1 at most per kernel call on AVX2.
    for (std::size_t n : {1u, 63u, 64u, 65u, 80u, 84u, 90u, 100u, 110u, 120u, 130u}) {
      for (std::size_t k : {1u, 3u, 4u, 5u, 64u, 257u}) {
        const auto a = uniform_int8(m * k, -127, 127, static_cast<unsigned>(m * 1000 + k));
        const auto w = uniform_int8(n * k, -127, 127, static_cast<unsigned>(n * 1000 + k + 7));
        std::vector<std::int32_t> want(m * n);
        simd::detail::scalar::gemm_s8s8_s32(a.data(), k, w.data(), k, want.data(), n, m, n, k);
        EXPECT_EQ(this->run(a, w, m, n, k, 0, n), want) << "m=" << m << " n=" << n << " k=" << k;
      }
    }
  }
}

TYPED_TEST(SimdGemmS8, ColumnRangesComputeOnlyTheirColumns) {
  const std::size_t m = 3, n = 200, k = 33;
  const auto a = uniform_int8(m * k, -127, 127, 1u);
  const auto w = uniform_int8(n * k, -127, 127, 2u);
  std::vector<std::int32_t> want(m * n);
  simd::detail::scalar::gemm_s8s8_s32(a.data(), k, w.data(), k, want.data(), n, m, n, k);
  const auto got = this->run(a, w, m, n, k, 64, 192);
  for (std::size_t r = 0; r < m; ++r) {
    for (std::size_t j = 64; j < 192; ++j) EXPECT_EQ(got[r * n + j], want[r * n + j]);
  }
}

TYPED_TEST(SimdGemmS8, PanelListsComputeOnlyTheListedPanels) {
  // Lists of the arch's column panels: none, the last (partial) one, a run of ten that
  // crosses a tile and the one-row kernel's batch of eight, thirteen scattered ones with
  // short runs, and two that leave a gap of kernel panels (with AVX-512 VNNI, units of 16
  // columns in 64-column panels: several rows compute a panel once for its units). Each
  // listed column must be handed to the epilogue exactly once, in runs of adjacent panels no
  // wider than a tile, and match the scalar reference; the others never.
  constexpr std::size_t step = simd::gemm_list_step<TypeParam>;
  const std::size_t n = 25 * step + 3, k = 37;  // 26 panels, the last of 3 columns
  const std::vector<std::vector<std::uint32_t>> lists = {
      {},
      {25},
      {0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
      {1, 3, 4, 9, 10, 11, 12, 13, 14, 15, 16, 20, 25},
      {2, 3, 24},
      {1, 20}};
  for (std::size_t m : {1u, 3u, 7u}) {
    const auto a = uniform_int8(m * k, -128, 127, static_cast<unsigned>(31 + m));
    const auto w = uniform_int8(n * k, -127, 127, 32u);
    std::vector<std::int32_t> want(m * n);
    simd::detail::scalar::gemm_s8s8_s32(a.data(), k, w.data(), k, want.data(), n, m, n, k);
    const simd::PackedI8Weights<TypeParam> packed(w.data(), n, k, k);
    const std::size_t lda = simd::gemm_activation_row_bytes<TypeParam>(k);
    std::vector<std::int8_t> prepared(m * lda);
    for (std::size_t r = 0; r < m; ++r) {
      simd::gemm_prepare_activation_row<TypeParam>(a.data() + r * k, k, prepared.data() + r * lda);
    }
    for (const auto& list : lists) {
      std::vector<std::int32_t> got(m * n, 0);
      std::vector<int> seen(m * n, 0);
      simd::gemm_s8s8_s32_panels<TypeParam>(
          prepared.data(), lda, packed, m, list.data(), list.size(),
          [&](std::size_t r0, std::size_t rows, std::size_t c0, std::size_t cols,
              const std::int32_t* tile, std::size_t ld) {
            EXPECT_EQ(c0 % step, 0u);
            EXPECT_LE(cols, simd::gemm_tile_cols);
            for (std::size_t r = 0; r < rows; ++r) {
              for (std::size_t j = 0; j < cols; ++j) {
                got[(r0 + r) * n + c0 + j] = tile[r * ld + j];
                ++seen[(r0 + r) * n + c0 + j];
              }
            }
          });
      for (std::size_t r = 0; r < m; ++r) {
        for (std::size_t c = 0; c < n; ++c) {
          const bool listed = std::find(list.begin(), list.end(), c / step) != list.end();
          ASSERT_EQ(seen[r * n + c], listed ? 1 : 0)
              << "m=" << m << " list of " << list.size() << " column " << c;
          if (listed) {
            ASSERT_EQ(got[r * n + c], want[r * n + c]) << "m=" << m << " column " << c;
          }
        }
      }
    }
  }
}

TYPED_TEST(SimdGemmS8, ExtremeValuesAndMinus128ActivationsStayExact) {
  const std::size_t m = 7, n = 70, k = 1000;
  std::vector<std::int8_t> a(m * k), w(n * k);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = (i % 3 == 0) ? -128 : 127;
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = (i % 5 == 0) ? -127 : 127;
  std::vector<std::int32_t> want(m * n);
  simd::detail::scalar::gemm_s8s8_s32(a.data(), k, w.data(), k, want.data(), n, m, n, k);
  EXPECT_EQ(this->run(a, w, m, n, k, 0, n), want);
}

TYPED_TEST(SimdGemmS8, LongKCrossesEveryInnerBlock) {
  // K past the kernels' unrolled groups, with ragged row and column tails (AVX2: 9 rows run
  // as chunks of 4, 4 and 1; 33 columns as a pair of panels and a single one).
  for (std::size_t m : {1u, 3u, 9u}) {
    for (std::size_t k : {511u, 512u, 514u, 1030u}) {
      const std::size_t n = 33;
      const auto a = uniform_int8(m * k, -128, 127, static_cast<unsigned>(k + m));
      const auto w = uniform_int8(n * k, -127, 127, static_cast<unsigned>(k * 3 + m));
      std::vector<std::int32_t> want(m * n);
      simd::detail::scalar::gemm_s8s8_s32(a.data(), k, w.data(), k, want.data(), n, m, n, k);
      EXPECT_EQ(this->run(a, w, m, n, k, 0, n), want) << "m=" << m << " k=" << k;
    }
  }
}

TYPED_TEST(SimdGemmS8, PreparedRowsFollowTheShiftTraitAndPadding) {
  const std::size_t k = 7;
  const auto q = uniform_int8(k, -128, 127, 9u);
  const std::size_t lda = simd::gemm_activation_row_bytes<TypeParam>(k);
  constexpr std::size_t kg = simd::GemmI8Traits<TypeParam>::k_group;
  EXPECT_EQ(lda % kg, 0u);
  EXPECT_GE(lda, k);
  EXPECT_LT(lda, k + kg);
  std::vector<std::int8_t> out(lda, 55);
  simd::gemm_prepare_activation_row<TypeParam>(q.data(), k, out.data());
  for (std::size_t i = 0; i < lda; ++i) {
    const int v = i < k ? q[i] : 0;
    if constexpr (simd::activations_shifted_v<TypeParam>) {
      EXPECT_EQ(static_cast<int>(static_cast<std::uint8_t>(out[i])), v + 128) << i;
    } else {
      EXPECT_EQ(static_cast<int>(out[i]), v) << i;
    }
  }
  // In place gives the same bytes.
  std::vector<std::int8_t> in_place(lda, 55);
  std::copy(q.begin(), q.end(), in_place.begin());
  simd::gemm_prepare_activation_row<TypeParam>(in_place.data(), k, in_place.data());
  EXPECT_EQ(in_place, out);
}

TYPED_TEST(SimdGemmS8, LookupPanelMatchesEveryWeight) {
  // 77 columns: the second 64-column block is mostly past n (table[128] there).
  const std::size_t n = 77, k = 21;
  const auto w = uniform_int8(n * k, -127, 127, 4u);
  const simd::PackedI8Weights<TypeParam> packed(w.data(), n, k, k);
  std::vector<float> table(256);
  for (std::size_t i = 0; i < 256; ++i) table[i] = static_cast<float>(i) - 128.0f;
  constexpr std::size_t tc = simd::gemm_tile_cols;
  for (std::size_t c0 : {std::size_t{0}, tc}) {
    for (auto [k0, kc] : {std::pair<std::size_t, std::size_t>{0, k}, {5, 9}}) {
      std::vector<float> out(kc * tc, -1000.0f);
      packed.lookup_panel(c0, k0, kc, table.data(), out.data());
      for (std::size_t kk = 0; kk < kc; ++kk) {
        for (std::size_t c = 0; c < tc; ++c) {
          const float want = c0 + c < n ? static_cast<float>(w[(c0 + c) * k + k0 + kk]) : 0.0f;
          EXPECT_EQ(out[kk * tc + c], want) << "c0=" << c0 << " k0=" << k0 << " kk=" << kk << " c=" << c;
        }
      }
    }
  }
}

TYPED_TEST(SimdGemmS8, PackingKeepsEveryWeight) {
  const std::size_t n = 77, k = 13;
  const auto w = uniform_int8(n * k, -127, 127, 3u);
  const simd::PackedI8Weights<TypeParam> packed(w.data(), n, k, k);
  for (std::size_t j = 0; j < n; ++j) {
    std::int32_t sum = 0;
    for (std::size_t kk = 0; kk < k; ++kk) {
      EXPECT_EQ(packed.at(j, kk), w[j * k + kk]);
      sum += w[j * k + kk];
    }
    EXPECT_EQ(packed.shift_compensation()[j], -128 * sum);
  }
}

TYPED_TEST(SimdGemmS8, KSpansSumOnlyTheirKAndNeverReadTheRest) {
  // Spans of k groups (heads of 8 inputs over groups of 4, runs of adjacent heads, the first
  // and last group, none), against the full product of activations zero outside them.
  constexpr std::size_t kg = simd::GemmI8Traits<TypeParam>::k_group;
  constexpr bool reads_all = !simd::gemm_kspans_skip_v<TypeParam>;
  const std::size_t n = 84, k = 64;
  const std::size_t kgroups = (k + kg - 1) / kg;
  const std::vector<std::vector<std::uint32_t>> cases = {
      {0, 2, 4, 6, 10, static_cast<std::uint32_t>(kgroups)}, {1, 2}, {0, 1}, {}, {3, 9}};
  for (std::size_t m : {1u, 3u, 9u}) {
    for (const auto& spans : cases) {
      auto a = uniform_int8(m * k, -128, 127, static_cast<unsigned>(m + spans.size()));
      std::vector<bool> inside(k, false);
      for (std::size_t i = 0; i + 1 < spans.size(); i += 2) {
        for (std::size_t kk = spans[i] * kg; kk < std::min(k, spans[i + 1] * std::size_t{kg}); ++kk)
          inside[kk] = true;
      }
      std::vector<std::int8_t> zeroed = a;
      for (std::size_t r = 0; r < m; ++r) {
        for (std::size_t kk = 0; kk < k; ++kk) {
          if (!inside[kk]) zeroed[r * k + kk] = 0;
        }
      }
      const auto w = uniform_int8(n * k, -127, 127, 17u);
      std::vector<std::int32_t> want(m * n);
      simd::detail::scalar::gemm_s8s8_s32(zeroed.data(), k, w.data(), k, want.data(), n, m, n, k);

      const simd::PackedI8Weights<TypeParam> packed(w.data(), n, k, k);
      const std::size_t lda = simd::gemm_activation_row_bytes<TypeParam>(k);
      // Kernels that skip must not read outside the spans: the bytes there are garbage. The
      // others read every k and get prepared zeros there.
      std::vector<std::int8_t> prepared(m * lda);
      for (std::size_t r = 0; r < m; ++r) {
        simd::gemm_prepare_activation_row<TypeParam>((reads_all ? zeroed : a).data() + r * k, k,
                                                     prepared.data() + r * lda);
      }
      // All columns, and a range starting at the second tile.
      for (std::size_t n0 : {std::size_t{0}, simd::gemm_tile_cols}) {
        std::vector<std::int32_t> got(m * n, -1);
        simd::gemm_s8s8_s32_kspans<TypeParam>(
            prepared.data(), lda, packed, m, n0, n, spans.data(), spans.size() / 2,
            [&](std::size_t r0, std::size_t rows, std::size_t c0, std::size_t cols,
                const std::int32_t* tile, std::size_t ld) {
              for (std::size_t r = 0; r < rows; ++r) {
                for (std::size_t j = 0; j < cols; ++j)
                  got[(r0 + r) * n + c0 + j] = tile[r * ld + j];
              }
            });
        for (std::size_t r = 0; r < m; ++r) {
          for (std::size_t j = 0; j < n; ++j) {
            EXPECT_EQ(got[r * n + j], j >= n0 ? want[r * n + j] : -1)
                << "m=" << m << " spans=" << spans.size() / 2 << " n0=" << n0 << " r=" << r
                << " j=" << j;
          }
        }
      }
    }
  }
}

TYPED_TEST(SimdGemmS8, QuantizedSpansEqualTheRowWithTheRestZero) {
  // Rows of up to 4096 features go through a zeroed copy, longer ones span by span.
  for (const std::size_t k : {std::size_t{37}, std::size_t{4099}}) {
    const std::size_t m = 3;
    const auto last = static_cast<std::uint32_t>(k - 7);
    const std::uint32_t spans[] = {0, 5, 9, 16, last, static_cast<std::uint32_t>(k)};
    auto x = dynasparse_test::uniform_floats(m * k, -3.0f, 3.0f, 21u);
    std::vector<float> zeroed = x;
    for (std::size_t r = 0; r < m; ++r) {
      for (std::size_t kk = 0; kk < k; ++kk) {
        const bool inside = kk < 5 || (kk >= 9 && kk < 16) || kk >= last;
        if (!inside) {
          zeroed[r * k + kk] = 0.0f;
          // Never read: a large or NaN value there would change the row's scale.
          x[r * k + kk] = r == 1 ? std::numeric_limits<float>::quiet_NaN() : 100.0f;
        }
      }
    }
    x[2 * k + last + 1] = std::numeric_limits<float>::infinity();  // inside: row 2 is not finite
    zeroed[2 * k + last + 1] = x[2 * k + last + 1];
    const std::size_t lda = simd::gemm_activation_row_bytes<TypeParam>(k);
    for (float alpha : {0.0f, 1.5f}) {
      std::vector<std::int8_t> want(m * lda, 1), got(m * lda, 2);
      std::vector<float> want_scale(m), got_scale(m);
      simd::gemm_quantize_activations<TypeParam>(zeroed.data(), k, m, k, alpha, want.data(), lda,
                                                 want_scale.data());
      simd::gemm_quantize_activation_spans<TypeParam>(x.data(), k, m, k, spans, 3, alpha,
                                                      got.data(), lda, got_scale.data());
      EXPECT_EQ(got, want) << alpha << " k " << k;
      for (std::size_t r = 0; r < 2; ++r) EXPECT_EQ(got_scale[r], want_scale[r]) << r << " k " << k;
      EXPECT_TRUE(std::isnan(got_scale[2])) << k;
      EXPECT_TRUE(std::isnan(want_scale[2])) << k;
    }
  }
}

}  // namespace
