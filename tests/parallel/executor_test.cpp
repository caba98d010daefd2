// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/parallel/executor.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "dynasparse/parallel/partitioner.hpp"
#include "parallel/random_model.hpp"

namespace {

namespace ds = dynasparse;
namespace par = dynasparse::parallel;
using dynasparse_test::relative_error;

// FP32 budget, relative to the logits' scale: tensor parallelism sums out_proj and FFN-down
// as tp partial products (a reordered float sum of 64 or 128 terms, a few ulp each) in each
// of 4 layers, and LayerNorm can amplify a difference by up to 1 / std of its input; 1e-5
// is ~100 ulp of the logits, the contract.
using dynasparse_test::kFp32Rel;

struct Shape {
  std::size_t tp, pp, micro;
};
// Every plan of the issue: TP 1/2/4, PP 1/2/4 and hybrid 2x2, with and without micro-batches.
const std::vector<Shape> kShapes = {{1, 1, 1}, {2, 1, 1}, {4, 1, 1}, {1, 2, 1}, {1, 4, 1},
                                    {2, 2, 1}, {1, 2, 4}, {1, 4, 4}, {2, 2, 4}, {4, 1, 3}};

std::vector<float> one_device(const ds::io::SafetensorsFile& f, const std::vector<std::int32_t>& tokens,
                              const ds::LoadOptions& opt = {}, const std::map<std::string, float>& alphas = {}) {
  ds::Model m = ds::Model::from_file(f, opt);
  if (!alphas.empty()) m.set_activation_alphas(alphas);
  std::vector<float> logits(tokens.size() * m.vocab());
  ds::Workspace ws;
  m.forward(tokens.data(), tokens.size(), ds::MatrixView(logits.data(), tokens.size(), m.vocab()), ws);
  return logits;
}

std::vector<float> parallel(const ds::io::SafetensorsFile& f, const std::vector<std::int32_t>& tokens, const Shape& s,
                            const ds::LoadOptions& opt = {}) {
  const ds::ModelConfig cfg = ds::config_from_json(f.metadata().at("dynasparse.config"));
  par::RunOptions ro;
  ro.exec.micro_batches = s.micro;
  ro.load = opt;
  ro.timeout = std::chrono::seconds(20);
  return par::run_forward(f, par::fixed_plan(cfg, s.tp, s.pp), tokens, ro);
}

std::string name(const Shape& s) {
  return "tp=" + std::to_string(s.tp) + " pp=" + std::to_string(s.pp) + " micro=" + std::to_string(s.micro);
}

void expect_every_plan_matches(const ds::ModelConfig& cfg) {
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const auto tokens = dynasparse_test::test_tokens(19, cfg.vocab);
  const auto ref = one_device(f, tokens);
  for (const Shape& s : kShapes) {
    if (!cfg.causal && s.micro > 1) continue;
    const auto got = parallel(f, tokens, s);
    ASSERT_EQ(got.size(), ref.size()) << name(s);
    EXPECT_LE(relative_error(got, ref), kFp32Rel) << name(s);
  }
}

TEST(Executor, EveryPlanMatchesOneDeviceWithHeadwiseHeadGates) {
  expect_every_plan_matches(dynasparse_test::small_config(ds::GatePosition::Head, ds::HeadGate::Headwise));
}

TEST(Executor, EveryPlanMatchesOneDeviceWithElementwiseHeadGates) {
  expect_every_plan_matches(dynasparse_test::small_config(ds::GatePosition::Head, ds::HeadGate::Elementwise));
}

TEST(Executor, EveryPlanMatchesOneDeviceWithTheSeedsOutputGate) {
  expect_every_plan_matches(dynasparse_test::small_config(ds::GatePosition::Output));
}

TEST(Executor, EveryPlanMatchesOneDeviceForABidirectionalUngatedEncoder) {
  auto cfg = dynasparse_test::small_config(ds::GatePosition::None, ds::HeadGate::Headwise, /*causal=*/false);
  cfg.tied_lm_head = false;
  cfg.norm = ds::NormKind::RMSNorm;
  expect_every_plan_matches(cfg);
}

TEST(Executor, PipelineStagesWithoutTensorParallelismAreBitExact) {
  const auto cfg = dynasparse_test::small_config();
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const auto tokens = dynasparse_test::test_tokens(19, cfg.vocab);
  const auto ref = one_device(f, tokens);
  // Stages only move activations between ranks: the same arithmetic in the same order.
  EXPECT_EQ(parallel(f, tokens, {1, 2, 1}), ref);
  EXPECT_EQ(parallel(f, tokens, {1, 4, 1}), ref);
}

TEST(Executor, MicroBatchBoundsAreWholeRowTilesLargerFirst) {
  // 512 rows in 8: 42 tiles of 12 rows and 8 left over; two chunks of 6 tiles, then the
  // leftover with 5 tiles, then 5 tiles each.
  EXPECT_EQ(par::detail::micro_batch_bounds(512, 8),
            (std::vector<std::size_t>{0, 72, 144, 212, 272, 332, 392, 452, 512}));
  // Too short for 2 tiles a chunk: an even split.
  EXPECT_EQ(par::detail::micro_batch_bounds(19, 4), (std::vector<std::size_t>{0, 4, 9, 14, 19}));
  EXPECT_EQ(par::detail::micro_batch_bounds(95, 4), (std::vector<std::size_t>{0, 23, 47, 71, 95}));
  EXPECT_EQ(par::detail::micro_batch_bounds(96, 4), (std::vector<std::size_t>{0, 24, 48, 72, 96}));
  const std::size_t g = par::detail::micro_batch_granule;
  for (std::size_t n = 1; n <= 700; n += 7) {
    for (std::size_t m = 1; m <= std::min<std::size_t>(n, 16); ++m) {
      const auto b = par::detail::micro_batch_bounds(n, m);
      ASSERT_EQ(b.size(), m + 1);
      ASSERT_EQ(b.front(), 0u);
      ASSERT_EQ(b.back(), n);
      std::size_t odd = 0;
      for (std::size_t c = 0; c < m; ++c) {
        const std::size_t rows = b[c + 1] - b[c];
        ASSERT_GE(rows, 1u) << "n=" << n << " m=" << m << " chunk " << c;
        if (n / g < 2 * m) continue;
        odd += rows % g != 0;
        if (c > 0) {
          EXPECT_LE(rows, b[c] - b[c - 1]) << "n=" << n << " m=" << m << " chunk " << c;
        }
        EXPECT_LE(rows, b[m] - b[m - 1] + g) << "n=" << n << " m=" << m << " chunk " << c;
      }
      EXPECT_LE(odd, 1u) << "n=" << n << " m=" << m;
    }
  }
}

TEST(Executor, MicroBatchesCutAtRowTilesMatchOneDevice) {
  // 110 tokens in 2 chunks of 60 and 50 rows (the row-tile cut), through 2 stages, alone and
  // with tensor parallelism.
  auto cfg = dynasparse_test::small_config();
  cfg.max_seq_len = 128;
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const auto tokens = dynasparse_test::test_tokens(110, cfg.vocab);
  ASSERT_EQ(par::detail::micro_batch_bounds(110, 2), (std::vector<std::size_t>{0, 60, 110}));
  const auto ref = one_device(f, tokens);
  for (const Shape& s : {Shape{1, 2, 2}, Shape{2, 2, 2}}) {
    EXPECT_LE(relative_error(parallel(f, tokens, s), ref), kFp32Rel) << name(s);
  }
}

TEST(Executor, BackToBackPromptsOverlapOnTheStagesAndEachMatchesOneDevice) {
  // Each rank runs three prompts of different lengths back to back with no barrier: the
  // first stage starts the next prompt while the last one finishes this one. Messages of
  // consecutive calls reuse the same tags and must still pair up in order.
  auto cfg = dynasparse_test::small_config();
  cfg.max_seq_len = 64;
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const std::vector<std::vector<std::int32_t>> prompts = {dynasparse_test::test_tokens(30, cfg.vocab),
                                                          dynasparse_test::test_tokens(7, cfg.vocab),
                                                          dynasparse_test::test_tokens(41, cfg.vocab)};
  for (const Shape& s : {Shape{1, 2, 2}, Shape{2, 2, 3}, Shape{1, 4, 1}}) {
    const par::Plan plan = par::fixed_plan(cfg, s.tp, s.pp);
    std::vector<std::vector<float>> got(prompts.size());
    par::ThreadGroup group(plan.world(), std::chrono::seconds(20));
    group.run([&](par::Communicator& comm) {
      const par::ModelShard shard = par::ModelShard::load(f, plan, comm.rank());
      par::Executor ex(shard, comm);
      ds::Workspace ws;
      par::ExecutorOptions opt;
      opt.micro_batches = s.micro;
      const bool report = comm.rank() == (plan.pp - 1) * plan.tp;
      std::vector<float> own;
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        const std::size_t n = prompts[i].size();
        std::vector<float>& out = report ? got[i] : own;
        ds::MatrixView view;
        if (ex.writes_logits(opt)) {
          out.assign(n * cfg.vocab, 0.0f);
          view = ds::MatrixView(out.data(), n, cfg.vocab);
        }
        ex.forward(prompts[i].data(), n, view, ws, opt);
      }
    });
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_LE(relative_error(got[i], one_device(f, prompts[i])), kFp32Rel) << name(s) << " prompt " << i;
    }
  }
}

