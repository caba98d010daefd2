// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/model/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "model/model_data.hpp"
#include <gtest/gtest.h>

#include "dynasparse/model/tokenizer.hpp"

namespace {

namespace ds = dynasparse;
using dynasparse_test::l2_relative_error;
using dynasparse_test::model_data;

// Golden logits of examples/python/model.py for this file's tokens, within 1e-4 relative to
// the logits' scale (the contract; float sums over E = 32 and two blocks).
void expect_matches_golden(const std::string& file) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  const ds::io::SafetensorsFile f(model_data(file));
  const ds::Model model = ds::Model::from_file(f, opt);
  const auto tokens = f.load<std::int32_t>("golden.tokens");
  const auto golden = f.load<float>("golden.logits");
  const std::size_t n = tokens.size(), v = model.vocab();
  ASSERT_EQ(golden.rows(), n);
  std::vector<float> logits(n * v);
  ds::Workspace ws;
  model.forward(tokens.data(), n, ds::MatrixView(logits.data(), n, v), ws);
  float scale = 0.0f;
  for (std::size_t i = 0; i < n * v; ++i) scale = std::max(scale, std::fabs(golden.data()[i]));
  for (std::size_t i = 0; i < n * v; ++i) {
    ASSERT_NEAR(logits[i], golden.data()[i], 1e-4f * scale) << file << " at " << i / v << "," << i % v;
  }
  if (model.config().causal) {
    // Cached decoding, one token at a time after a prefill of 4, gives the same logits.
    ds::Session s = model.new_session();
    std::vector<float> step(4 * v);
    model.decode(tokens.data(), 4, s, ds::MatrixView(step.data(), 4, v));
    for (std::size_t i = 0; i < 4 * v; ++i) ASSERT_NEAR(step[i], golden.data()[i], 1e-4f * scale);
    for (std::size_t t = 4; t < n; ++t) {
      model.decode(tokens.data() + t, 1, s, ds::MatrixView(step.data(), 1, v));
      for (std::size_t j = 0; j < v; ++j) ASSERT_NEAR(step[j], golden.data()[t * v + j], 1e-4f * scale) << "step " << t;
    }
    EXPECT_EQ(s.position(), n);
  }
}

TEST(Model, HeadGatedDecoderMatchesPyTorchGoldens) { expect_matches_golden("tiny_head_gate.safetensors"); }

TEST(Model, OutputGatedEncoderMatchesPyTorchGoldens) { expect_matches_golden("tiny_output_gate.safetensors"); }

// Decoding through INT8 KV caches (a scale per token and head, and compact scales) stays
// close to the golden logits. K and V move by at most 1/254 (I8) or sqrt(2)/254 (I8Compact)
// of their largest values; this random tiny model turns that into 0.8% (I8) and 1.1%
// (I8Compact) of the logits' scale at worst, and the tolerance is three times the larger: a
// scale or code applied to the wrong key or head is off by far more. Both must also differ
// from decoding through a float cache by more than float rounding (the INT8 path ran).
TEST(Model, Int8KVCachesDecodeCloseToTheGoldens) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  const ds::io::SafetensorsFile f(model_data("tiny_head_gate.safetensors"));
  const ds::Model model = ds::Model::from_file(f, opt);
  const auto tokens = f.load<std::int32_t>("golden.tokens");
  const auto golden = f.load<float>("golden.logits");
  const std::size_t n = tokens.size(), v = model.vocab();
  float scale = 0.0f;
  for (std::size_t i = 0; i < n * v; ++i) scale = std::max(scale, std::fabs(golden.data()[i]));
  // Bytes per token over all layers: 8 per float, 2 per int8 value plus the scales.
  const std::size_t layers = model.config().layers, e = model.config().hidden,
                    h = model.config().heads != 0 ? model.config().heads : e / 8;
  EXPECT_EQ(model.new_session(4).kv_bytes_per_token(), layers * 8 * e);
  EXPECT_EQ(model.new_session(4, ds::nn::KVDType::I8).kv_bytes_per_token(),
            layers * (2 * e + 8 * h));
  EXPECT_EQ(model.new_session(4, ds::nn::KVDType::I8Compact).kv_bytes_per_token(),
            layers * (2 * e + 8 + h));
  const auto decode_all = [&](ds::nn::KVDType kv) {
    ds::Session s = model.new_session(0, kv);
    std::vector<float> logits(n * v);
    model.decode(tokens.data(), 4, s, ds::MatrixView(logits.data(), 4, v));
    for (std::size_t t = 4; t < n; ++t)
      model.decode(tokens.data() + t, 1, s, ds::MatrixView(logits.data() + t * v, 1, v));
    return logits;
  };
  const auto f32 = decode_all(ds::nn::KVDType::F32);
  for (auto kv : {ds::nn::KVDType::I8, ds::nn::KVDType::I8Compact}) {
    const auto logits = decode_all(kv);
    float moved = 0.0f;
    for (std::size_t i = 0; i < n * v; ++i) {
      ASSERT_LE(std::fabs(logits[i] - golden.data()[i]), 0.033f * scale)
          << static_cast<int>(kv) << " at " << i / v << "," << i % v;
      moved = std::max(moved, std::fabs(logits[i] - f32[i]));
    }
    EXPECT_GT(moved, 1e-4f * scale) << static_cast<int>(kv);
  }
}

