// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/core/workspace.hpp"

#include <cstdint>
#include <cstring>
#include <utility>

#include <gtest/gtest.h>

namespace {

namespace ds = dynasparse;

bool aligned(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % ds::buffer_alignment == 0;
}

TEST(Workspace, AllocationsAreAlignedAndDisjoint) {
  ds::Workspace ws(256);
  float* a = ws.allocate<float>(3);
  std::int8_t* b = ws.allocate<std::int8_t>(5);
  float* c = ws.allocate<float>(17);
  EXPECT_TRUE(aligned(a) && aligned(b) && aligned(c));
  std::memset(a, 0x11, 3 * sizeof(float));
  std::memset(b, 0x22, 5);
  std::memset(c, 0x33, 17 * sizeof(float));
  EXPECT_EQ(reinterpret_cast<unsigned char*>(a)[11], 0x11);
  EXPECT_EQ(b[4], 0x22);
}

TEST(Workspace, GrowsWithoutMovingLiveAllocationsThenSettlesInOneBlock) {
  ds::Workspace ws(128);
  float* first = ws.allocate<float>(16);
  first[0] = 7.0f;
  float* big = ws.allocate<float>(1000);  // does not fit: a second block
  big[999] = 1.0f;
  EXPECT_EQ(first[0], 7.0f);
  EXPECT_EQ(ws.blocks(), 2u);
  ws.reset();
  EXPECT_EQ(ws.blocks(), 1u);
  const std::size_t cap = ws.capacity();
  EXPECT_GE(cap, ws.high_water());
  // The same pattern again fits in the merged block: no growth.
  ws.allocate<float>(16);
  ws.allocate<float>(1000);
  EXPECT_EQ(ws.blocks(), 1u);
  EXPECT_EQ(ws.capacity(), cap);
}

TEST(Workspace, ScopeGivesMemoryBack) {
  ds::Workspace ws(4096);
  float* outer = ws.allocate<float>(10);
  float* inner_first = nullptr;
  {
    ds::Workspace::Scope scope(ws);
    inner_first = ws.allocate<float>(100);
  }
  EXPECT_EQ(ws.allocate<float>(100), inner_first);
  EXPECT_NE(outer, inner_first);
}

TEST(Workspace, HighWaterCountsLiveBytesAcrossBlocksAndScopes) {
  // Requests round up to buffer_alignment bytes; the high-water mark is the most live at
  // once, whatever blocks they landed in and whatever scopes gave back.
  constexpr std::size_t al = ds::buffer_alignment;
  const auto rounded = [](std::size_t bytes) { return (bytes + al - 1) / al * al; };
  ds::Workspace ws(256);
  ws.allocate<float>(10);
  const std::size_t outer = rounded(10 * sizeof(float));
  EXPECT_EQ(ws.high_water(), outer);
  {
    ds::Workspace::Scope scope(ws);
    ws.allocate<float>(1000);  // new blocks
    ws.allocate<float>(3);
    EXPECT_GE(ws.blocks(), 2u);
    EXPECT_EQ(ws.high_water(), outer + rounded(4000) + rounded(12));
  }
  const std::size_t peak = ws.high_water();
  {
    // After the scope only `outer` is live: this fits under the peak.
    ds::Workspace::Scope scope(ws);
    ws.allocate<float>(1000);
    EXPECT_EQ(ws.high_water(), peak);
    ws.allocate<float>(64);
    EXPECT_EQ(ws.high_water(), outer + rounded(4000) + rounded(256));
  }
  ws.reset();
  ws.allocate<char>(1);
  EXPECT_EQ(ws.high_water(), outer + rounded(4000) + rounded(256));
  EXPECT_EQ(ws.blocks(), 1u);
}

TEST(Workspace, AMoveLeavesTheSourceEmptyAndReusable) {
  ds::Workspace a(256);
  a.allocate<float>(1000);
  ds::Workspace b(std::move(a));
  EXPECT_GE(b.high_water(), 4000u);
  EXPECT_EQ(a.blocks(), 0u);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(a.high_water(), 0u);
  a.reserve(128);  // nothing live: allowed
  EXPECT_EQ(a.blocks(), 1u);
  float* p = a.allocate<float>(8);
  p[7] = 1.0f;
  EXPECT_EQ(a.high_water(), ds::buffer_alignment);
  ds::Workspace c;
  c = std::move(b);
  EXPECT_EQ(b.blocks(), 0u);  // NOLINT(bugprone-use-after-move)
  EXPECT_GE(c.high_water(), 4000u);
}

TEST(Workspace, OverflowingRequestIsAConfigError) {
  ds::Workspace ws;
  EXPECT_THROW(ws.allocate<float>(~std::size_t{0} / 2), ds::ConfigError);
}

}  // namespace
