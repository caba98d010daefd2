// SPDX-License-Identifier: Apache-2.0
// Models with rotary positions and with a classifier head, against examples/python/model.py.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model_data.hpp"
#include <gtest/gtest.h>

#include "dynasparse/model/model.hpp"

namespace {

namespace ds = dynasparse;
using dynasparse_test::l2_relative_error;
using dynasparse_test::model_data;

// The golden tests' budget (model_test.cpp): 1e-4 relative to the largest golden value,
// float sums over E = 32 in other orders through two blocks.
constexpr float kGoldenRel = 1e-4f;

ds::Model load(const ds::io::SafetensorsFile& f) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;  // golden.* tensors
  return ds::Model::from_file(f, opt);
}

float max_abs(const float* p, std::size_t n) {
  float m = 0.0f;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(p[i]));
  return m;
}

std::vector<float> forward(const ds::Model& m, const std::int32_t* tokens, std::size_t n) {
  std::vector<float> out(n * m.out_dim());
  ds::Workspace ws;
  m.forward(tokens, n, ds::MatrixView(out.data(), n, m.out_dim()), ws);
  return out;
}

// A copy of `f` in memory: `edit(name)` returns true to drop a tensor; `config` may rewrite
// the config JSON; `add` may add tensors.
std::vector<std::uint8_t> rewrite(const ds::io::SafetensorsFile& f, const std::function<bool(const std::string&)>& drop,
                                  const std::function<void(nlohmann::json&)>& config = {},
                                  const std::function<void(ds::io::SafetensorsWriter&)>& add = {}) {
  ds::io::SafetensorsWriter w;
  for (const auto& name : f.names()) {
    if (drop(name)) continue;
    const auto& info = f.info(name);
    const auto bytes = f.bytes(name);
    w.add(name, info.dtype, info.shape, bytes.data, bytes.size);
  }
  if (add) add(w);
  auto j = nlohmann::json::parse(f.metadata().at("dynasparse.config"));
  if (config) config(j);
  w.set_metadata("dynasparse.config", j.dump());
  return w.to_bytes();
}

std::string load_error(const std::vector<std::uint8_t>& blob, bool allow_extra) {
  try {
    const auto file = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "edited.safetensors");
    ds::LoadOptions opt;
    opt.allow_extra_tensors = allow_extra;
    ds::Model::from_file(file, opt);
  } catch (const ds::Error& e) {
    return e.what();
  }
  return "";
}

bool is_golden(const std::string& name) { return name.rfind("golden.", 0) == 0; }

TEST(ModelRotary, DecoderMatchesPyTorchGoldensAndCachedDecoding) {
  const ds::io::SafetensorsFile f(model_data("tiny_rotary.safetensors"));
  const ds::Model m = load(f);
  EXPECT_EQ(m.config().positions, ds::PositionKind::Rotary);
  EXPECT_FALSE(f.contains("pos_embed.weight"));
  const auto tokens = f.load<std::int32_t>("golden.tokens");
  const auto golden = f.load<float>("golden.logits");
  const std::size_t n = tokens.size(), v = m.out_dim();
  ASSERT_EQ(v, m.vocab());
  ASSERT_EQ(golden.size(), n * v);
  const float tol = kGoldenRel * max_abs(golden.data(), golden.size());
  const auto full = forward(m, tokens.data(), n);
  for (std::size_t i = 0; i < n * v; ++i) ASSERT_NEAR(full[i], golden.data()[i], tol) << i / v << "," << i % v;

  // Cached decoding: a prefill of 3 tokens, then one at a time. Each new token's q and k are
  // rotated to its position in the session, so this equals the full causal forward (1e-5
  // of the scale: the same arithmetic, projections of fewer rows at a time).
  const float scale = max_abs(full.data(), full.size());
  ds::Session s = m.new_session();
  std::vector<float> step(3 * v);
  m.decode(tokens.data(), 3, s, ds::MatrixView(step.data(), 3, v));
  for (std::size_t i = 0; i < 3 * v; ++i) ASSERT_NEAR(step[i], full[i], 1e-5f * scale) << i;
  for (std::size_t t = 3; t < n; ++t) {
    m.decode(tokens.data() + t, 1, s, ds::MatrixView(step.data(), 1, v));
    for (std::size_t j = 0; j < v; ++j) ASSERT_NEAR(step[j], full[t * v + j], 1e-5f * scale) << "token " << t;
  }
  EXPECT_EQ(s.position(), n);

  // Generation runs on a rotary model (greedy equals the argmax of the full forward).
  ds::GenerateOptions g;
  g.max_new_tokens = 3;
  g.sampling.temperature = 0.0f;
  ds::Session s2 = m.new_session();
  const std::vector<std::int32_t> prompt(tokens.data(), tokens.data() + 4);
  const auto r = m.generate(prompt, g, s2);
  ASSERT_EQ(r.tokens.size(), 3u);
  std::vector<std::int32_t> seq = prompt;
  for (std::int32_t tok : r.tokens) {
    const auto l = forward(m, seq.data(), seq.size());
    const float* last = l.data() + (seq.size() - 1) * v;
    EXPECT_EQ(tok, std::max_element(last, last + v) - last);
    seq.push_back(tok);
  }
}

