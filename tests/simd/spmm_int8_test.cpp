// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/simd/spmm_int8.hpp"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "support/arches.hpp"
#include "support/random.hpp"
#include <gtest/gtest.h>

namespace {

using namespace dynasparse_test;
namespace simd = dynasparse::simd;

// A block-CSR int8 matrix [out, in] of R x 4 blocks as GroupSparseI8 stores it: values
// [block][i][c] in [-127, 127], zero past `out` and `in`, and the shifted paths' start
// values -128 * (sum of each output's stored weights) per padded output.
struct SparseI8 {
  std::size_t out = 0, in = 0, rb = 0;
  std::vector<std::uint32_t> row_ptr, col_idx;
  std::vector<std::int8_t> values;
  std::vector<std::int32_t> shift_init;

  std::size_t block_rows() const { return (out + rb - 1) / rb; }
  std::size_t block_cols() const { return (in + 3) / 4; }

  // keep(br, bc) decides which blocks are stored; value(n, k) gives W[n][k].
  template <class Keep, class Value>
  SparseI8(std::size_t out_, std::size_t in_, std::size_t rb_, Keep keep, Value value)
      : out(out_), in(in_), rb(rb_) {
    row_ptr.push_back(0);
    for (std::size_t br = 0; br < block_rows(); ++br) {
      for (std::size_t bc = 0; bc < block_cols(); ++bc) {
        if (!keep(br, bc)) continue;
        col_idx.push_back(static_cast<std::uint32_t>(bc));
        for (std::size_t i = 0; i < rb; ++i) {
          for (std::size_t c = 0; c < 4; ++c) {
            const std::size_t n = br * rb + i, k = bc * 4 + c;
            values.push_back(n < out && k < in ? value(n, k) : std::int8_t{0});
          }
        }
      }
      row_ptr.push_back(static_cast<std::uint32_t>(col_idx.size()));
    }
    shift_init.assign(block_rows() * rb, 0);
    for (std::size_t br = 0; br < block_rows(); ++br) {
      for (std::uint32_t b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
        for (std::size_t i = 0; i < rb; ++i) {
          for (std::size_t c = 0; c < 4; ++c)
            shift_init[br * rb + i] -= 128 * values[(b * rb + i) * 4 + c];
        }
      }
    }
  }
};

// Runs spmm_s8s8_s32<I8Arch> over block-rows [br0, br1) on signed activations q [m, in] (its
// own prepared copy) and returns the tiles as [m, block_rows * rb] (block-rows outside the
// range stay 0), checking that each (row, block-row) is handed over exactly once, alone or
// (one row) among the block-rows of one tile.
template <class I8Arch>
std::vector<std::int32_t> run(const SparseI8& w, const std::vector<std::int8_t>& q, std::size_t m,
                              std::size_t br0, std::size_t br1) {
  const std::size_t lda =
      std::max(simd::gemm_activation_row_bytes<I8Arch>(w.in), (w.in + 3) / 4 * 4);
  std::vector<std::int8_t> prepared(m * lda, 0);
  for (std::size_t r = 0; r < m; ++r) {
    simd::gemm_prepare_activation_row<I8Arch>(q.data() + r * w.in, w.in, prepared.data() + r * lda);
  }
  const std::size_t ldy = w.block_rows() * w.rb;
  std::vector<std::int32_t> y(m * ldy, 0);
  std::vector<int> seen(m * w.block_rows(), 0);
  simd::spmm_s8s8_s32<I8Arch>(prepared.data(), lda, m, w.in, w.row_ptr.data(), w.col_idx.data(),
                              w.values.data(), w.rb, br0, br1, w.shift_init.data(),
                              [&](std::size_t r0, std::size_t rows, std::size_t n0,
                                  const std::int32_t* tile, std::size_t ld) {
                                // Several block-rows at once only for one row.
                                if (m > 1) {
                                  EXPECT_EQ(ld, w.rb);
                                }
                                EXPECT_EQ(ld % w.rb, 0u);
                                EXPECT_GE(ld, w.rb);
                                EXPECT_LE(ld, simd::spmm_int8_row_chunk);
                                EXPECT_EQ(n0 % w.rb, 0u);
                                EXPECT_LE(rows, simd::spmm_int8_tile_rows);
                                const std::size_t first = n0 / w.rb, count = ld / w.rb;
                                EXPECT_LE(first + count, w.block_rows());
                                for (std::size_t r = 0; r < rows; ++r) {
                                  for (std::size_t b = first;
                                       b < std::min(first + count, w.block_rows()); ++b)
                                    ++seen[(r0 + r) * w.block_rows() + b];
                                  for (std::size_t i = 0; i < ld && n0 + i < ldy; ++i)
                                    y[(r0 + r) * ldy + n0 + i] = tile[r * ld + i];
                                }
                              });
  for (std::size_t r = 0; r < m; ++r) {
    for (std::size_t br = 0; br < w.block_rows(); ++br) {
      EXPECT_EQ(seen[r * w.block_rows() + br], br >= br0 && br < br1 ? 1 : 0)
          << "row " << r << " block-row " << br;
    }
  }
  return y;
}

template <class I8Arch>
class SimdSpmmS8S32 : public ::testing::Test {
 protected:
  // The arch's tiles against the scalar reference's, padding outputs included (zero in both).
  static void expect_matches_reference(const SparseI8& w, const std::vector<std::int8_t>& q,
                                       std::size_t m, const std::string& what) {
    const auto want = run<simd::I8Scalar>(w, q, m, 0, w.block_rows());
    const auto got = run<I8Arch>(w, q, m, 0, w.block_rows());
    ASSERT_EQ(got, want) << what;
  }
};
TYPED_TEST_SUITE(SimdSpmmS8S32, Int8Arches, ArchNames);

TYPED_TEST(SimdSpmmS8S32, BitExactWithScalarReferenceAtTileEdges) {
  // m covers every microkernel row count (1..6) and two tiles plus a remainder; `in` is not
  // a multiple of 4, and block-rows hold even, odd, one or no blocks (the NEON kernel pairs
  // blocks; the VNNI kernels split one row's blocks over accumulator sets).
  for (std::size_t rb : {16u, 32u, 64u}) {
    for (std::size_t in : {3u, 37u, 75u}) {
      const std::size_t out = rb + 5;  // two block-rows, the second mostly padding
      for (double density : {0.0, 0.35, 1.0}) {
        std::mt19937 rng(
            static_cast<unsigned>(rb * 1000 + in * 10 + static_cast<unsigned>(density * 5)));
        std::uniform_real_distribution<double> u(0.0, 1.0);
        std::uniform_int_distribution<int> v(-127, 127);
        const SparseI8 w(
            out, in, rb, [&](std::size_t, std::size_t) { return u(rng) < density; },
            [&](std::size_t, std::size_t) { return static_cast<std::int8_t>(v(rng)); });
        for (std::size_t m = 1; m <= 13; ++m) {
          const auto q = uniform_int8(m * in, -127, 127, static_cast<unsigned>(m * 77 + in));
          this->expect_matches_reference(w, q, m,
                                         "R=" + std::to_string(rb) + " in=" + std::to_string(in) +
                                             " m=" + std::to_string(m) +
                                             " density=" + std::to_string(density));
        }
      }
    }
  }
}

TYPED_TEST(SimdSpmmS8S32, EmptyBlockRowsGiveZeros) {
  // Block-rows 0 and 2 stored nothing; block-row 1 everything, block-row 3 one block.
  for (std::size_t rb : {16u, 32u, 64u}) {
    const std::size_t in = 21, out = 4 * rb;
    const SparseI8 w(
        out, in, rb, [](std::size_t br, std::size_t bc) { return br == 1 || (br == 3 && bc == 2); },
        [](std::size_t n, std::size_t k) {
          return static_cast<std::int8_t>(static_cast<int>((n * 7 + k * 13) % 255) - 127);
        });
    const std::size_t m = 7;
    const auto q = uniform_int8(m * in, -127, 127, 5u);
    this->expect_matches_reference(w, q, m, "R=" + std::to_string(rb));
    const auto got = run<TypeParam>(w, q, m, 0, w.block_rows());
    for (std::size_t r = 0; r < m; ++r) {
      for (std::size_t i = 0; i < rb; ++i) {
        EXPECT_EQ(got[r * out + i], 0);
        EXPECT_EQ(got[r * out + 2 * rb + i], 0);
      }
    }
  }
}

TYPED_TEST(SimdSpmmS8S32, ExtremeValuesStayExact) {
  // Full-scale weights against full-scale activations of both signs, -128 included (the
  // dense kernels accept it, and it is the shifted path's byte 0): the largest s16 pair sums
  // of the widening kernels (2 * 128 * 127) and the largest shifted start values.
  // One row too: its kernel reads a block-row this long as four streams.
  const std::size_t in = 1027;
  for (std::size_t m : {1u, 7u}) {
    for (std::size_t rb : {16u, 32u, 64u}) {
      for (int wv : {127, -127, 0}) {
        // wv == 0: alternating +-127 by output and input.
        const SparseI8 w(
            rb + 3, in, rb, [](std::size_t, std::size_t) { return true; },
            [&](std::size_t n, std::size_t k) {
              return static_cast<std::int8_t>(wv != 0 ? wv : ((n + k) % 2 ? 127 : -127));
            });
        for (int av : {127, -127, -128, 0}) {
          std::vector<std::int8_t> q(m * in);
          for (std::size_t i = 0; i < q.size(); ++i) {
            q[i] = static_cast<std::int8_t>(av != 0 ? av : (i % 3 == 0 ? -128 : 127));
          }
          this->expect_matches_reference(w, q, m,
                                         "R=" + std::to_string(rb) + " m=" + std::to_string(m) +
                                             " w=" + std::to_string(wv) +
                                             " a=" + std::to_string(av));
        }
      }
    }
  }
}

TYPED_TEST(SimdSpmmS8S32, BlockRowRangesComputeOnlyTheirBlockRows) {
  // Thirty block-rows, of which [1, 29) are asked for: for one row on AVX2 that is more
  // than one chunk of block-rows per kernel call (384 outputs), at every block size.
  for (std::size_t rb : {16u, 32u, 64u}) {
    const std::size_t in = 50, out = 30 * rb;
    std::mt19937 rng(static_cast<unsigned>(9 + rb));
    std::uniform_int_distribution<int> v(-127, 127);
    const SparseI8 w(
        out, in, rb, [](std::size_t br, std::size_t bc) { return (br + bc) % 3 != 0; },
        [&](std::size_t, std::size_t) { return static_cast<std::int8_t>(v(rng)); });
    for (std::size_t m : {1u, 8u}) {
      const auto q = uniform_int8(m * in, -127, 127, static_cast<unsigned>(10 + m));
      const auto want = run<simd::I8Scalar>(w, q, m, 0, w.block_rows());
      const auto got = run<TypeParam>(w, q, m, 1, 29);
      for (std::size_t r = 0; r < m; ++r) {
        for (std::size_t n = 0; n < out; ++n) {
          const bool in_range = n >= rb && n < 29 * rb;
          ASSERT_EQ(got[r * out + n], in_range ? want[r * out + n] : 0)
              << "R=" << rb << " m=" << m << " row " << r << " output " << n;
        }
      }
    }
  }
}

}  // namespace