TEST(Model, GenerationIsDeterministicForASeed) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  const ds::Model model = ds::Model::load(model_data("tiny_head_gate.safetensors"), opt);
  ds::GenerateOptions g;
  g.max_new_tokens = 6;
  g.sampling.temperature = 0.8f;
  g.sampling.top_k = 20;
  g.sampling.seed = 5;
  ds::Session a = model.new_session(), b = model.new_session();
  const auto prompt = ds::ByteTokenizer::encode("hello");
  const auto ra = model.generate(prompt, g, a);
  const auto rb = model.generate(prompt, g, b);
  EXPECT_EQ(ra.tokens, rb.tokens);
  EXPECT_EQ(ra.tokens.size(), 6u);
  // Greedy generation equals the argmax of the full forward pass, token by token.
  g.sampling.temperature = 0.0f;
  ds::Session c = model.new_session();
  const auto greedy = model.generate(prompt, g, c);
  std::vector<std::int32_t> seq = prompt;
  ds::Workspace ws;
  for (std::int32_t tok : greedy.tokens) {
    std::vector<float> logits(seq.size() * model.vocab());
    model.forward(seq.data(), seq.size(), ds::MatrixView(logits.data(), seq.size(), model.vocab()), ws);
    const float* last = logits.data() + (seq.size() - 1) * model.vocab();
    EXPECT_EQ(tok, std::max_element(last, last + model.vocab()) - last);
    seq.push_back(tok);
  }
  // Stop tokens and the callback end generation early.
  g.stop_tokens = {greedy.tokens[3]};
  const auto first = static_cast<std::size_t>(
      std::find(greedy.tokens.begin(), greedy.tokens.end(), greedy.tokens[3]) - greedy.tokens.begin());
  ds::Session d = model.new_session();
  EXPECT_EQ(model.generate(prompt, g, d).tokens.size(), first + 1);
  g.stop_tokens.clear();
  g.on_token = [n = 0](std::int32_t) mutable { return ++n < 2; };
  ds::Session e = model.new_session();
  EXPECT_EQ(model.generate(prompt, g, e).tokens.size(), 2u);
}

TEST(Model, QuantizedAndSparseFormatsStayCloseToFloat) {
  // Convert every FFN linear to INT8 through the config, loading the same weights.
  const ds::io::SafetensorsFile f(model_data("tiny_head_gate.safetensors"));
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  const ds::Model fp = ds::Model::from_file(f, opt);
  auto cfg = fp.config();
  for (std::size_t l = 0; l < cfg.layers; ++l) {
    cfg.formats["layers." + std::to_string(l) + ".ffn.up"] = "dense_i8";
    cfg.formats["layers." + std::to_string(l) + ".ffn.down"] = "gsparse_f32";
    cfg.formats["layers." + std::to_string(l) + ".attn.attention.q_proj"] = "dense_i8";
  }
  // Rewrite the file with the new config (same tensors).
  ds::io::SafetensorsWriter w;
  for (const auto& name : f.names()) {
    const auto& info = f.info(name);
    const auto bytes = f.bytes(name);
    w.add(name, info.dtype, info.shape, bytes.data, bytes.size);
  }
  w.set_metadata("dynasparse.config", ds::to_json(cfg).dump());
  const auto blob = w.to_bytes();
  const ds::io::SafetensorsFile g = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "converted");
  const ds::Model q = ds::Model::from_file(g, opt);
  std::size_t i8 = 0;
  for (const auto& [name, fmt] : q.layer_formats()) i8 += fmt == "dense_i8";
  EXPECT_EQ(i8, 2 * cfg.layers);
  const auto tokens = f.load<std::int32_t>("golden.tokens");
  const std::size_t n = tokens.size(), v = fp.vocab();
  std::vector<float> a(n * v), b(n * v);
  ds::Workspace ws;
  fp.forward(tokens.data(), n, ds::MatrixView(a.data(), n, v), ws);
  q.forward(tokens.data(), n, ds::MatrixView(b.data(), n, v), ws);
  double num = 0, den = 0;
  for (std::size_t i = 0; i < n * v; ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += a[i] * a[i];
  }
  // INT8 weights and activations: a few percent of relative error at most on random weights.
  EXPECT_LT(std::sqrt(num / den), 0.05);
  EXPECT_GT(std::sqrt(num / den), 0.0);
}