TEST(ModelRotary, RopeBaseFromTheConfigIsTheOneUsed) {
  // The classifier file uses rope_base 500; loaded with the default 10000 instead it no
  // longer matches its goldens, so the config's base reaches every layer.
  const ds::io::SafetensorsFile f(model_data("tiny_rotary_classifier.safetensors"));
  ASSERT_EQ(load(f).config().rope_base, 500.0f);
  const auto blob = rewrite(f, [](const std::string&) { return false; }, [](nlohmann::json& j) { j.erase("rope_base"); });
  const auto g = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "default_base");
  const ds::Model m = load(g);
  EXPECT_EQ(m.config().rope_base, 10000.0f);
  const auto tokens = f.load<std::int32_t>("golden.tokens");
  const auto golden = f.load<float>("golden.logits");
  const auto got = forward(m, tokens.data(), tokens.size());
  float diff = 0.0f;
  for (std::size_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::fabs(got[i] - golden.data()[i]));
  EXPECT_GT(diff, 10 * kGoldenRel * max_abs(golden.data(), golden.size()));
}

TEST(ModelClassifier, EncoderMatchesPyTorchGoldensAndPoolsByTheMean) {
  const ds::io::SafetensorsFile f(model_data("tiny_rotary_classifier.safetensors"));
  const ds::Model m = load(f);
  ASSERT_FALSE(m.config().causal);
  EXPECT_EQ(m.out_dim(), 5u);
  EXPECT_EQ(m.vocab(), 256u);
  const auto tokens = f.load<std::int32_t>("golden.tokens");
  const auto golden = f.load<float>("golden.logits");
  const std::size_t n = tokens.size(), c = m.out_dim();
  ASSERT_EQ(golden.size(), n * c);
  const float tol = kGoldenRel * max_abs(golden.data(), golden.size());
  const auto got = forward(m, tokens.data(), n);
  for (std::size_t i = 0; i < n * c; ++i) ASSERT_NEAR(got[i], golden.data()[i], tol) << i / c << "," << i % c;

  // classify(): the mean over tokens (model.py's Model.classify), same budget.
  const auto pooled = f.load<float>("golden.class_logits");
  ASSERT_EQ(pooled.size(), c);
  std::vector<float> cls(c);
  ds::Workspace ws;
  m.classify(tokens.data(), n, cls.data(), ws);
  for (std::size_t j = 0; j < c; ++j) EXPECT_NEAR(cls[j], pooled.data()[j], tol) << j;

  // Logits as wide as the vocabulary are a shape error on a classifier.
  std::vector<float> wide(n * m.vocab());
  EXPECT_THROW(m.forward(tokens.data(), n, ds::MatrixView(wide.data(), n, m.vocab()), ws), ds::ShapeError);
  EXPECT_THROW(m.classify(tokens.data(), 0, cls.data(), ws), ds::ShapeError);
}

