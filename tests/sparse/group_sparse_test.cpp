// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/sparse/group_sparse_f32.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "dynasparse/simd/spmm_f32.hpp"
#include "support/arches.hpp"
#include "support/random.hpp"
#include "support/threads.hpp"

namespace {

using namespace dynasparse_test;
namespace ds = dynasparse;
namespace sparse = dynasparse::sparse;

// x W_masked^T + b in double, plus sum |terms| for the tolerance.
void dense_reference(const std::vector<float>& x, const std::vector<float>& wm, const std::vector<float>& b,
                     std::size_t m, std::size_t in, std::size_t out, std::vector<double>& y,
                     std::vector<double>& mag) {
  y.assign(m * out, 0.0);
  mag.assign(m * out, 0.0);
  for (std::size_t r = 0; r < m; ++r) {
    for (std::size_t j = 0; j < out; ++j) {
      double s = b.empty() ? 0.0 : b[j], a = std::fabs(s);
      for (std::size_t k = 0; k < in; ++k) {
        s += static_cast<double>(x[r * in + k]) * wm[j * in + k];
        a += std::fabs(static_cast<double>(x[r * in + k]) * wm[j * in + k]);
      }
      y[r * out + j] = s;
      mag[r * out + j] = a;
    }
  }
}

template <class Arch>
class SimdSpmmF32 : public ::testing::Test {};
TYPED_TEST_SUITE(SimdSpmmF32, FloatArches, ArchNames);

TYPED_TEST(SimdSpmmF32, EqualsTheDenseProductOfTheMaskedMatrix) {
  // One row with in = 301 takes the kernel's four-stream path (>= 256 inputs in a
  // block-row), with a partial last block-column and a remainder of blocks. Row counts
  // leave every remainder from 1 to 5 past tiles of 6 rows.
  for (auto [r_block, c_block] : {std::pair<std::size_t, std::size_t>{16, 1}, {16, 4}, {16, 8}, {32, 4}, {64, 1}, {64, 4}}) {
    for (auto [m, in, out] : {std::tuple<std::size_t, std::size_t, std::size_t>{1, 37, 20},
                              {7, 64, 48},
                              {9, 30, 33},
                              {13, 5, 16},
                              {30, 21, 70},
                              {1, 301, 20},
                              {4, 17, 24},
                              {11, 40, 40}}) {
      for (double target : {0.0, 0.5, 0.9, 1.0}) {
        const auto w = uniform_floats(out * in, -1.0f, 1.0f, static_cast<unsigned>(in * out + c_block));
        const auto x = uniform_floats(m * in, -1.0f, 1.0f, static_cast<unsigned>(m + in));
        const auto b = uniform_floats(out, -1.0f, 1.0f, 5u);
        const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in), {{r_block, c_block}, target, false});
        const auto csr = sparse::BlockCsr<float>::from_dense(ds::ConstMatrixView(w.data(), out, in), mask, "w");
        const auto wm = csr.to_dense();
        std::vector<double> want, mag;
        dense_reference(x, wm, b, m, in, out, want, mag);
        std::vector<float> y(m * out, -7.0f);
        ds::simd::spmm_f32<TypeParam>(x.data(), in, m, in, csr.row_ptr.data(), csr.col_idx.data(),
                                      csr.values.data(), r_block, c_block, 0, csr.block_rows(), b.data(),
                                      y.data(), out, out);
        for (std::size_t i = 0; i < y.size(); ++i) {
          ASSERT_NEAR(y[i], want[i], 1e-5 * mag[i] + 1e-7)
              << "R=" << r_block << " C=" << c_block << " m=" << m << " in=" << in << " out=" << out << " target=" << target;
        }
      }
    }
  }
}

