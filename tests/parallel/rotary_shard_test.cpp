// SPDX-License-Identifier: Apache-2.0
// Sharded models with rotary positions match one device; classifier models are refused.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "dynasparse/parallel/executor.hpp"
#include "dynasparse/parallel/partitioner.hpp"
#include "dynasparse/parallel/shard.hpp"
#include "parallel/random_model.hpp"

namespace {

namespace ds = dynasparse;
namespace par = dynasparse::parallel;
using dynasparse_test::relative_error;

// The executor tests' FP32 budget (executor_test.cpp): tp partial sums of out_proj and
// FFN-down reorder float sums in each of 4 layers; 1e-5 of the logits' scale.
using dynasparse_test::kFp32Rel;

// random_model.hpp's file for `cfg`, without the learned position table (a rotary model has
// none) and, for a classifier, with classifier.weight and .bias instead of an LM head.
std::vector<std::uint8_t> rotary_model(const ds::ModelConfig& cfg) {
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  ds::io::SafetensorsWriter w;
  for (const auto& name : f.names()) {
    if (name == "pos_embed.weight") continue;
    const auto& info = f.info(name);
    const auto b = f.bytes(name);
    w.add(name, info.dtype, info.shape, b.data, b.size);
  }
  if (cfg.num_classes) {
    const auto cw = dynasparse_test::uniform_floats(cfg.num_classes * cfg.hidden, -0.2f, 0.2f, 99u);
    const auto cb = dynasparse_test::uniform_floats(cfg.num_classes, -0.1f, 0.1f, 98u);
    w.add<float>("classifier.weight", {cfg.num_classes, cfg.hidden}, cw.data());
    w.add<float>("classifier.bias", {cfg.num_classes}, cb.data());
  }
  w.set_metadata("dynasparse.config", ds::to_json(cfg).dump());
  return w.to_bytes();
}

ds::ModelConfig rotary_config(bool causal) {
  ds::ModelConfig c = dynasparse_test::small_config(ds::GatePosition::Head, ds::HeadGate::Elementwise, causal);
  c.positions = ds::PositionKind::Rotary;
  c.rope_base = 1000.0f;
  return c;
}

TEST(ShardRotary, EveryPlanMatchesOneDevice) {
  for (bool causal : {true, false}) {
    const ds::ModelConfig cfg = rotary_config(causal);
    const auto bytes = rotary_model(cfg);
    const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "rotary");
    const auto tokens = dynasparse_test::test_tokens(19, cfg.vocab);
    const ds::Model m = ds::Model::from_file(f);
    std::vector<float> ref(tokens.size() * m.vocab());
    ds::Workspace ws;
    m.forward(tokens.data(), tokens.size(), ds::MatrixView(ref.data(), tokens.size(), m.vocab()), ws);
    struct RotaryShape {
      std::size_t tp, pp, micro;
    };
    // Head subsets (tp 2, 4), stages, and micro-batches (cached chunks continue the
    // positions of the chunks before them).
    for (const RotaryShape s : {RotaryShape{2, 1, 1}, RotaryShape{4, 1, 1}, RotaryShape{2, 2, 1},
                                RotaryShape{1, 2, 4}, RotaryShape{2, 2, 3}}) {
      if (!causal && s.micro > 1) continue;
      par::RunOptions ro;
      ro.exec.micro_batches = s.micro;
      ro.timeout = std::chrono::seconds(20);
      const auto got = par::run_forward(f, par::fixed_plan(cfg, s.tp, s.pp), tokens, ro);
      ASSERT_EQ(got.size(), ref.size());
      EXPECT_LE(relative_error(got, ref), kFp32Rel)
          << "causal " << causal << " tp " << s.tp << " pp " << s.pp << " micro " << s.micro;
    }
  }
}

TEST(ShardRotary, ShardBytesCountNoPositionTable) {
  const ds::ModelConfig cfg = rotary_config(true);
  const auto bytes = rotary_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "rotary");
  const par::Plan plan = par::fixed_plan(cfg, 1, 1);
  const par::ModelShard shard = par::ModelShard::load(f, plan, 0);
  // One shard holding everything weighs what the one-device model weighs.
  EXPECT_EQ(shard.bytes(), ds::Model::from_file(f).bytes());
}

TEST(ShardRotary, ClassifierModelsAreRefusedNamingTheFile) {
  ds::ModelConfig cfg = rotary_config(false);
  cfg.num_classes = 3;
  const auto bytes = rotary_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "classifier.safetensors");
  EXPECT_NO_THROW(ds::Model::from_file(f));  // one device runs it
  try {
    par::ModelShard::load(f, par::fixed_plan(cfg, 2, 1), 0);
    FAIL() << "no throw";
  } catch (const ds::UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("classifier head in a sharded model"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("classifier.safetensors"), std::string::npos) << e.what();
  }
}

}  // namespace
