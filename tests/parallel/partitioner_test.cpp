// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/parallel/partitioner.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace {

namespace ds = dynasparse;
namespace par = dynasparse::parallel;

par::Cluster cluster_of(std::size_t n, std::size_t per_node, double memory, double flops, par::Link intra,
                        par::Link inter) {
  par::Cluster c;
  for (std::size_t i = 0; i < n; ++i) c.devices.push_back({memory, flops, i / per_node});
  c.intra_node = intra;
  c.inter_node = inter;
  return c;
}

TEST(Partitioner, BalancesContiguousStagesOptimally) {
  EXPECT_EQ(par::detail::balance({1, 1, 1, 1, 4}, 2), (std::vector<std::size_t>{0, 4, 5}));
  EXPECT_EQ(par::detail::balance({3, 1, 1, 1, 1, 1}, 3), (std::vector<std::size_t>{0, 1, 3, 6}));
  EXPECT_EQ(par::detail::balance({2, 2, 2, 2}, 1), (std::vector<std::size_t>{0, 4}));
}

TEST(Partitioner, RejectsShapesThatSplitHeadsOrMismatchTheWorld) {
  ds::ModelConfig c;
  c.hidden = 96;
  c.heads = 12;
  c.layers = 4;
  const auto model = par::costs_from_config(c, 4.0, 256);
  const auto cl = cluster_of(8, 8, 1e12, 1e11, {1e10, 1e-6}, {1e9, 1e-5});
  const par::Plan bad_tp = par::evaluate(model, cl, {}, 8, 1, 1);
  EXPECT_FALSE(bad_tp.feasible);
  EXPECT_NE(bad_tp.reason.find("does not divide 12 heads"), std::string::npos) << bad_tp.reason;
  EXPECT_FALSE(par::evaluate(model, cl, {}, 2, 2, 1).feasible);  // 4 != 8 ranks
  const par::Plan ok = par::evaluate(model, cl, {}, 4, 2, 1);
  ASSERT_TRUE(ok.feasible) << ok.reason;
  ASSERT_EQ(ok.ranks.size(), 8u);
  EXPECT_EQ(ok.ranks[5].stage, 1u);
  EXPECT_EQ(ok.ranks[5].tp, 1u);
  EXPECT_EQ(ok.ranks[5].head_count, 3u);
  EXPECT_EQ(ok.ranks[5].first_head, 3u);
  EXPECT_EQ(ok.ranks[5].first_layer, 2u);
}

TEST(Partitioner, DataParallelAddsNothingToABatchOfOne) {
  ds::ModelConfig c;
  c.hidden = 1024;
  c.layers = 4;
  const auto model = par::costs_from_config(c, 4.0, 256);
  const auto cl = cluster_of(2, 2, 8e9, 5e10, {2e10, 1e-6}, {2e10, 1e-6});
  par::Workload one;
  one.batch = 1;
  const par::Plan dp2 = par::evaluate(model, cl, one, 1, 1, 2);
  ASSERT_TRUE(dp2.feasible) << dp2.reason;
  // A second replica has no sequence to work on: the rate is one replica's, 1 / step.
  EXPECT_NEAR(dp2.tokens_per_second * dp2.time_per_token, 1.0, 1e-9);
  const auto result = par::partition(model, cl, one);
  EXPECT_NE(result.best.dp, 2u) << result.best.shape();
  par::Workload two = one;
  two.batch = 2;
  EXPECT_NEAR(par::evaluate(model, cl, two, 1, 1, 2).tokens_per_second, 2.0 * dp2.tokens_per_second,
              1e-9 * dp2.tokens_per_second);
}