TEST(Executor, HeadGateSkippingMatchesOneDevice) {
  auto cfg = dynasparse_test::small_config();
  cfg.skip_threshold = 0.6f;  // gate biases in [0, 0.5]: a good share of pairs is skipped
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const auto tokens = dynasparse_test::test_tokens(19, cfg.vocab);
  const auto ref = one_device(f, tokens);
  for (const Shape& s : {Shape{2, 1, 1}, Shape{4, 1, 1}, Shape{2, 2, 4}}) {
    EXPECT_LE(relative_error(parallel(f, tokens, s), ref), kFp32Rel) << name(s);
  }
}

// Formats: the test model loaded in each weight format on one device and under each plan.
class ExecutorFormats : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = dynasparse_test::small_config();
    bytes_ = dynasparse_test::write_model(cfg_);
    file_ = ds::io::SafetensorsFile::from_bytes(bytes_.data(), bytes_.size(), "random");
    tokens_ = dynasparse_test::test_tokens(19, cfg_.vocab);
    fp32_ = one_device(file_, tokens_);
  }
  ds::LoadOptions every_layer(const std::string& format, double prune) const {
    ds::LoadOptions o;
    o.prune = prune;
    for (std::size_t l = 0; l < cfg_.layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      for (const char* n : {"attn.attention.q_proj", "attn.attention.k_proj", "attn.attention.v_proj",
                            "attn.attention.out_proj", "attn.gate.0", "ffn.up", "ffn.down"}) {
        o.formats[p + n] = format;
      }
    }
    return o;
  }
  ds::ModelConfig cfg_;
  std::vector<std::uint8_t> bytes_;
  ds::io::SafetensorsFile file_;
  std::vector<std::int32_t> tokens_;
  std::vector<float> fp32_;
};