TEST(Model, HostileFilesAreRejectedNamingFileAndTensor) {
  const ds::io::SafetensorsFile f(model_data("tiny_head_gate.safetensors"));
  auto rewrite = [&](auto edit) {
    ds::io::SafetensorsWriter w;
    std::string config = f.metadata().at("dynasparse.config");
    for (const auto& name : f.names()) {
      const auto& info = f.info(name);
      const auto bytes = f.bytes(name);
      if (edit(name, info, bytes, w, config)) continue;
      w.add(name, info.dtype, info.shape, bytes.data, bytes.size);
    }
    w.set_metadata("dynasparse.config", config);
    return w.to_bytes();
  };
  auto load_error = [&](const std::vector<std::uint8_t>& blob, bool allow_extra = true) -> std::string {
    try {
      const auto file = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "bad.safetensors");
      ds::LoadOptions opt;
      opt.allow_extra_tensors = allow_extra;
      ds::Model::from_file(file, opt);
    } catch (const ds::Error& e) {
      return e.what();
    }
    return "";
  };
  // A missing tensor.
  auto missing = rewrite([](const std::string& n, auto&, auto&, auto&, auto&) { return n == "layers.1.ffn.up.weight"; });
  EXPECT_NE(load_error(missing).find("layers.1.ffn.up.weight"), std::string::npos) << load_error(missing);
  // A tensor of the wrong shape.
  auto wrong = rewrite([](const std::string& n, const auto& info, const auto& bytes, auto& w, auto&) {
    if (n != "norm_f.weight") return false;
    w.add(n, info.dtype, {info.shape[0] / 2, 2}, bytes.data, bytes.size);
    return true;
  });
  EXPECT_NE(load_error(wrong).find("norm_f.weight"), std::string::npos) << load_error(wrong);
  // An extra tensor when extras are not allowed.
  EXPECT_NE(load_error(rewrite([](auto&, auto&, auto&, auto&, auto&) { return false; }), false)
                .find("tensor not used by the model"),
            std::string::npos);
  // A config inconsistent with the tensors.
  auto inconsistent = rewrite([](auto&, auto&, auto&, auto&, std::string& c) {
    auto j = nlohmann::json::parse(c);
    j["hidden"] = 40;
    c = j.dump();
    return false;
  });
  const std::string err = load_error(inconsistent);
  EXPECT_NE(err.find("bad.safetensors"), std::string::npos) << err;
  EXPECT_NE(err.find("embed.weight"), std::string::npos) << err;
  // A NaN weight is refused at load, naming the tensor.
  auto nan_weight = rewrite([](const std::string& n, const auto& info, const auto& bytes, auto& w, auto&) {
    if (n != "layers.0.ffn.up.weight") return false;
    std::vector<float> v(bytes.size / 4);
    std::memcpy(v.data(), bytes.data, bytes.size);
    v[5] = std::nanf("");
    static std::vector<float> keep;
    keep = v;
    w.add(n, info.dtype, info.shape, keep.data(), keep.size() * 4);
    return true;
  });
  EXPECT_NE(load_error(nan_weight).find("non-finite weight"), std::string::npos) << load_error(nan_weight);
  EXPECT_NE(load_error(nan_weight).find("layers.0.ffn.up.weight element 5"), std::string::npos);
  // ... also when the layer is converted at load, which would otherwise meet it first and
  // name only the layer.
  try {
    const auto file = ds::io::SafetensorsFile::from_bytes(nan_weight.data(), nan_weight.size(),
                                                          "bad.safetensors");
    ds::LoadOptions int8;
    int8.allow_extra_tensors = true;
    int8.int8 = true;
    ds::Model::from_file(file, int8);
    ADD_FAILURE() << "a NaN weight loaded as INT8";
  } catch (const ds::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.safetensors: layers.0.ffn.up.weight element 5"),
              std::string::npos)
        << e.what();
  }
  // A format in the file's config for a layer the model does not have (a misspelt name
  // would otherwise leave the layer it meant dense).
  auto misspelt = rewrite([](auto&, auto&, auto&, auto&, std::string& c) {
    auto j = nlohmann::json::parse(c);
    j["formats"]["layers.0.ffn.upp"] = "gsparse_f32";
    c = j.dump();
    return false;
  });
  EXPECT_NE(load_error(misspelt).find("format for a layer the model does not have"),
            std::string::npos)
      << load_error(misspelt);
  EXPECT_NE(load_error(misspelt).find("layers.0.ffn.upp"), std::string::npos)
      << load_error(misspelt);
  // Text from the file is escaped: an error stays on one line.
  auto newline_key = rewrite([](auto&, auto&, auto&, auto&, std::string& c) {
    auto j = nlohmann::json::parse(c);
    j["a\nb"] = 1;
    c = j.dump();
    return false;
  });
  const std::string key_err = load_error(newline_key);
  EXPECT_NE(key_err.find("unknown config key"), std::string::npos) << key_err;
  EXPECT_EQ(key_err.find('\n'), std::string::npos) << key_err;
  // Token ids outside the vocabulary.
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  const ds::Model m = ds::Model::from_file(f, opt);
  std::vector<float> logits(2 * m.vocab());
  ds::Workspace ws;
  const std::int32_t bad[] = {1, 300};
  EXPECT_THROW(m.forward(bad, 2, ds::MatrixView(logits.data(), 2, m.vocab()), ws), ds::ConfigError);
  // A sequence beyond the session.
  ds::Session s = m.new_session(3);
  const std::int32_t four[] = {1, 2, 3, 4};
  std::vector<float> l4(4 * m.vocab());
  EXPECT_THROW(m.decode(four, 4, s, ds::MatrixView(l4.data(), 4, m.vocab())), ds::ShapeError);
}

