// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/core/tensor.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

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

TEST(FeatureGroups, SpansOfGroupsListsEachTouchedSpanOnceInOrder) {
  // Groups of 8 features over spans of 16: groups 5 and 0 touch spans 2 and 0, whatever
  // their order and repeats.
  std::uint32_t out[4];
  const std::uint32_t g1[] = {5, 0, 5};
  ASSERT_EQ(ds::spans_of_groups(8, g1, 3, 16, 4, out), 2u);
  EXPECT_EQ(out[0], 0u);
  EXPECT_EQ(out[1], 2u);
  // A group of 24 features straddles spans: group 1 is features 24-47, spans 1 and 2.
  const std::uint32_t g2[] = {1};
  ASSERT_EQ(ds::spans_of_groups(24, g2, 1, 16, 4, out), 2u);
  EXPECT_EQ(out[0], 1u);
  EXPECT_EQ(out[1], 2u);
  EXPECT_EQ(ds::spans_of_groups(8, g2, 0, 16, 4, out), 0u);
}

TEST(FeatureGroups, CheckRejectsAZeroOrTooWideGroupAndIndicesPastTheWidth) {
  const std::uint32_t ok[] = {0, 4}, past[] = {5};
  EXPECT_NO_THROW(ds::check_feature_groups(8, ok, 2, 40, "nn", "output", "q"));
  EXPECT_THROW(ds::check_feature_groups(8, past, 1, 40, "nn", "output", "q"), ds::ConfigError);
  EXPECT_THROW(ds::check_feature_groups(0, ok, 1, 40, "nn", "output", "q"), ds::ConfigError);
  EXPECT_THROW(ds::check_feature_groups(41, ok, 1, 40, "nn", "output", "q"), ds::ConfigError);
  try {
    ds::check_feature_groups(8, past, 1, 40, "quant", "output", "layers.0.q_proj");
    FAIL() << "no error";
  } catch (const ds::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.q_proj"), std::string::npos) << e.what();
  }
}