TEST_F(ExecutorFormats, GroupSparseFloatMatchesOneDevice) {
  // Pruned to half its 16x4 blocks on the whole matrix, then sliced: the shards hold exactly
  // the one-device blocks, so the float budget applies.
  const auto opt = every_layer("gsparse_f32", 0.5);
  const auto ref = one_device(file_, tokens_, opt);
  EXPECT_GT(relative_error(ref, fp32_), 1e-2);  // the pruning really happened
  for (const Shape& s : kShapes) EXPECT_LE(relative_error(parallel(file_, tokens_, s, opt), ref), kFp32Rel) << name(s);
}

// INT8 with dynamic activations: column-split layers quantize exactly as one device, but a
// row-split layer (out_proj, FFN-down) quantizes its input slice with the slice's own max
// |x| where one device uses the whole row's. Both are W8A8 roundings of the same FP32
// model, of the same size but at other places, so the budget is stated against FP32: the
// tensor-parallel INT8 model's error must stay within twice the one-device INT8 error (the
// max over all logits of rounding noise; 1.0-1.4x measured here). Without tensor
// parallelism nothing is sliced and the float budget applies.
void expect_int8_within_its_own_error(const ds::io::SafetensorsFile& f, const std::vector<std::int32_t>& tokens,
                                      const ds::LoadOptions& opt, const std::vector<float>& fp32) {
  const auto ref = one_device(f, tokens, opt);
  const double quant_error = relative_error(ref, fp32);
  ASSERT_GT(quant_error, 1e-4);  // the layers really are INT8
  for (const Shape& s : kShapes) {
    const auto got = parallel(f, tokens, s, opt);
    if (s.tp == 1) {
      EXPECT_LE(relative_error(got, ref), kFp32Rel) << name(s);
    } else {
      EXPECT_LE(relative_error(got, fp32), 2.0 * quant_error) << name(s);
    }
  }
}

