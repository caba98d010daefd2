// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/sparse/block_mask.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
namespace sparse = dynasparse::sparse;
using dynasparse_test::uniform_floats;

TEST(PruneByNorm, RemovesExactlyTheTargetFractionOfSmallestBlocks) {
  const std::size_t out = 64, in = 40;
  auto w = uniform_floats(out * in, -1.0f, 1.0f, 1u);
  for (double target : {0.0, 0.3, 0.5, 0.7, 1.0}) {
    const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), out, in), {{16, 4}, target, false});
    ASSERT_EQ(mask.keep.size(), 4u * 10u);
    EXPECT_EQ(mask.keep.size() - mask.kept(), static_cast<std::size_t>(std::llround(target * 40)));
    // Every removed block is no larger than every kept block.
    double max_removed = 0.0, min_kept = 1e300;
    for (std::size_t br = 0; br < 4; ++br) {
      for (std::size_t bc = 0; bc < 10; ++bc) {
        double n = 0.0;
        for (std::size_t i = 0; i < 16; ++i) {
          for (std::size_t c = 0; c < 4; ++c) n += std::pow(w[(br * 16 + i) * in + bc * 4 + c], 2);
        }
        if (mask.keep[br * 10 + bc]) {
          min_kept = std::min(min_kept, n);
        } else {
          max_removed = std::max(max_removed, n);
        }
      }
    }
    if (target > 0.0 && target < 1.0) {
      EXPECT_LE(max_removed, min_kept) << target;
    }
  }
}

TEST(PruneByNorm, BalancedRemovesTheSameCountPerBlockRow) {
  auto w = uniform_floats(48 * 64, -1.0f, 1.0f, 2u);
  for (std::size_t i = 0; i < 16 * 64; ++i) w[i] *= 10.0f;  // the first block-row dominates
  const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), 48, 64), {{16, 4}, 0.5, true});
  for (std::size_t br = 0; br < 3; ++br) {
    std::size_t kept = 0;
    for (std::size_t bc = 0; bc < 16; ++bc) kept += mask.keep[br * 16 + bc];
    EXPECT_EQ(kept, 8u) << br;
  }
  const auto global = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), 48, 64), {{16, 4}, 0.5, false});
  std::size_t kept0 = 0;
  for (std::size_t bc = 0; bc < 16; ++bc) kept0 += global.keep[bc];
  EXPECT_EQ(kept0, 16u);  // unbalanced pruning keeps every block of the large row
}

TEST(BlockMask, ElementMaskRoundTripsAndRejectsMixedBlocks) {
  auto w = uniform_floats(20 * 9, -1.0f, 1.0f, 3u);  // edge blocks are partial
  const auto mask = sparse::prune_by_norm(ds::ConstMatrixView(w.data(), 20, 9), {{16, 4}, 0.5, false});
  const auto e = sparse::to_element_mask(mask);
  const auto back = sparse::from_element_mask(ds::ConstMatrixView(e.data(), 20, 9), {16, 4});
  EXPECT_EQ(back.keep, mask.keep);
  auto broken = e;
  broken[0] = broken[0] == 0.0f ? 1.0f : 0.0f;
  EXPECT_THROW(sparse::from_element_mask(ds::ConstMatrixView(broken.data(), 20, 9), {16, 4}), ds::FormatError);
}

TEST(BlockMask, BadArgumentsAreConfigErrors) {
  std::vector<float> w(32, 1.0f);
  const ds::ConstMatrixView v(w.data(), 4, 8);
  EXPECT_THROW(sparse::prune_by_norm(v, {{0, 4}, 0.5, false}), ds::ConfigError);
  EXPECT_THROW(sparse::prune_by_norm(v, {{16, 4}, 1.5, false}), ds::ConfigError);
  w[3] = std::nanf("");
  EXPECT_THROW(sparse::prune_by_norm(v, {{16, 4}, 0.5, false}), ds::FormatError);
}

TEST(ProgressiveSchedule, FollowsTheSeed) {
  const auto s = sparse::progressive_schedule(0.7);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_DOUBLE_EQ(s.front(), 0.3);
  EXPECT_NEAR(s[2], 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(s.back(), 0.7);
  EXPECT_EQ(sparse::progressive_schedule(0.55).back(), 0.55);
  EXPECT_EQ(sparse::progressive_schedule(0.2).size(), 1u);
  EXPECT_THROW(sparse::progressive_schedule(0.7, 0.3, 0.0), ds::ConfigError);
}

}  // namespace
