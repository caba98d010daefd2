// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/core/aligned_buffer.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace {

namespace ds = dynasparse;

TEST(AlignedBuffer, IsAlignedAndZeroed) {
  for (std::size_t n : {1u, 3u, 17u, 1000u}) {
    ds::AlignedBuffer<float> b(n);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % ds::buffer_alignment, 0u);
    EXPECT_EQ(b.size(), n);
    EXPECT_EQ(b.bytes(), n * sizeof(float));
    for (float v : b) EXPECT_EQ(v, 0.0f);
  }
}

TEST(AlignedBuffer, CopyIsDeepAndMoveEmptiesSource) {
  ds::AlignedBuffer<int> a(5);
  for (int i = 0; i < 5; ++i) a[static_cast<std::size_t>(i)] = i * i;
  ds::AlignedBuffer<int> c = a;
  c[2] = -1;
  EXPECT_EQ(a[2], 4);
  ds::AlignedBuffer<int> m = std::move(a);
  EXPECT_EQ(m[4], 16);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_EQ(a.data(), nullptr);
}

TEST(AlignedBuffer, EmptyBufferHasNoStorage) {
  ds::AlignedBuffer<double> b(0);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_EQ(b.begin(), b.end());
}

TEST(AlignedBuffer, OverflowingSizeIsAConfigError) {
  EXPECT_THROW(ds::AlignedBuffer<float>(std::numeric_limits<std::size_t>::max() / 2),
               ds::ConfigError);
}

}  // namespace