TEST(ModelClassifier, CausalClassifierPoolsTheLastToken) {
  // The same weights as a causal model: classify() is the last token's class logits, and
  // cached decoding writes class logits too.
  const ds::io::SafetensorsFile f(model_data("tiny_rotary_classifier.safetensors"));
  const auto blob = rewrite(f, [](const std::string&) { return false; }, [](nlohmann::json& j) { j["causal"] = true; });
  const auto g = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "causal_classifier");
  const ds::Model m = load(g);
  const auto tokens = f.load<std::int32_t>("golden.tokens");
  const std::size_t n = tokens.size(), c = m.out_dim();
  const auto full = forward(m, tokens.data(), n);
  std::vector<float> cls(c);
  ds::Workspace ws;
  m.classify(tokens.data(), n, cls.data(), ws);
  for (std::size_t j = 0; j < c; ++j) EXPECT_EQ(cls[j], full[(n - 1) * c + j]) << j;  // a copy of that row
  // Not the mean: the pooling differs from the encoder's.
  double mean0 = 0.0;
  for (std::size_t i = 0; i < n; ++i) mean0 += full[i * c] / static_cast<double>(n);
  EXPECT_GT(std::fabs(mean0 - cls[0]), 1e-3);
  ds::Session s = m.new_session();
  std::vector<float> dec(n * c);
  m.decode(tokens.data(), n, s, ds::MatrixView(dec.data(), n, c));
  const float scale = max_abs(full.data(), full.size());
  for (std::size_t i = 0; i < n * c; ++i) EXPECT_NEAR(dec[i], full[i], 1e-5f * scale) << i;
}

TEST(ModelClassifier, ErrorsNameTheTensorAndTheCause) {
  const ds::io::SafetensorsFile f(model_data("tiny_rotary_classifier.safetensors"));
  // A classifier without its bias.
  const std::string no_bias = load_error(rewrite(f, [](const std::string& n) { return n == "classifier.bias"; }), true);
  EXPECT_NE(no_bias.find("missing tensor"), std::string::npos) << no_bias;
  EXPECT_NE(no_bias.find("classifier.bias"), std::string::npos) << no_bias;
  EXPECT_NE(no_bias.find("edited.safetensors"), std::string::npos) << no_bias;
  {
    const auto blob = rewrite(f, [](const std::string& n) { return n == "classifier.bias"; });
    const auto g = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "no_bias");
    EXPECT_THROW(load(g), ds::FormatError);
  }
  // A rotary model with a learned position table: the table is an unused tensor.
  std::vector<float> table(16 * 32, 0.0f);
  const std::string extra_pos = load_error(
      rewrite(f, is_golden, {},
              [&](ds::io::SafetensorsWriter& w) {
                w.add("pos_embed.weight", ds::DType::F32, {16, 32}, table.data(), table.size() * sizeof(float));
              }),
      false);
  EXPECT_NE(extra_pos.find("tensor not used by the model"), std::string::npos) << extra_pos;
  EXPECT_NE(extra_pos.find("pos_embed.weight"), std::string::npos) << extra_pos;
  // Without golden.* and pos_embed, the file has exactly the model's tensors.
  EXPECT_EQ(load_error(rewrite(f, is_golden), false), "");
  // Rotary with an odd head dimension (32 heads of 1).
  const std::string odd =
      load_error(rewrite(f, [](const std::string&) { return false; }, [](nlohmann::json& j) { j["heads"] = 32; }), true);
  EXPECT_NE(odd.find("rotary positions need an even head dimension; expected even, got 1 [positions]"), std::string::npos)
      << odd;
  {
    const auto blob = rewrite(f, [](const std::string&) { return false; }, [](nlohmann::json& j) { j["heads"] = 32; });
    const auto g = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "odd");
    EXPECT_THROW(load(g), ds::ConfigError);
  }
  // Generation needs an LM head.
  const ds::Model m = load(f);
  ds::Session s = m.new_session();
  ds::GenerateOptions opt;
  opt.max_new_tokens = 2;
  try {
    m.generate({1, 2, 3}, opt, s);
    FAIL() << "no throw";
  } catch (const ds::UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("this model is a classifier"), std::string::npos) << e.what();
  }
  // classify() needs a classifier head.
  const ds::Model lm = load(ds::io::SafetensorsFile(model_data("tiny_rotary.safetensors")));
  std::vector<float> out(lm.vocab());
  ds::Workspace ws;
  const std::int32_t t[] = {1, 2};
  EXPECT_THROW(lm.classify(t, 2, out.data(), ws), ds::UnsupportedError);
}

}  // namespace