TEST(Partitioner, PureDataParallelWinsWhenTheModelFitsAndLinksAreSlow) {
  ds::ModelConfig c;
  c.hidden = 256;
  c.layers = 4;
  const auto model = par::costs_from_config(c, 4.0, 256);
  par::Workload w;
  w.batch = 16;
  const auto result = par::partition(model, cluster_of(2, 2, 8e9, 5e10, {2e9, 5e-6}, {2e9, 5e-6}), w);
  EXPECT_EQ(result.best.shape(), "tp=1 pp=1 dp=2");
  EXPECT_GE(result.candidates.size(), 3u);
}

TEST(Partitioner, RefusesWhenNothingFitsAndSaysWhy) {
  ds::ModelConfig c;
  c.hidden = 1024;
  c.layers = 8;
  const auto model = par::costs_from_config(c, 4.0, 256);
  try {
    par::partition(model, cluster_of(2, 2, 1e6, 1e10, {}, {}), {});
    FAIL();
  } catch (const ds::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no plan fits in memory"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("needs"), std::string::npos) << e.what();
  }
}

TEST(Partitioner, DecodingIsBoundByReadingTheWeightsWhenDevicesGiveTheirBandwidth) {
  // One sequence decoding through 4 layers of hidden 1024 in FP32: 2 FLOPs per weight per
  // token, 4 bytes per weight. At 1e11 FLOP/s and 2e10 B/s the weights take 10x longer to
  // read than to multiply.
  ds::ModelConfig c;
  c.hidden = 1024;
  c.layers = 4;
  c.gate = ds::GatePosition::None;
  const auto model = par::costs_from_config(c, 4.0, 256);
  par::Workload w;
  w.batch = 1;
  w.prompt_len = 200;
  w.decode_len = 100;
  auto cl = cluster_of(2, 2, 8e9, 1e11, {1e12, 0}, {1e12, 0});
  const par::Plan compute_only = par::evaluate(model, cl, w, 1, 1, 2);
  ASSERT_TRUE(compute_only.feasible) << compute_only.reason;
  EXPECT_EQ(compute_only.bound, "compute");
  for (auto& d : cl.devices) d.memory_bandwidth = 2e10;
  double params = 0, kv = 0;
  for (const auto& l : model.layers) {
    params += l.param_bytes;
    kv += l.kv_bytes_per_token;
  }
  const double read_ctx = 200 + 100 / 2.0;  // the cache grows from the prompt to prompt + decode
  const double want = (params + kv * read_ctx) / 2e10;
  const par::Plan one = par::evaluate(model, cl, w, 1, 1, 2);
  EXPECT_NEAR(one.time_per_token, want, 1e-9 * want);
  EXPECT_EQ(one.bound, "memory-bandwidth");
  EXPECT_GT(one.time_per_token, 5 * compute_only.time_per_token);
  // Tensor parallelism splits the weights, and so the reads: half the time, over free links.
  const par::Plan tp2 = par::evaluate(model, cl, w, 2, 1, 1);
  EXPECT_NEAR(tp2.time_per_token, want / 2, 0.01 * want);
  // A slow device's bandwidth sets its stage's pace.
  cl.devices[1].memory_bandwidth = 1e10;
  EXPECT_NEAR(par::evaluate(model, cl, w, 2, 1, 1).time_per_token, want, 0.01 * want);
  // Cores of one CPU share its memory: with a node limit of 3e10, two devices reading at
  // once get 1.5e10 each, while the two stages of a one-sequence pipeline take turns and
  // each reads at its own 2e10.
  cl.devices[1].memory_bandwidth = 2e10;
  cl.node_memory_bandwidth = 3e10;
  EXPECT_NEAR(par::evaluate(model, cl, w, 2, 1, 1).time_per_token, want / 2 * 2e10 / 1.5e10, 0.01 * want);
  EXPECT_NEAR(par::evaluate(model, cl, w, 1, 2, 1).time_per_token, want, 0.01 * want);
  par::Workload full = w;
  full.batch = 2;
  full.micro_batches = 2;  // both stages busy: they share the node
  const par::Plan pp_full = par::evaluate(model, cl, full, 1, 2, 1);
  EXPECT_GT(pp_full.time_per_token, 1.3 * par::evaluate(model, cl, w, 1, 2, 1).time_per_token);
}