TEST(Model, ASessionOfALongerModelCannotRunPastThisModelsPositions) {
  // Two models alike but for max_seq_len: the longer one's session has room this model's
  // position table does not.
  const ds::io::SafetensorsFile f(model_data("tiny_head_gate.safetensors"));
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  const ds::Model m = ds::Model::from_file(f, opt);
  const std::size_t len = m.config().max_seq_len;
  ds::io::SafetensorsWriter w;
  auto j = nlohmann::json::parse(f.metadata().at("dynasparse.config"));
  j["max_seq_len"] = 2 * len;
  for (const auto& name : f.names()) {
    const auto& info = f.info(name);
    const auto bytes = f.bytes(name);
    if (name == "pos_embed.weight") {
      std::vector<float> v(2 * bytes.size / 4, 0.0f);
      std::memcpy(v.data(), bytes.data, bytes.size);
      static std::vector<float> keep;
      keep = v;
      w.add(name, info.dtype, {2 * len, info.shape[1]}, keep.data(), keep.size() * 4);
    } else {
      w.add(name, info.dtype, info.shape, bytes.data, bytes.size);
    }
  }
  w.set_metadata("dynasparse.config", j.dump());
  const auto blob = w.to_bytes();
  const auto longer_file =
      ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "longer.safetensors");
  const ds::Model longer = ds::Model::from_file(longer_file, opt);
  ds::Session s = longer.new_session();
  std::vector<std::int32_t> tokens(len + 1, 7);
  std::vector<float> logits((len + 1) * m.vocab());
  EXPECT_THROW(
      m.decode(tokens.data(), len + 1, s, ds::MatrixView(logits.data(), len + 1, m.vocab())),
      ds::ShapeError);
  m.decode(tokens.data(), len, s, ds::MatrixView(logits.data(), len, m.vocab()));
  EXPECT_THROW(m.decode(tokens.data(), 1, s, ds::MatrixView(logits.data(), 1, m.vocab())),
               ds::ShapeError);
  // generate() refuses a prompt that does not fit before it allocates anything.
  ds::Session s2 = longer.new_session();
  ds::GenerateOptions g;
  g.max_new_tokens = 1;
  EXPECT_THROW(m.generate(tokens, g, s2), ds::ShapeError);
}

