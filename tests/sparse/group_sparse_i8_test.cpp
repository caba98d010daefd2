// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/sparse/group_sparse_i8.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "dynasparse/nn/linear.hpp"
#include "dynasparse/simd/spmm_int8.hpp"
#include "dynasparse/sparse/group_sparse_f32.hpp"
#include "support/arches.hpp"
#include "support/random.hpp"
#include "support/threads.hpp"

namespace {

using namespace dynasparse_test;
namespace ds = dynasparse;
namespace sparse = dynasparse::sparse;

template <class I8Arch>
class SimdSpmmS8 : public ::testing::Test {};
TYPED_TEST_SUITE(SimdSpmmS8, Int8Arches, ArchNames);

TYPED_TEST(SimdSpmmS8, BitExactWithScalarReference) {
  for (std::size_t rb : {16u, 32u, 64u}) {
    for (auto [m, in, out] : {std::tuple<std::size_t, std::size_t, std::size_t>{1, 37, 20}, {7, 64, 70}, {13, 9, 33}}) {
      for (double target : {0.0, 0.5, 0.9}) {
        const auto w = uniform_floats(out * in, -1.0f, 1.0f, static_cast<unsigned>(in + out + rb));
        const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in), {{rb, 4}, target, false});
        const sparse::GroupSparseI8 layer(ds::ConstMatrixView(w.data(), out, in), mask, {}, "w");
        const auto& csr = layer.csr();
        // Signed activations for the reference; the kernel's own prepared copy.
        const auto q = uniform_int8(m * in, -127, 127, static_cast<unsigned>(m + in));
        const std::size_t lda = std::max(ds::simd::gemm_activation_row_bytes<TypeParam>(in), (in + 3) / 4 * 4);
        std::vector<std::int8_t> prepared(m * lda, 0);
        for (std::size_t r = 0; r < m; ++r) {
          ds::simd::gemm_prepare_activation_row<TypeParam>(q.data() + r * in, in, prepared.data() + r * lda);
        }
        std::vector<std::int32_t> sums(csr.block_rows() * rb, 0);
        for (std::size_t n = 0; n < out; ++n) {
          for (std::size_t k = 0; k < in; ++k) {
            // Stored weights of output n, from the dense view of the int8 matrix.
            sums[n] -= 128 * static_cast<std::int32_t>(csr.to_dense()[n * in + k]);
          }
        }
        const auto dense_q = csr.to_dense();
        std::vector<int> seen(m * out, 0);
        ds::simd::spmm_s8s8_s32<TypeParam>(
            prepared.data(), lda, m, in, csr.row_ptr.data(), csr.col_idx.data(), csr.values.data(), rb, 0,
            csr.block_rows(), sums.data(),
            [&](std::size_t r0, std::size_t rows, std::size_t n0, const std::int32_t* tile, std::size_t ld) {
              for (std::size_t r = 0; r < rows; ++r) {
                for (std::size_t i = 0; i < ld && n0 + i < out; ++i) {
                  std::int32_t want = 0;
                  for (std::size_t k = 0; k < in; ++k) {
                    want += static_cast<std::int32_t>(q[(r0 + r) * in + k]) * static_cast<std::int32_t>(dense_q[(n0 + i) * in + k]);
                  }
                  ASSERT_EQ(tile[r * ld + i], want) << "R=" << rb << " m=" << m << " in=" << in << " target=" << target;
                  ++seen[(r0 + r) * out + n0 + i];
                }
              }
            });
        for (int s : seen) ASSERT_EQ(s, 1);
      }
    }
  }
}

TEST(GroupSparseI8, AtZeroSparsityEqualsDenseI8Exactly) {
  const std::size_t m = 5, in = 64, out = 48;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 1u);
  const auto x = uniform_floats(m * in, -1.0f, 1.0f, 2u);
  const auto b = uniform_floats(out, -1.0f, 1.0f, 3u);
  const ds::ConstMatrixView wv(w.data(), out, in);
  const sparse::GroupSparseI8 s(wv, sparse::prune_by_norm(wv, {{16, 4}, 0.0, false}), b, "fc");
  const ds::quant::DenseI8 d(wv, b, "fc");
  std::vector<float> ys(m * out), yd(m * out);
  ds::Workspace ws;
  s.forward(ds::ConstMatrixView(x.data(), m, in), ds::MatrixView(ys.data(), m, out), ws);
  d.forward(ds::ConstMatrixView(x.data(), m, in), ds::MatrixView(yd.data(), m, out), ws);
  EXPECT_EQ(ys, yd);
}