TEST_F(ExecutorFormats, DenseInt8StaysWithinItsQuantizationError) {
  ds::LoadOptions opt;
  opt.int8 = true;
  expect_int8_within_its_own_error(file_, tokens_, opt, fp32_);
}

TEST_F(ExecutorFormats, Int8HeadStaysWithinItsQuantizationError) {
  // The last stage's head quantizes its input rows as one device's does; under tensor
  // parallelism those rows come from a float sum over ranks in another order.
  ds::LoadOptions opt;
  opt.int8_head = true;
  expect_int8_within_its_own_error(file_, tokens_, opt, fp32_);
}

TEST_F(ExecutorFormats, GroupSparseInt8StaysWithinItsQuantizationError) {
  expect_int8_within_its_own_error(file_, tokens_, every_layer("gsparse_i8", 0.25), fp32_);
}

TEST_F(ExecutorFormats, StaticInt8AlphasMakeRowSplitsMatchOneDevice) {
  // With calibrated (static) activation alphas every slice quantizes as the whole row does:
  // the INT8 sums are exact, only the float sum over ranks is reordered.
  ds::Model fp = ds::Model::from_file(file_);
  const auto alphas = fp.calibrate({tokens_});
  ds::LoadOptions opt;
  opt.int8 = true;
  const auto ref = one_device(file_, tokens_, opt, alphas);
  for (const Shape& s : {Shape{2, 1, 1}, Shape{4, 1, 1}, Shape{2, 2, 4}}) {
    par::ThreadGroup group(s.tp * s.pp);
    const auto plan = par::fixed_plan(cfg_, s.tp, s.pp);
    std::vector<float> got;
    group.run([&](par::Communicator& c) {
      par::ModelShard shard = par::ModelShard::load(file_, plan, c.rank(), opt);
      shard.set_activation_alphas(alphas);
      par::Executor ex(shard, c);
      ds::Workspace ws;
      std::vector<float> logits(tokens_.size() * cfg_.vocab);
      par::ExecutorOptions eo;
      eo.micro_batches = s.micro;
      eo.logits_on_every_rank = true;
      ex.forward(tokens_.data(), tokens_.size(), ds::MatrixView(logits.data(), tokens_.size(), cfg_.vocab), ws, eo);
      if (c.rank() == 0) got = logits;  // rank 0 is on the first stage: the broadcast reached it
    });
    EXPECT_LE(relative_error(got, ref), kFp32Rel) << name(s);
  }
}