TYPED_TEST(SimdSpmmF32, ValueBlocksMultiplyASubsetOfTheBlocksInPlace) {
  // Every other block of a fully stored matrix, addressed through value_blocks, equals the
  // dense product of the matrix with the other blocks zeroed.
  for (auto [r_block, c_block] : {std::pair<std::size_t, std::size_t>{16, 4}, {32, 8}, {64, 8}}) {
    for (auto [m, in, out] : {std::tuple<std::size_t, std::size_t, std::size_t>{1, 64, 40},
                              {1, 320, 64},
                              {13, 40, 70}}) {
      const auto w =
          uniform_floats(out * in, -1.0f, 1.0f, static_cast<unsigned>(in + out + c_block));
      const auto x = uniform_floats(m * in, -1.0f, 1.0f, static_cast<unsigned>(m * in));
      const auto b = uniform_floats(out, -1.0f, 1.0f, 6u);
      const auto full = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in),
                                              {{r_block, c_block}, 0.0, false});
      const auto csr =
          sparse::BlockCsr<float>::from_dense(ds::ConstMatrixView(w.data(), out, in), full, "w");
      std::vector<std::uint32_t> row_ptr{0}, col_idx, value_blocks;
      auto wm = csr.to_dense();
      for (std::size_t br = 0; br < csr.block_rows(); ++br) {
        for (std::uint32_t blk = csr.row_ptr[br]; blk < csr.row_ptr[br + 1]; ++blk) {
          if ((blk + br) % 2 == 0) {
            col_idx.push_back(csr.col_idx[blk]);
            value_blocks.push_back(blk);
            continue;
          }
          for (std::size_t i = 0; i < r_block && br * r_block + i < out; ++i) {
            for (std::size_t c = 0; c < c_block && csr.col_idx[blk] * c_block + c < in; ++c) {
              wm[(br * r_block + i) * in + csr.col_idx[blk] * c_block + c] = 0.0f;
            }
          }
        }
        row_ptr.push_back(static_cast<std::uint32_t>(col_idx.size()));
      }
      std::vector<double> want, mag;
      dense_reference(x, wm, b, m, in, out, want, mag);
      std::vector<float> y(m * out, -7.0f);
      ds::simd::spmm_f32<TypeParam>(x.data(), in, m, in, row_ptr.data(), col_idx.data(),
                                    csr.values.data(), r_block, c_block, 0, csr.block_rows(),
                                    b.data(), y.data(), out, out, value_blocks.data());
      for (std::size_t i = 0; i < y.size(); ++i) {
        ASSERT_NEAR(y[i], want[i], 1e-5 * mag[i] + 1e-7)
            << "R=" << r_block << " C=" << c_block << " m=" << m << " in=" << in << " i=" << i;
      }
    }
  }
}

TEST(GroupSparseF32, DenseSparseDenseRoundTripKeepsExactlyTheMaskedWeights) {
  const std::size_t out = 40, in = 26;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 8u);
  const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in), {{16, 4}, 0.6, false});
  const sparse::GroupSparseF32 layer(ds::ConstMatrixView(w.data(), out, in), mask, {}, "fc");
  const auto back = layer.csr().to_dense();
  const auto e = sparse::to_element_mask(mask);
  for (std::size_t i = 0; i < w.size(); ++i) EXPECT_EQ(back[i], e[i] != 0.0f ? w[i] : 0.0f);
  EXPECT_EQ(layer.csr().mask().keep, mask.keep);
  EXPECT_NEAR(layer.density(), 1.0 - mask.sparsity(), 1e-12);
}

TEST(GroupSparseF32, RowSplitAcrossThreadsGivesTheSameBits) {
  // 61 rows (not a multiple of any register tile) of a layer big enough to be split across
  // two threads by rows of x (parallel_rows_or_block_rows), against one thread.
  const std::size_t m = 61, out = 128, in = 512;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 19u);
  const auto x = uniform_floats(m * in, -1.0f, 1.0f, 20u);
  const auto b = uniform_floats(out, -1.0f, 1.0f, 21u);
  const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in), {{64, 4}, 0.5, false});
  const sparse::GroupSparseF32 layer(ds::ConstMatrixView(w.data(), out, in), mask, b, "fc");
  EXPECT_EQ(forward_on_threads(layer, x, m, in, out, 1), forward_on_threads(layer, x, m, in, out, 2));
}

TEST(GroupSparseF32, ForwardIsIndependentOfThreadCountAndMatchesDense) {
  const std::size_t m = 5, out = 100, in = 70;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 9u);
  const auto x = uniform_floats(m * in, -1.0f, 1.0f, 10u);
  const auto b = uniform_floats(out, -1.0f, 1.0f, 11u);
  const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in), {{16, 4}, 0.7, true});
  const sparse::GroupSparseF32 layer(ds::ConstMatrixView(w.data(), out, in), mask, b, "fc");
  const auto y1 = forward_on_threads(layer, x, m, in, out, 1);
  EXPECT_EQ(y1, forward_on_threads(layer, x, m, in, out, 2));
  std::vector<double> want, mag;
  dense_reference(x, layer.csr().to_dense(), b, m, in, out, want, mag);
  for (std::size_t i = 0; i < y1.size(); ++i) EXPECT_NEAR(y1[i], want[i], 1e-5 * mag[i] + 1e-7);
}

