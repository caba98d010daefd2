// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/core/tensor.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "dynasparse/core/eigen_interop.hpp"

namespace {

namespace ds = dynasparse;

TEST(TensorView, IndexesRowMajorWithStride) {
  std::vector<float> buf(3 * 5);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  ds::TensorView<float> v(buf.data(), 3, 4, 5);
  EXPECT_EQ(v(2, 3), 13.0f);
  EXPECT_EQ(v.row(1)[0], 5.0f);
  EXPECT_FALSE(v.contiguous());
  const ds::TensorView<const float> c = v;
  EXPECT_EQ(c(1, 1), 6.0f);
}

TEST(TensorView, SubViewsStayInsideAndRejectOverruns) {
  std::vector<float> buf(12);
  ds::TensorView<float> v(buf.data(), 3, 4);
  const auto rows = v.row_range(1, 2);
  EXPECT_EQ(rows.rows(), 2u);
  EXPECT_EQ(rows.data(), buf.data() + 4);
  const auto cols = v.col_range(1, 3);
  EXPECT_EQ(cols.stride(), 4u);
  EXPECT_EQ(&cols(2, 2), &buf[11]);
  EXPECT_THROW(v.row_range(2, 2), ds::ShapeError);
  EXPECT_THROW(v.col_range(4, 1), ds::ShapeError);
  EXPECT_THROW((ds::TensorView<float>(buf.data(), 2, 4, 3)), ds::ShapeError);
}

TEST(EigenInterop, MapsWithoutCopyingAndHonoursStride) {
  std::vector<float> buf(2 * 6, 1.0f);
  ds::TensorView<float> v(buf.data(), 2, 4, 6);
  auto m = ds::as_eigen(v);
  EXPECT_EQ(m.rows(), 2);
  EXPECT_EQ(m.cols(), 4);
  m(1, 3) = 42.0f;
  EXPECT_EQ(buf[1 * 6 + 3], 42.0f);
  // A product through the map matches the plain loop.
  ds::RowMajorMatrix<float> w(3, 4);
  w.setConstant(0.5f);
  ds::RowMajorMatrix<float> out = m * w.transpose();
  EXPECT_FLOAT_EQ(out(1, 0), 0.5f * (3.0f + 42.0f));
  auto back = ds::as_view(out);
  EXPECT_EQ(back.rows(), 2u);
  EXPECT_EQ(back.cols(), 3u);
}

}  // namespace
