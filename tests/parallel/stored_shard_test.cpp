// SPDX-License-Identifier: Apache-2.0
// Shards of a converted file (Model::save: INT8 values, block-CSR, calibrated alphas) hold
// the file's weights: every plan matches one device loading the same file.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
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

// The executor tests' FP32 budget: partial sums over ranks reorder float additions.
using dynasparse_test::kFp32Rel;

std::vector<float> one_device(const ds::Model& m, const std::vector<std::int32_t>& tokens) {
  std::vector<float> out(tokens.size() * m.vocab());
  ds::Workspace ws;
  m.forward(tokens.data(), tokens.size(), ds::MatrixView(out.data(), tokens.size(), m.vocab()), ws);
  return out;
}

std::vector<float> sharded(const ds::io::SafetensorsFile& f, const ds::ModelConfig& cfg, std::size_t tp,
                           std::size_t pp, const std::vector<std::int32_t>& tokens) {
  par::ThreadGroup group(tp * pp, std::chrono::seconds(20));
  const auto plan = par::fixed_plan(cfg, tp, pp);
  std::vector<float> got;
  group.run([&](par::Communicator& c) {
    const par::ModelShard shard = par::ModelShard::load(f, plan, c.rank());
    par::Executor ex(shard, c);
    ds::Workspace ws;
    std::vector<float> logits(tokens.size() * cfg.vocab);
    par::ExecutorOptions eo;
    eo.logits_on_every_rank = true;
    ex.forward(tokens.data(), tokens.size(), ds::MatrixView(logits.data(), tokens.size(), cfg.vocab), ws, eo);
    if (c.rank() == 0) got = logits;
  });
  return got;
}

TEST(ShardStored, ConvertedFilesShardToTheirOwnWeights) {
  const ds::ModelConfig cfg = dynasparse_test::small_config();
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto src = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const auto tokens = dynasparse_test::test_tokens(19, cfg.vocab);
  const auto fp32 = one_device(ds::Model::from_file(src), tokens);
  const std::string path = ::testing::TempDir() + "dynasparse_stored_shard.safetensors";

  struct Variant {
    const char* name;
    ds::LoadOptions opt;
    bool calibrate;
  };
  std::vector<Variant> variants;
  ds::LoadOptions i8;
  i8.int8 = true;
  variants.push_back({"int8 + static alphas", i8, true});
  ds::LoadOptions sp;
  ds::LoadOptions spi8;
  for (std::size_t l = 0; l < cfg.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* n : {"attn.attention.q_proj", "attn.attention.out_proj", "ffn.up", "ffn.down"}) {
      sp.formats[p + n] = "gsparse_f32";
      spi8.formats[p + n] = "gsparse_i8";
    }
  }
  sp.prune = spi8.prune = 0.5;
  variants.push_back({"gsparse_f32", sp, false});
  spi8.int8 = true;
  variants.push_back({"gsparse_i8 + int8 + static alphas", spi8, true});

  for (const Variant& v : variants) {
    ds::Model m = ds::Model::from_file(src, v.opt);
    if (v.calibrate) m.set_activation_alphas(ds::Model::from_file(src).calibrate({tokens}));
    m.save(path);
    const ds::io::SafetensorsFile f(path);
    ASSERT_FALSE(f.contains("layers.0.attn.attention.in_proj_weight")) << v.name;  // q is converted
    const auto ref = one_device(ds::Model::from_file(f), tokens);
    EXPECT_GT(relative_error(ref, fp32), 1e-4) << v.name;  // the conversion really happened
    for (const auto& [tp, pp] : {std::pair<std::size_t, std::size_t>{2, 1}, {4, 1}, {2, 2}}) {
      EXPECT_LE(relative_error(sharded(f, cfg, tp, pp, tokens), ref), kFp32Rel) << v.name << " tp " << tp << " pp " << pp;
    }
  }
  std::remove(path.c_str());
}

}  // namespace