// One device's logits for `tokens`: a prefill of 5, then one token at a time, through a
// session of 16 tokens with `kv` caches.
std::vector<float> decode_on_one_device(const ds::Model& m, const std::vector<std::int32_t>& tokens,
                                        ds::nn::KVDType kv) {
  const std::size_t v = m.vocab();
  ds::Session s = m.new_session(16, kv);
  std::vector<float> out(tokens.size() * v);
  m.decode(tokens.data(), 5, s, ds::MatrixView(out.data(), 5, v));
  for (std::size_t t = 5; t < tokens.size(); ++t) {
    m.decode(tokens.data() + t, 1, s, ds::MatrixView(out.data() + t * v, 1, v));
  }
  return out;
}

// The same decoding under a TP=2 x PP=2 plan with `kv` caches: a prefill of 5 (in
// `micro_batches` pipeline micro-batches), then one token at a time; the logits of the last
// stage's rank with tp index 0, which must have reached every token.
std::vector<float> decode_under_plan(const ds::io::SafetensorsFile& f, const ds::ModelConfig& cfg,
                                     const std::vector<std::int32_t>& tokens, ds::nn::KVDType kv,
                                     std::size_t micro_batches) {
  const auto plan = par::fixed_plan(cfg, 2, 2);
  par::ThreadGroup group(4, std::chrono::seconds(20));
  std::vector<float> got(tokens.size() * cfg.vocab);
  group.run([&](par::Communicator& c) {
    const auto shard = par::ModelShard::load(f, plan, c.rank());
    par::Executor ex(shard, c);
    par::ShardSession session = ex.new_session(16, kv);
    ds::Workspace ws;
    par::ExecutorOptions prefill;
    prefill.micro_batches = micro_batches;
    std::vector<float> mine(got.size());
    ex.decode(tokens.data(), 5, session, ds::MatrixView(mine.data(), 5, cfg.vocab), ws, prefill);
    for (std::size_t t = 5; t < tokens.size(); ++t) {
      ex.decode(tokens.data() + t, 1, session, ds::MatrixView(mine.data() + t * cfg.vocab, 1, cfg.vocab), ws);
    }
    EXPECT_EQ(session.position(), tokens.size());
    if (c.rank() == 2) got = mine;  // last stage, tp index 0
  });
  return got;
}

TEST(Executor, CachedDecodingWithShardedCachesMatchesModelDecode) {
  const auto cfg = dynasparse_test::small_config();
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const auto tokens = dynasparse_test::test_tokens(12, cfg.vocab);
  const ds::Model m = ds::Model::from_file(f);
  const auto ref = decode_on_one_device(m, tokens, ds::nn::KVDType::F32);
  const auto got = decode_under_plan(f, cfg, tokens, ds::nn::KVDType::F32, 2);
  EXPECT_LE(relative_error(got, ref), kFp32Rel);
}

// The same plan with INT8 caches. Each shard quantizes the K and V of the heads it holds
// (I8Compact: its token scale is shared by those heads only), and the projections sum in
// another order, so a code may round differently than on one device: the plan's logits
// stay within twice the distance INT8 caching itself puts between one device's INT8 and
// float logits (which must be far above float rounding, or the INT8 path did not run).
TEST(Executor, CachedDecodingWithShardedInt8CachesStaysWithinTheCachesError) {
  const auto cfg = dynasparse_test::small_config();
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  const auto tokens = dynasparse_test::test_tokens(12, cfg.vocab);
  const ds::Model m = ds::Model::from_file(f);
  const auto f32 = decode_on_one_device(m, tokens, ds::nn::KVDType::F32);
  for (auto kv : {ds::nn::KVDType::I8, ds::nn::KVDType::I8Compact}) {
    const auto ref = decode_on_one_device(m, tokens, kv);
    const double int8_error = relative_error(ref, f32);
    ASSERT_GT(int8_error, 100 * kFp32Rel) << static_cast<int>(kv);
    const auto got = decode_under_plan(f, cfg, tokens, kv, 1);
    EXPECT_LE(relative_error(got, ref), 2 * int8_error) << static_cast<int>(kv);
  }
}

