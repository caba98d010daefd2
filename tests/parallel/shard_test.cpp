// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/parallel/shard.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dynasparse/parallel/partitioner.hpp"
#include "parallel/random_model.hpp"

namespace {

namespace ds = dynasparse;
namespace par = dynasparse::parallel;

TEST(Shard, PlacesCutWholeHeadsAndWhole16RowFfnBlocks) {
  auto cfg = dynasparse_test::small_config();
  cfg.ffn = 16 * 7 + 5;  // 7 whole blocks and a partial one over 4 ranks
  const par::Plan plan = par::fixed_plan(cfg, 4, 1);
  std::size_t rows = 0;
  for (std::size_t r = 0; r < 4; ++r) {
    const par::RankPlace p = par::place_of(plan, cfg, r, 4);
    EXPECT_EQ(p.head_count, 1u);
    EXPECT_EQ(p.first_head, r);
    EXPECT_EQ(p.first_ffn, rows);
    EXPECT_EQ(p.first_ffn % 16, 0u);
    if (r < 3) {
      EXPECT_EQ(p.ffn_count % 16, 0u);
    }
    rows += p.ffn_count;
  }
  EXPECT_EQ(rows, cfg.ffn);  // the partial block goes with the last rank
  // Ranks are TP-innermost: in a 2 x 2 plan rank 3 is stage 1, index 1.
  const par::RankPlace p = par::place_of(par::fixed_plan(cfg, 2, 2), cfg, 3, 4);
  EXPECT_EQ(p.stage, 1u);
  EXPECT_EQ(p.tp_index, 1u);
  EXPECT_EQ(p.first_layer, 2u);
  EXPECT_EQ(p.last_layer, 4u);
}

TEST(Shard, TensorParallelShardsHoldAShareOfTheWeights) {
  const auto cfg = dynasparse_test::small_config();
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const ds::Model m = ds::Model::from_file(f);
  const auto one = par::ModelShard::load(f, par::fixed_plan(cfg, 1, 1), 0);
  EXPECT_EQ(one.bytes(), m.bytes());
  const par::Plan plan = par::fixed_plan(cfg, 2, 2);
  std::size_t total = 0;
  for (std::size_t r = 0; r < 4; ++r) {
    const auto s = par::ModelShard::load(f, plan, r);
    EXPECT_LT(s.bytes(), m.bytes() / 2) << "rank " << r;
    EXPECT_EQ(s.first_stage(), r < 2);
    EXPECT_EQ(s.last_stage(), r >= 2);
    EXPECT_EQ(s.num_layers(), 2u);
    total += s.bytes();
  }
  EXPECT_GE(total, m.bytes());  // embeddings and norms are replicated across the TP group
}

TEST(Shard, AHeadSubsetRefusesTheOutputGate) {
  ds::nn::GatedAttentionConfig c;
  c.embed_dim = 32;
  c.num_heads = 4;
  c.local_heads = 2;
  c.gate = ds::GatePosition::Output;
  try {
    ds::nn::resolve_config(c, "attn");
    ADD_FAILURE() << "accepted";
  } catch (const ds::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("an output gate acts on the sum over all heads"), std::string::npos);
  }
  c.gate = ds::GatePosition::Head;
  c.local_heads = 5;
  EXPECT_THROW(ds::nn::resolve_config(c, "attn"), ds::ConfigError);
  c.local_heads = 0;
  EXPECT_EQ(ds::nn::resolve_config(c, "attn").local_heads, 4u);
}

TEST(Shard, RejectsAFfnTooNarrowForTheDegree) {
  auto cfg = dynasparse_test::small_config();
  cfg.ffn = 48;  // 3 blocks of 16 over 4 ranks
  EXPECT_THROW(par::place_of(par::fixed_plan(cfg, 4, 1), cfg, 0, 4), ds::ConfigError);
}

}  // namespace