TEST(Model, SkipThresholdOutsideZeroToOneIsRefusedAndLeavesTheModelUnchanged) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  ds::Model m = ds::Model::load(model_data("tiny_head_gate.safetensors"), opt);
  const float tau = m.config().skip_threshold;
  EXPECT_THROW(m.set_skip_threshold(2.0f), ds::ConfigError);
  EXPECT_THROW(m.set_skip_threshold(-1.0f), ds::ConfigError);
  EXPECT_THROW(m.set_skip_threshold(std::nanf("")), ds::ConfigError);
  EXPECT_EQ(m.config().skip_threshold, tau);
  m.set_skip_threshold(0.25f);
  EXPECT_EQ(m.config().skip_threshold, 0.25f);
}

TEST(Model, CheckedModeFlagsNonFiniteActivations) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  ds::Model m = ds::Model::load(model_data("tiny_head_gate.safetensors"), opt);
  const std::int32_t tokens[] = {1, 2, 3};
  std::vector<float> logits(3 * m.vocab());
  ds::Workspace ws;
  m.set_checked(true);
  EXPECT_NO_THROW(m.forward(tokens, 3, ds::MatrixView(logits.data(), 3, m.vocab()), ws));
  EXPECT_TRUE(m.checked());
  // Finite but absurd weights (3e38 norm gains) overflow inside layer 0.
  const ds::io::SafetensorsFile f(model_data("tiny_head_gate.safetensors"));
  ds::io::SafetensorsWriter w;
  std::vector<float> huge(m.config().hidden, 3e38f);
  for (const auto& name : f.names()) {
    const auto& info = f.info(name);
    const auto bytes = f.bytes(name);
    if (name == "layers.0.norm2.weight") {
      w.add(name, info.dtype, info.shape, huge.data(), huge.size() * 4);
    } else {
      w.add(name, info.dtype, info.shape, bytes.data, bytes.size);
    }
  }
  w.set_metadata("dynasparse.config", f.metadata().at("dynasparse.config"));
  const auto blob = w.to_bytes();
  ds::Model bad = ds::Model::from_file(ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "huge"), opt);
  bad.forward(tokens, 3, ds::MatrixView(logits.data(), 3, m.vocab()), ws);  // unchecked: runs through
  bad.set_checked(true);
  try {
    bad.forward(tokens, 3, ds::MatrixView(logits.data(), 3, m.vocab()), ws);
    FAIL() << "checked mode let a non-finite activation through";
  } catch (const ds::Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite activation"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layers.0 output"), std::string::npos) << e.what();
  }
}