// Bad input: each an error naming its cause, on every rank, without a hang.
class ExecutorBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = dynasparse_test::small_config();
    bytes_ = dynasparse_test::write_model(cfg_);
    file_ = ds::io::SafetensorsFile::from_bytes(bytes_.data(), bytes_.size(), "random");
    tokens_ = dynasparse_test::test_tokens(8, cfg_.vocab);
  }
  // The message of the error run() rethrows when `plan` runs on `world` threads.
  std::string error_of(const par::Plan& plan, std::size_t world) {
    par::ThreadGroup group(world, std::chrono::seconds(20));
    try {
      group.run([&](par::Communicator& c) {
        const auto shard = par::ModelShard::load(file_, plan, c.rank());
        par::Executor ex(shard, c);
        ds::Workspace ws;
        std::vector<float> logits(tokens_.size() * cfg_.vocab);
        ex.forward(tokens_.data(), tokens_.size(), ds::MatrixView(logits.data(), tokens_.size(), cfg_.vocab), ws);
      });
    } catch (const ds::Error& e) {
      return e.what();
    }
    return "no error";
  }
  ds::ModelConfig cfg_;
  std::vector<std::uint8_t> bytes_;
  ds::io::SafetensorsFile file_;
  std::vector<std::int32_t> tokens_;
};

TEST_F(ExecutorBadInput, TensorParallelDegreeNotDividingTheHeads) {
  EXPECT_THROW(par::fixed_plan(cfg_, 3, 1), ds::ConfigError);
  par::Plan plan = par::fixed_plan(cfg_, 1, 1);
  plan.tp = 3;  // a hand-made plan: 4 heads over 3 ranks
  plan.ranks.clear();
  EXPECT_EQ(error_of(plan, 3),
            "dynasparse.parallel: tensor-parallel degree does not divide the head count; expected a divisor of 4 "
            "heads, got tp=3 [plan]");
}

TEST_F(ExecutorBadInput, PlanForAnotherWorldSize) {
  const std::string e = error_of(par::fixed_plan(cfg_, 2, 2), 2);
  EXPECT_NE(e.find("plan does not match the world size; expected 4 ranks (tp=2 pp=2 dp=1), got 2 ranks"),
            std::string::npos)
      << e;
}

TEST_F(ExecutorBadInput, PlanForAnotherLayerCount) {
  par::Plan plan = par::fixed_plan(cfg_, 1, 2);
  plan.stage_first_layer = {0, 2, 3};  // a plan made for a 3-layer model
  plan.ranks.clear();
  const std::string e = error_of(plan, 2);
  EXPECT_NE(e.find("plan does not match the model's layer count"), std::string::npos) << e;
  EXPECT_NE(e.find("stage boundaries [0, 2, 3]"), std::string::npos) << e;
  EXPECT_THROW(par::fixed_plan(cfg_, 1, 8), ds::ConfigError);  // more stages than layers
}

