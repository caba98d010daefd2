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

// forward_output_groups of a group-sparse format against its own forward(): the listed
// groups' columns bit for bit, block-rows holding no listed group never written.
template <class Layer>
void check_output_groups(const Layer& layer, std::size_t m, std::size_t in, std::size_t out,
                         std::size_t rb, unsigned seed) {
  const auto x = uniform_floats(m * in, -1.0f, 1.0f, seed);
  const std::vector<float> full = forward_on_threads(layer, x, m, in, out, 1);
  const std::vector<std::uint32_t> groups{5, 1, 2, 1};  // any order, repeats allowed
  for (int threads : {1, 2}) {
    ds::set_num_threads(threads);
    ds::Workspace ws;
    std::vector<float> part(m * out, -7.0f);
    layer.forward_output_groups(ds::ConstMatrixView(x.data(), m, in),
                                ds::MatrixView(part.data(), m, out), 8, groups.data(),
                                groups.size(), ws);
    ds::set_num_threads(0);
    for (std::size_t r = 0; r < m; ++r) {
      for (std::size_t c = 0; c < out; ++c) {
        bool listed = false, in_listed_block_row = false;
        for (std::uint32_t g : groups) {
          listed = listed || c / 8 == g;
          in_listed_block_row =
              in_listed_block_row || (g * 8 / rb <= c / rb && c / rb <= (g * 8 + 7) / rb);
        }
        if (listed) {
          ASSERT_EQ(part[r * out + c], full[r * out + c])
              << layer.name() << " m " << m << " threads " << threads << " row " << r << " column "
              << c;
        } else if (!in_listed_block_row) {
          ASSERT_EQ(part[r * out + c], -7.0f)
              << layer.name() << " column " << c << ", blocks of " << rb;
        }
      }
    }
  }
}

TEST(GroupSparseLayers, OutputGroupsEqualThoseColumnsOfForwardBitForBit) {
  // Heads of 8 outputs against block-rows of 16 and 32; one row (decoding) and several; 72
  // outputs leave the last block-row partial; the wide layer gives each thread enough work.
  for (std::size_t rb : {16u, 32u}) {
    for (auto [m, in] :
         {std::pair<std::size_t, std::size_t>{1, 40}, {7, 40}, {1, 4096}, {3, 1024}}) {
      const std::size_t out = 72;
      const auto w = uniform_floats(out * in, -1.0f, 1.0f, static_cast<unsigned>(rb + in + m));
      const auto b = uniform_floats(out, -1.0f, 1.0f, 25u);
      const ds::ConstMatrixView wv(w.data(), out, in);
      const auto mask = sparse::prune_by_norm(wv, {{rb, 4}, 0.5, false});
      check_output_groups(sparse::GroupSparseF32(wv, mask, b, "f32"), m, in, out, rb, 26u);
      sparse::GroupSparseI8 i8(wv, mask, b, "i8");
      check_output_groups(i8, m, in, out, rb, 27u);
      i8.set_activation_alpha(0.5f);  // static activation scales
      check_output_groups(i8, m, in, out, rb, 28u);
    }
  }
}

TEST(GroupSparseLayers, OutputGroupArgumentsAreChecked) {
  const std::size_t out = 40, in = 16;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 29u);
  const ds::ConstMatrixView wv(w.data(), out, in);
  const auto mask = sparse::prune_by_norm(wv, {{16, 4}, 0.5, false});
  const auto x = uniform_floats(2 * in, -1.0f, 1.0f, 30u);
  const ds::ConstMatrixView xv(x.data(), 2, in);
  std::vector<float> y(2 * out);
  const ds::MatrixView yv(y.data(), 2, out);
  const std::uint32_t past[] = {5}, first[] = {0};  // 40 / 8 = 5 groups
  ds::Workspace ws;
  const auto check = [&](const auto& layer) {
    EXPECT_THROW(layer.forward_output_groups(xv, yv, 8, past, 1, ws), ds::ConfigError);
    EXPECT_THROW(layer.forward_output_groups(xv, yv, 0, first, 1, ws), ds::ConfigError);
    EXPECT_THROW(layer.forward_output_groups(xv, yv, 41, first, 1, ws), ds::ConfigError);
    EXPECT_THROW(layer.forward_output_groups(xv, ds::MatrixView(y.data(), 2, 39), 8, first, 1, ws),
                 ds::ShapeError);
  };
  check(sparse::GroupSparseF32(wv, mask, {}, "f32"));
  check(sparse::GroupSparseI8(wv, mask, {}, "i8"));
}

}  // namespace