TEST(Model, ManyThreadsShareOneModelWithTheirOwnSessions) {
  ds::set_num_threads(1);
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  const ds::Model m = ds::Model::load(model_data("tiny_head_gate.safetensors"), opt);
  ds::GenerateOptions g;
  g.max_new_tokens = 6;
  g.sampling.temperature = 0.7f;
  std::vector<std::vector<std::int32_t>> serial;
  for (int t = 0; t < 8; ++t) {
    g.sampling.seed = static_cast<std::uint64_t>(t);
    ds::Session s = m.new_session();
    serial.push_back(m.generate(ds::ByteTokenizer::encode("abc"), g, s).tokens);
  }
  std::vector<int> bad(8, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < 8; ++t) {
    pool.emplace_back([&, t] {
      ds::GenerateOptions local = g;
      local.sampling.seed = static_cast<std::uint64_t>(t);
      for (int rep = 0; rep < 5; ++rep) {
        ds::Session s = m.new_session();
        if (m.generate(ds::ByteTokenizer::encode("abc"), local, s).tokens != serial[static_cast<std::size_t>(t)]) {
          ++bad[static_cast<std::size_t>(t)];
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  ds::set_num_threads(0);
  for (int b : bad) EXPECT_EQ(b, 0);
}

}  // namespace

// Logits of `m` for the golden tokens of tiny_head_gate.
std::vector<float> golden_logits(const ds::Model& m, const ds::io::SafetensorsFile& f) {
  const auto tokens = f.load<std::int32_t>("golden.tokens");
  std::vector<float> out(tokens.size() * m.vocab());
  ds::Workspace ws;
  m.forward(tokens.data(), tokens.size(), ds::MatrixView(out.data(), tokens.size(), m.vocab()), ws);
  return out;
}

TEST(Model, Int8HeadComputesEveryKindOfHeadInInt8) {
  // Tied to the embedding, lm_head.weight, and a classifier with its bias.
  for (const char* file : {"tiny_head_gate.safetensors", "tiny_output_gate.safetensors",
                           "tiny_rotary_classifier.safetensors"}) {
    SCOPED_TRACE(file);
    const ds::io::SafetensorsFile f(model_data(file));
    ds::LoadOptions opt;
    opt.allow_extra_tensors = true;
    const ds::Model fp = ds::Model::from_file(f, opt);
    ds::LoadOptions i8 = opt;
    i8.int8_head = true;
    const ds::Model q = ds::Model::from_file(f, i8);
    // An INT8 copy of the [out_dim, hidden] table beside the float one: a byte per weight,
    // rows padded to the kernel's panels (64 at most) and k to groups of 4, a 4-byte shift
    // compensation per padded row and three floats per row (scale, alpha, bias). Past a
    // panel of rows that is fewer bytes than the float table's four per weight.
    const std::size_t table = q.out_dim() * q.config().hidden;
    const std::size_t rows = (q.out_dim() + 63) / 64 * 64, kp = (q.config().hidden + 3) / 4 * 4;
    EXPECT_GE(q.bytes(), fp.bytes() + table);
    EXPECT_LE(q.bytes(), fp.bytes() + rows * (kp + 4) + 12 * q.out_dim());
    if (q.out_dim() >= 64) {
      EXPECT_LT(q.bytes(), fp.bytes() + 4 * table);
    }
    for (const auto& [name, fmt] : q.layer_formats()) EXPECT_EQ(fmt, "dense_f32") << name;

    const auto tokens = f.load<std::int32_t>("golden.tokens");
    const std::size_t n = tokens.size(), v = q.out_dim();
    auto logits = [&](const ds::Model& m) {
      std::vector<float> out(n * v);
      ds::Workspace ws;
      m.forward(tokens.data(), n, ds::MatrixView(out.data(), n, v), ws);
      return out;
    };
    const auto ref = logits(fp), got = logits(q);
    // W8A8 rounding of one product: per-row max-abs steps on both operands put about 0.6%
    // of a logit's spread in each (max / (127 sqrt 12) against max / 2.5), 0.8-0.9% in all
    // measured; under the whole INT8 model's 5% (below), and not zero: the INT8 head ran.
    const double err = l2_relative_error(ref, got);
    EXPECT_LT(err, 0.02);
    EXPECT_GT(err, 1e-4);
    // save() records the INT8 head in the config: the file loads back with it, without the
    // option, to the same logits bit for bit.
    const std::string path = ::testing::TempDir() + "dynasparse_int8_head.safetensors";
    q.save(path);
    EXPECT_EQ(q.config().head_format, "dense_i8");
    const ds::Model back = ds::Model::load(path);
    std::remove(path.c_str());
    EXPECT_EQ(back.config().head_format, "dense_i8");
    EXPECT_EQ(back.bytes(), q.bytes());
    EXPECT_EQ(logits(back), got);
    if (!q.config().causal) continue;
    // Cached decoding reads the same head: token by token it gives the forward's logits.
    ds::Session s = q.new_session(n);
    std::vector<float> dec(n * v);
    for (std::size_t t = 0; t < n; ++t) {
      q.decode(tokens.data() + t, 1, s, ds::MatrixView(dec.data() + t * v, 1, v));
    }
    EXPECT_LT(l2_relative_error(got, dec), 1e-4);
  }
}

TEST(Model, LoadOptionsChooseFormatsAndPruneWithoutRewritingTheFile) {
  const ds::io::SafetensorsFile f(model_data("tiny_head_gate.safetensors"));
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  const ds::Model fp = ds::Model::from_file(f, opt);
  const auto ref = golden_logits(fp, f);

  ds::LoadOptions i8 = opt;
  i8.int8 = true;
  const ds::Model q = ds::Model::from_file(f, i8);
  for (const auto& [name, fmt] : q.layer_formats()) EXPECT_EQ(fmt, "dense_i8") << name;
  EXPECT_EQ(q.config().formats.size(), q.layer_formats().size());
  EXPECT_LT(q.bytes(), fp.bytes());
  // W8A8 on random weights: within a few percent of float (relative L2 over all logits).
  const double err = l2_relative_error(ref, golden_logits(q, f));
  EXPECT_LT(err, 0.05);
  EXPECT_GT(err, 0.0);

  // One-shot pruning of one layer at load equals pruning the file's weights beforehand.
  ds::LoadOptions sp = opt;
  sp.formats["layers.1.ffn.up"] = "gsparse_f32";
  sp.prune = 0.5;
  const ds::Model pruned = ds::Model::from_file(f, sp);
  ds::io::SafetensorsWriter w;
  auto cfg = fp.config();
  cfg.formats["layers.1.ffn.up"] = "gsparse_f32";
  for (const auto& name : f.names()) {
    const auto& info = f.info(name);
    if (name == "layers.1.ffn.up.weight") {
      const auto t = f.load<float>(name);
      const auto mask = ds::sparse::prune_by_norm(t.view(), {{16, 4}, 0.5, false}, name);
      const auto keep = ds::sparse::to_element_mask(mask);
      std::vector<float> v(t.data(), t.data() + t.size());
      for (std::size_t i = 0; i < v.size(); ++i) v[i] *= keep[i];
      w.add(name, ds::DType::F32, info.shape, v.data(), v.size() * sizeof(float));
      continue;
    }
    const auto bytes = f.bytes(name);
    w.add(name, info.dtype, info.shape, bytes.data, bytes.size);
  }
  w.set_metadata("dynasparse.config", ds::to_json(cfg).dump());
  const auto blob = w.to_bytes();
  const auto g = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "pruned");
  const auto want = golden_logits(ds::Model::from_file(g, opt), g);
  const auto got = golden_logits(pruned, f);
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << i;  // same kernel, same blocks
  EXPECT_GT(l2_relative_error(ref, got), 0.0);
  ds::Model pruned_mut = ds::Model::from_file(f, sp);
  pruned_mut.for_each_linear([](ds::nn::AnyLinear& l) {
    EXPECT_DOUBLE_EQ(l.density(), l.name() == "layers.1.ffn.up" ? 0.5 : 1.0) << l.name();
  });

  ds::LoadOptions typo = opt;
  typo.formats["layers.9.ffn.up"] = "dense_i8";
  EXPECT_THROW(ds::Model::from_file(f, typo), ds::ConfigError);
  typo.formats = {{"layers.0.ffn.up", "int4"}};
  EXPECT_THROW(ds::Model::from_file(f, typo), ds::ConfigError);
  // Resource limits: a context or a file larger than the app allows is refused at load.
  ds::LoadOptions short_ctx = opt;
  short_ctx.max_seq_len = 8;  // the file declares 16
  try {
    ds::Model::from_file(f, short_ctx);
    FAIL() << "no throw";
  } catch (const ds::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("expected <= 8, got 16"), std::string::npos) << e.what();
  }
  ds::LoadOptions few = opt;
  few.limits.max_total_elements = 1000;
  EXPECT_THROW(ds::Model::load(model_data("tiny_head_gate.safetensors"), few), ds::FormatError);
  ds::LoadOptions bad_prune = opt;
  bad_prune.prune = 1.5;
  EXPECT_THROW(ds::Model::from_file(f, bad_prune), ds::ConfigError);
}

TEST(Model, CalibratedStaticInt8UsesTheObservedActivationRange) {
  const ds::io::SafetensorsFile f(model_data("tiny_head_gate.safetensors"));
  ds::LoadOptions opt;
  opt.allow_extra_tensors = true;
  ds::Model fp = ds::Model::from_file(f, opt);
  const auto ref = golden_logits(fp, f);
  std::vector<std::vector<std::int32_t>> samples;
  for (int s = 0; s < 6; ++s) {
    std::vector<std::int32_t> t(5 + 2 * s);
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::int32_t>((s * 53 + i * 31 + 7) % 256);
    samples.push_back(t);
  }
  ds::quant::CalibratorOptions copt;
  copt.min_samples = 1;
  std::size_t progress = 0;
  copt.progress = [&](std::size_t done, std::size_t total) {
    EXPECT_EQ(total, samples.size());
    progress = done;
  };
  const auto alphas = fp.calibrate(samples, copt);
  EXPECT_EQ(progress, samples.size());
  EXPECT_EQ(alphas.size(), fp.layer_formats().size());
  // Independent reference for layer 0's q/k/v: max |LayerNorm(embed + pos)| over all tokens,
  // in double from the file's tensors (max-abs is exact, so within float rounding).
  const auto emb = f.load<float>("embed.weight"), pos = f.load<float>("pos_embed.weight");
  const auto gw = f.load<float>("layers.0.norm1.weight"), gb = f.load<float>("layers.0.norm1.bias");
  const std::size_t e = fp.config().hidden;
  double max_abs = 0;
  for (const auto& t : samples) {
    for (std::size_t i = 0; i < t.size(); ++i) {
      std::vector<double> x(e);
      double mean = 0, var = 0;
      for (std::size_t j = 0; j < e; ++j) mean += x[j] = emb.data()[t[i] * e + j] + pos.data()[i * e + j];
      mean /= e;
      for (double v : x) var += (v - mean) * (v - mean);
      var /= e;
      for (std::size_t j = 0; j < e; ++j) {
        const double y = (x[j] - mean) / std::sqrt(var + fp.config().norm_eps) * gw.data()[j] + gb.data()[j];
        max_abs = std::max(max_abs, std::fabs(y));
      }
    }
  }
  for (const char* p : {"q_proj", "k_proj", "v_proj"}) {
    EXPECT_NEAR(alphas.at(std::string("layers.0.attn.attention.") + p), max_abs, 1e-5 * max_abs) << p;
  }
  // Calibration leaves the model as it was: no taps, same logits, same alphas again.
  EXPECT_EQ(golden_logits(fp, f), ref);
  EXPECT_EQ(fp.calibrate(samples, copt), alphas);

  ds::LoadOptions i8 = opt;
  i8.int8 = true;
  ds::Model q = ds::Model::from_file(f, i8);
  const auto dynamic = golden_logits(q, f);
  q.set_activation_alphas(alphas);
  std::size_t set = 0;
  q.for_each_linear([&](ds::nn::AnyLinear& l) {
    EXPECT_EQ(l.activation_alpha(), alphas.at(l.name())) << l.name();
    set += l.activation_alpha() > 0;
  });
  EXPECT_EQ(set, alphas.size());
  const auto fixed = golden_logits(q, f);
  EXPECT_NE(fixed, dynamic);
  EXPECT_LT(l2_relative_error(ref, fixed), 0.05);
  // A float layer has nothing to calibrate (skipped); an unknown name is an error.
  EXPECT_NO_THROW(fp.set_activation_alphas(alphas));
  EXPECT_THROW(q.set_activation_alphas({{"layers.7.ffn.up", 1.0f}}), ds::ConfigError);
  EXPECT_THROW(q.set_activation_alphas({{"layers.0.ffn.up", -1.0f}}), ds::ConfigError);
}

TEST(Model, FilesCarryCalibratedAlphasForInt8Loads) {
  const ds::io::SafetensorsFile f(model_data("tiny_head_gate.safetensors"));
  auto with_alpha = [&](std::vector<std::size_t> shape, std::vector<float> alpha) {
    ds::io::SafetensorsWriter w;
    for (const auto& name : f.names()) {
      const auto& info = f.info(name);
      const auto bytes = f.bytes(name);
      w.add(name, info.dtype, info.shape, bytes.data, bytes.size);
    }
    w.add("layers.0.ffn.up.input_alpha", ds::DType::F32, shape, alpha.data(), alpha.size() * sizeof(float));
    w.set_metadata("dynasparse.config", f.metadata().at("dynasparse.config"));
    return w.to_bytes();
  };
  const auto blob = with_alpha({1}, {2.5f});
  const auto g = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "calibrated");
  ds::LoadOptions opt;
  opt.allow_extra_tensors = false;  // the alpha counts as used even by a float load
  EXPECT_THROW(ds::Model::from_file(g, opt), ds::FormatError);  // golden.* tensors are extra
  opt.allow_extra_tensors = true;
  ds::Model fp = ds::Model::from_file(g, opt);
  opt.int8 = true;
  ds::Model q = ds::Model::from_file(g, opt);
  q.for_each_linear([](ds::nn::AnyLinear& l) {
    EXPECT_EQ(l.activation_alpha(), l.name() == "layers.0.ffn.up" ? 2.5f : 0.0f) << l.name();
  });
  fp.for_each_linear([](ds::nn::AnyLinear& l) { EXPECT_EQ(l.activation_alpha(), 0.0f) << l.name(); });
  const auto neg = with_alpha({1}, {-1.0f});
  const auto gn = ds::io::SafetensorsFile::from_bytes(neg.data(), neg.size(), "negative");
  try {
    ds::Model::from_file(gn, opt);
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("layers.0.ffn.up.input_alpha"), std::string::npos) << e.what();
  }
  const auto two = with_alpha({2}, {1.0f, 2.0f});
  const auto gt = ds::io::SafetensorsFile::from_bytes(two.data(), two.size(), "two");
  EXPECT_THROW(ds::Model::from_file(gt, opt), ds::ShapeError);
}