TEST(GroupSparseF32, MemoryAtSeventyPercentIsAboutAThirdOfDense) {
  const std::size_t out = 512, in = 512;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 12u);
  const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in), {{16, 4}, 0.7, false});
  const sparse::GroupSparseF32 layer(ds::ConstMatrixView(w.data(), out, in), mask, {}, "fc");
  // Values of 30% of the blocks plus one index per 64 values and one row pointer per 16 rows.
  EXPECT_LE(static_cast<double>(layer.bytes()), 0.35 * static_cast<double>(out * in * sizeof(float)));
}

TEST(BlockCsr, CorruptStructuresAreFormatErrorsNamingTheLayer) {
  const std::size_t out = 32, in = 16;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 13u);
  const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in), {{16, 4}, 0.5, false});
  const auto good = sparse::BlockCsr<float>::from_dense(ds::ConstMatrixView(w.data(), out, in), mask, "w");
  EXPECT_NO_THROW(good.validate("layers.0.ffn.up"));
  auto expect_format_error = [](const sparse::BlockCsr<float>& c, const char* what) {
    try {
      c.validate("layers.0.ffn.up");
      ADD_FAILURE() << "accepted: " << what;
    } catch (const ds::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("layers.0.ffn.up"), std::string::npos) << e.what();
    }
  };
  auto c = good;
  std::swap(c.row_ptr[1], c.row_ptr[2]);
  c.row_ptr[1] = c.row_ptr[2] + 1;
  expect_format_error(c, "row pointer not monotone");
  c = good;
  // A middle pointer past the blocks while the last one is right: must be refused before
  // its row's blocks are read (ASan catches the read otherwise).
  c.row_ptr[1] = 1000;
  expect_format_error(c, "middle row pointer beyond the blocks");
  c = good;
  c.col_idx[0] = 99;
  expect_format_error(c, "column index out of range");
  // Block sides whose product R * C would wrap around (to 16, or to 0) are refused before it
  // is formed: the wrapped count would match the values and the kernel would read past them.
  // One block-row of one block, everything else consistent with the wrapped count.
  sparse::BlockCsr<float> wide;
  wide.out = 16;
  wide.in = 8;
  wide.shape = {16, (std::size_t{1} << 62) + 1};
  wide.row_ptr = {0, 1};
  wide.col_idx = {0};
  wide.values.resize_discard(16);
  expect_format_error(wide, "block shape overflowing R * C");
  wide.shape.cols = std::size_t{1} << 60;
  expect_format_error(wide, "block shape making R * C zero");
  wide.shape.cols = sparse::max_block_side;  // the largest side is fine but for the value count
  wide.values.resize_discard(16 * sparse::max_block_side);
  EXPECT_NO_THROW(wide.validate("layers.0.ffn.up"));
  c = good;
  c.values.resize_discard(good.values.size() - 1);
  expect_format_error(c, "wrong value count");
  c = good;
  c.row_ptr.pop_back();
  expect_format_error(c, "short row pointer");
  c = good;
  c.row_ptr.back() += 1;
  expect_format_error(c, "row pointer beyond the blocks");
  if (good.row_ptr[1] >= 2) {
    c = good;
    std::swap(c.col_idx[0], c.col_idx[1]);
    expect_format_error(c, "unsorted columns");
  }
  c = good;
  EXPECT_THROW(sparse::GroupSparseF32(std::move(c), std::vector<float>(3), "fc"), ds::ShapeError);
  try {
    auto bad = good;
    bad.col_idx[0] = 99;
    sparse::GroupSparseF32(std::move(bad), {}, "layers.3.ffn.down");
    FAIL();
  } catch (const ds::FormatError& e) {
    EXPECT_STREQ(e.what(), "dynasparse.sparse: block column index out of range; expected < 4, got 99 "
                           "[layers.3.ffn.down block 0]");
  }
}

}  // namespace