TEST(GroupSparseI8, StaysWithinQuantizationErrorOfTheFloatSparseLayer) {
  const std::size_t m = 6, in = 90, out = 70;
  const auto w = uniform_floats(out * in, -0.5f, 0.5f, 4u);
  const auto x = uniform_floats(m * in, -2.0f, 2.0f, 5u);
  const ds::ConstMatrixView wv(w.data(), out, in);
  const auto mask = sparse::prune_by_norm(wv, {{32, 4}, 0.7, true});
  const sparse::GroupSparseI8 q(wv, mask, {}, "fc");
  const sparse::GroupSparseF32 f(wv, mask, {}, "fc");
  std::vector<float> yq(m * out), yf(m * out);
  ds::Workspace ws;
  ds::set_num_threads(2);
  q.forward(ds::ConstMatrixView(x.data(), m, in), ds::MatrixView(yq.data(), m, out), ws);
  ds::set_num_threads(0);
  f.forward(ds::ConstMatrixView(x.data(), m, in), ds::MatrixView(yf.data(), m, out), ws);
  const auto wm = f.csr().to_dense();
  for (std::size_t r = 0; r < m; ++r) {
    float ax = 0.0f;
    for (std::size_t k = 0; k < in; ++k) ax = std::max(ax, std::fabs(x[r * in + k]));
    for (std::size_t n = 0; n < out; ++n) {
      const double dx = ax / 254.0, dw = q.alphas()[n] / 254.0;
      double bound = 0.0;
      for (std::size_t k = 0; k < in; ++k) {
        if (wm[n * in + k] == 0.0f) continue;  // absent weights are exact zeros in both
        bound += std::fabs(x[r * in + k]) * dw + std::fabs(wm[n * in + k]) * dx + dx * dw;
      }
      EXPECT_NEAR(yq[r * out + n], yf[r * out + n], bound * 1.001 + 1e-5);
    }
  }
  // Memory at 70% (512 x 512): int8 values of 30% of the blocks plus indices, sums and
  // scales, about 9% of the float dense bytes.
  const auto big = uniform_floats(512 * 512, -1.0f, 1.0f, 7u);
  const ds::ConstMatrixView bv(big.data(), 512, 512);
  const sparse::GroupSparseI8 q70(bv, sparse::prune_by_norm(bv, {{16, 4}, 0.7, false}), {}, "big");
  EXPECT_LE(q70.bytes(), 512u * 512u * sizeof(float) * 10 / 100);
}

TEST(GroupSparseI8, RowSplitAcrossThreadsGivesTheSameBits) {
  // 61 rows of a layer big enough to be split across two threads by rows of x, against one
  // thread: quantization and the integer sums are per row, so the bits must not change.
  const std::size_t m = 61, out = 192, in = 512;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 22u);
  const auto x = uniform_floats(m * in, -1.0f, 1.0f, 23u);
  const auto b = uniform_floats(out, -1.0f, 1.0f, 24u);
  const ds::ConstMatrixView wv(w.data(), out, in);
  const sparse::GroupSparseI8 layer(wv, sparse::prune_by_norm(wv, {{64, 4}, 0.3, false}), b, "fc");
  EXPECT_EQ(forward_on_threads(layer, x, m, in, out, 1), forward_on_threads(layer, x, m, in, out, 2));
}

TEST(GroupSparseI8, RejectsUnsupportedShapesAndCorruptParts) {
  const auto w = uniform_floats(32 * 16, -1.0f, 1.0f, 6u);
  const ds::ConstMatrixView wv(w.data(), 32, 16);
  EXPECT_THROW(sparse::GroupSparseI8(wv, sparse::prune_by_norm(wv, {{16, 1}, 0.5, false}), {}, "fc"),
               ds::UnsupportedError);
  const sparse::GroupSparseI8 good(wv, sparse::prune_by_norm(wv, {{16, 4}, 0.5, false}), {}, "fc");
  auto csr = good.csr();
  csr.values[0] = -128;
  EXPECT_THROW(sparse::GroupSparseI8(csr, good.alphas(), {}, "fc"), ds::FormatError);
  EXPECT_THROW(sparse::GroupSparseI8(good.csr(), std::vector<float>(3, 1.0f), {}, "fc"), ds::FormatError);
  auto alphas = good.alphas();
  alphas[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(sparse::GroupSparseI8(good.csr(), alphas, {}, "fc"), ds::FormatError);
}

}  // namespace