TEST_F(ExecutorBadInput, APeerThatNeverArrivesIsATimeoutNotAHang) {
  // Rank 1 of a 2-stage pipeline never runs: rank 0 fails in the executor's split (the first
  // collective) after the timeout, naming the missing rank.
  const auto plan = par::fixed_plan(cfg_, 1, 2);
  par::ThreadGroup group(2, std::chrono::milliseconds(200));
  const auto shard = par::ModelShard::load(file_, plan, 0);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    par::Executor ex(shard, group.communicator(0));
    ADD_FAILURE() << "the executor started without its peer";
  } catch (const par::CommError& e) {
    EXPECT_NE(std::string(e.what()).find("split timed out"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank(s) 1"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST_F(ExecutorBadInput, AStageThatDiesMidRunStopsTheOthers) {
  // Stage 1 fails after the executors are built; stage 0 learns it at its next communication
  // (well before the 20 s timeout), and run() reports stage 1's own error.
  const auto plan = par::fixed_plan(cfg_, 1, 2);
  par::ThreadGroup group(2, std::chrono::seconds(20));
  const auto t0 = std::chrono::steady_clock::now();
  try {
    group.run([&](par::Communicator& c) {
      const auto shard = par::ModelShard::load(file_, plan, c.rank());
      par::Executor ex(shard, c);
      ds::Workspace ws;
      std::vector<float> logits(tokens_.size() * cfg_.vocab);
      if (c.rank() == 1) {
        std::vector<float> wrong(3 * cfg_.vocab);  // logits of the wrong shape: a ShapeError
        ex.forward(tokens_.data(), tokens_.size(), ds::MatrixView(wrong.data(), 3, cfg_.vocab), ws);
      }
      ex.forward(tokens_.data(), tokens_.size(), ds::MatrixView(logits.data(), tokens_.size(), cfg_.vocab), ws);
      c.barrier();
    });
    ADD_FAILURE() << "run() returned";
  } catch (const ds::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("[logits]"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST_F(ExecutorBadInput, ARankFailingMidRunWakesItsPeersOnThreadsTheAppRuns) {
  // A 2 x 2 hybrid on threads the application starts itself (no ThreadGroup::run to abort
  // for it): rank 1 (stage 0, second tensor-parallel half) fails at the start of the second
  // pass. Rank 0 waits for it in a tensor-parallel sum, ranks 2 and 3 for stage 0's hidden
  // states. The executor aborts the communicator, so all three stop with rank 1's error;
  // after the 20 s timeout they would read "timed out" instead.
  const auto plan = par::fixed_plan(cfg_, 2, 2);
  par::ThreadGroup group(4, std::chrono::seconds(20));
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < 4; ++r) {
    threads.emplace_back([&, r] {
      par::Communicator& c = group.communicator(r);
      try {
        const auto shard = par::ModelShard::load(file_, plan, r);
        par::Executor ex(shard, c);
        ds::Workspace ws;
        par::ExecutorOptions opt;
        opt.micro_batches = 2;
        std::vector<float> logits(tokens_.size() * cfg_.vocab);
        const ds::MatrixView all(logits.data(), tokens_.size(), cfg_.vocab);
        ex.forward(tokens_.data(), tokens_.size(), all, ws, opt);
        // Now every rank writes logits, and rank 1's are of the wrong shape: a ShapeError
        // once its peers are on their way.
        const ds::MatrixView wrong(logits.data(), 3, cfg_.vocab);
        opt.logits_on_every_rank = true;
        ex.forward(tokens_.data(), tokens_.size(), r == 1 ? wrong : all, ws, opt);
      } catch (const ds::Error& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_NE(errors[1].find("[logits]"), std::string::npos) << errors[1];
  for (std::size_t r : {0u, 2u, 3u}) {
    EXPECT_NE(errors[r].find("on a broken communicator; expected all ranks healthy, got \"dynasparse.parallel"),
              std::string::npos)
        << "rank " << r << ": " << errors[r];
    EXPECT_NE(errors[r].find("[logits]\" from world rank 1"), std::string::npos) << "rank " << r << ": " << errors[r];
  }
  EXPECT_NE(group.failure().find("[logits]"), std::string::npos) << group.failure();
}

TEST_F(ExecutorBadInput, MicroBatchesOfABidirectionalModel) {
  auto cfg = dynasparse_test::small_config(ds::GatePosition::Head, ds::HeadGate::Headwise, false);
  const auto bytes = dynasparse_test::write_model(cfg);
  const auto f = ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "random");
  par::RunOptions ro;
  ro.exec.micro_batches = 2;
  EXPECT_THROW(par::run_forward(f, par::fixed_plan(cfg, 1, 2), tokens_, ro), ds::UnsupportedError);
  ro.exec.micro_batches = 0;
  EXPECT_THROW(par::run_forward(f, par::fixed_plan(cfg, 1, 2), tokens_, ro), ds::ConfigError);
}

}  // namespace