TEST(Partitioner, DevicesFileReadsMemoryBandwidthAndRejectsABadOne) {
  const auto j = nlohmann::json::parse(R"({"devices": [{"memory_bytes": 4e9, "flops": 8e10, "memory_bandwidth": 1.6e10,
      "count": 2}], "node_memory_bandwidth": 2.5e10, "links": {"intra_node": {"bandwidth": 1e9, "latency": 1e-5}}})");
  const par::Cluster c = par::cluster_from_json(j, "two.json");
  ASSERT_EQ(c.devices.size(), 2u);
  EXPECT_EQ(c.devices[1].memory_bandwidth, 1.6e10);
  EXPECT_EQ(c.node_memory_bandwidth, 2.5e10);
  auto bad = j;
  bad["devices"][0]["memory_bandwidth"] = -1;
  try {
    par::cluster_from_json(bad, "two.json");
    FAIL();
  } catch (const ds::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("two.json: devices[0].memory_bandwidth"), std::string::npos) << e.what();
  }
}

// The design document's deployment: a 100B-parameter model on 16 A100-80GB (8 per node,
// 600 GB/s NVLink within a node, 200 Gb/s between nodes). GPT-3-like shape: 80 layers,
// hidden 10240, FFN 40960, 80 heads, FP16 weights; 150 TFLOP/s sustained per GPU.
TEST(Partitioner, HundredBillionParametersOnSixteenA100s) {
  ds::ModelConfig c;
  c.vocab = 50257;
  c.hidden = 10240;
  c.ffn = 40960;
  c.layers = 80;
  c.heads = 80;
  c.gate = ds::GatePosition::None;
  const auto model = par::costs_from_config(c, 2.0, 1024);
  double params = 0;
  for (const auto& l : model.layers) params += l.param_bytes / 2.0;
  EXPECT_NEAR(params / 1e9, 100.7, 0.5);
  const auto cl = cluster_of(16, 8, 80e9, 150e12, {600e9, 5e-6}, {25e9, 1e-5});
  par::Workload w;
  w.batch = 64;
  w.prompt_len = 512;
  w.decode_len = 512;
  w.micro_batches = 8;
  const auto result = par::partition(model, cl, w);
  const par::Plan& best = result.best;
  // Pure data parallelism cannot hold 200 GB of weights on an 80 GB device.
  const par::Plan dp = par::evaluate(model, cl, w, 1, 1, 16);
  EXPECT_FALSE(dp.feasible);
  EXPECT_TRUE(best.feasible);
  EXPECT_LE(best.tp, 8u) << "tensor parallelism should stay within a node: " << best.shape();
  EXPECT_LE(best.max_memory_bytes, 80e9);
  // What data parallelism would do if memory did not matter, for the comparison table.
  auto roomy = cl;
  for (auto& d : roomy.devices) d.memory_bytes = 1e15;
  const par::Plan dp_unbounded = par::evaluate(model, roomy, w, 1, 1, 16);
  std::printf("100B on 16 A100: best %s, %.0f tokens/s, %.1f ms/token, %.1f GB/rank, bound: %s\n",
              best.shape().c_str(), best.tokens_per_second, best.time_per_token * 1e3, best.max_memory_bytes / 1e9,
              best.bound.c_str());
  std::printf("  pure DP: infeasible (%s); with unbounded memory it would give %.0f tokens/s\n", dp.reason.c_str(),
              dp_unbounded.tokens_per_second);
  for (const auto& p : result.candidates) {
    if (p.feasible) {
      std::printf("  candidate %s: %.0f tokens/s, %.1f ms/token, %.1f GB/rank, %s\n", p.shape().c_str(),
                  p.tokens_per_second, p.time_per_token * 1e3, p.max_memory_bytes / 1e9, p.bound.c_str());
    }
  }
}

}  // namespace
