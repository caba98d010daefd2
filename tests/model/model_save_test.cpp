// SPDX-License-Identifier: Apache-2.0
// Model::save: converted layers are written as they run (INT8 values, block-CSR) and load
// back to the same model; corrupt parts are refused naming the file and tensor.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/model_data.hpp"
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dynasparse/model/model.hpp"

namespace {

namespace ds = dynasparse;
using dynasparse_test::l2_relative_error;
using dynasparse_test::model_data;

std::string temp_path(const std::string& stem) {
  return ::testing::TempDir() + "dynasparse_save_" + stem + "_" +
         ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".safetensors";
}

std::vector<float> logits_of(const ds::Model& m, const std::vector<std::int32_t>& tokens) {
  std::vector<float> out(tokens.size() * m.out_dim());
  ds::Workspace ws;
  m.forward(tokens.data(), tokens.size(), ds::MatrixView(out.data(), tokens.size(), m.out_dim()), ws);
  return out;
}

std::vector<std::int32_t> golden_tokens(const std::string& file) {
  const ds::io::SafetensorsFile f(model_data(file));
  const auto t = f.load<std::int32_t>("golden.tokens");
  return std::vector<std::int32_t>(t.data(), t.data() + t.size());
}

long file_size(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return -1;
  std::fseek(f, 0, SEEK_END);
  const long n = std::ftell(f);
  std::fclose(f);
  return n;
}

ds::LoadOptions with_extra() {
  ds::LoadOptions o;
  o.allow_extra_tensors = true;  // the golden files carry their inputs and outputs
  return o;
}

// Saves `m`, loads the file back with default options, and checks that every layer keeps its
// format and the logits are bit-identical (same stored values, same kernels).
void expect_round_trip(const ds::Model& m, const std::vector<std::int32_t>& tokens, const std::string& stem) {
  const std::string path = temp_path(stem);
  m.save(path);
  const ds::Model back = ds::Model::load(path);
  EXPECT_EQ(back.layer_formats(), m.layer_formats()) << stem;
  EXPECT_EQ(back.bytes(), m.bytes()) << stem;
  std::map<std::string, float> want, got;
  m.for_each_linear([&](const ds::nn::AnyLinear& l) { want[l.name()] = l.activation_alpha(); });
  back.for_each_linear([&](const ds::nn::AnyLinear& l) { got[l.name()] = l.activation_alpha(); });
  EXPECT_EQ(got, want) << stem;
  const auto a = logits_of(m, tokens), b = logits_of(back, tokens);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i], b[i]) << stem << " logit " << i;
  std::remove(path.c_str());
}

TEST(ModelSave, EveryFormatRoundTripsBitExactly) {
  for (const char* file : {"tiny_head_gate.safetensors", "tiny_output_gate.safetensors", "tiny_rotary.safetensors",
                           "tiny_rotary_classifier.safetensors"}) {
    const auto tokens = golden_tokens(file);
    ds::LoadOptions opt = with_extra();
    expect_round_trip(ds::Model::load(model_data(file), opt), tokens, "fp32");

    ds::LoadOptions i8 = opt;
    i8.int8 = true;
    expect_round_trip(ds::Model::load(model_data(file), i8), tokens, "int8");

    ds::LoadOptions sp = opt;
    for (const char* l : {"layers.0.ffn.up", "layers.1.ffn.down"}) sp.formats[l] = "gsparse_f32";
    sp.formats["layers.0.ffn.down"] = "gsparse_i8";
    sp.prune = 0.5;
    expect_round_trip(ds::Model::load(model_data(file), sp), tokens, "sparse");

    // q alone converted: q, k and v leave PyTorch's packed in_proj and go by their own names.
    ds::LoadOptions mixed = opt;
    mixed.formats["layers.1.attn.attention.q_proj"] = "dense_i8";
    mixed.formats["layers.0.attn.attention.out_proj"] = "gsparse_f32";
    expect_round_trip(ds::Model::load(model_data(file), mixed), tokens, "mixed");
  }
}

TEST(ModelSave, SavingOverTheFileAModelWasLoadedFromReplacesIt) {
  // The loaded model maps its file; a save to the same path is written beside it and renamed
  // over it, so the mapping keeps its pages and the new file is whole.
  const auto tokens = golden_tokens("tiny_head_gate.safetensors");
  const std::string path = temp_path("self");
  ds::Model::load(model_data("tiny_head_gate.safetensors"), with_extra()).save(path);
  ds::LoadOptions int8;
  int8.int8 = true;
  const ds::Model m = ds::Model::load(path, int8);
  const auto before = logits_of(m, tokens);
  m.save(path);
  EXPECT_EQ(logits_of(m, tokens), before);  // still reads its mapping
  const ds::Model back = ds::Model::load(path);
  EXPECT_EQ(back.layer_formats(), m.layer_formats());
  EXPECT_EQ(logits_of(back, tokens), before);
  std::remove(path.c_str());
}

TEST(ModelSave, AFailedSaveLeavesTheExistingFileAlone) {
  const std::string path = temp_path("keep");
  const ds::Model m = ds::Model::load(model_data("tiny_head_gate.safetensors"), with_extra());
  m.save(path);
  const long size = file_size(path);
  // A directory where the file should go: the write fails, the directory and its contents
  // stay, and no partial file is left beside it.
  const std::string dir = temp_path("dir");
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  EXPECT_THROW(m.save(dir), ds::FormatError);
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(file_size(path), size);
  for (const auto& entry : std::filesystem::directory_iterator(::testing::TempDir())) {
    EXPECT_EQ(entry.path().string().find(dir + ".partial"), std::string::npos) << entry.path();
  }
  ::rmdir(dir.c_str());
  std::remove(path.c_str());
}

TEST(ModelSave, CalibratedAlphasTravelWithTheLayers) {
  const auto tokens = golden_tokens("tiny_head_gate.safetensors");
  ds::LoadOptions i8 = with_extra();
  i8.int8 = true;
  ds::Model q = ds::Model::load(model_data("tiny_head_gate.safetensors"), i8);
  std::map<std::string, float> alphas;
  float a = 1.5f;
  q.for_each_linear([&](ds::nn::AnyLinear& l) { alphas[l.name()] = (a += 0.25f); });
  q.set_activation_alphas(alphas);
  expect_round_trip(q, tokens, "alphas");
}

TEST(ModelSave, ConvertedFilesAreSmallAndLoadInOtherFormats) {
  const auto tokens = golden_tokens("tiny_head_gate.safetensors");
  const ds::Model fp = ds::Model::load(model_data("tiny_head_gate.safetensors"), with_extra());
  const std::string fp_path = temp_path("fp"), q_path = temp_path("q");
  fp.save(fp_path);
  ds::LoadOptions i8 = with_extra();
  i8.int8 = true;
  const ds::Model q = ds::Model::load(model_data("tiny_head_gate.safetensors"), i8);
  q.save(q_path);
  // INT8 linear layers are a quarter of their float bytes; embeddings and norms stay float.
  EXPECT_LT(file_size(q_path), file_size(fp_path));
  const ds::io::SafetensorsFile qf(q_path);
  EXPECT_EQ(qf.info("layers.0.ffn.up.qweight").dtype, ds::DType::I8);
  EXPECT_FALSE(qf.contains("layers.0.ffn.up.weight"));
  EXPECT_FALSE(qf.contains("layers.0.attn.attention.in_proj_weight"));

  // Asked for float, the INT8 file dequantizes: the weights are those of the INT8 model, so
  // the logits sit between (W8A8 error <= 5% of float; weight-only error smaller still).
  ds::LoadOptions as_f32;
  for (const auto& [name, format] : q.layer_formats()) as_f32.formats[name] = "dense_f32";
  const ds::Model deq = ds::Model::load(q_path, as_f32);
  for (const auto& [name, format] : deq.layer_formats()) EXPECT_EQ(format, "dense_f32") << name;
  const auto ref = logits_of(fp, tokens);
  const double err_deq = l2_relative_error(ref, logits_of(deq, tokens));
  const double err_q = l2_relative_error(ref, logits_of(q, tokens));
  EXPECT_GT(err_deq, 0.0);
  EXPECT_LT(err_deq, 0.05);
  EXPECT_LT(err_q, 0.05);
  std::remove(fp_path.c_str());
  std::remove(q_path.c_str());
}

// Rewrites `path` with tensor `name` replaced by `edit` applied to a copy of its bytes (and
// shape), and returns the error message of loading the result (empty if it loaded).
template <class Exception>
std::string load_error(const std::string& path, const std::string& name,
                       const std::function<void(std::vector<std::uint8_t>&, std::vector<std::size_t>&, ds::DType&)>& edit) {
  const ds::io::SafetensorsFile f(path);
  ds::io::SafetensorsWriter w;
  for (const std::string& n : f.names()) {
    const auto& info = f.info(n);
    const auto bytes = f.bytes(n);
    std::vector<std::uint8_t> b(bytes.data, bytes.data + bytes.size);
    std::vector<std::size_t> shape = info.shape;
    ds::DType dtype = info.dtype;
    if (n == name) edit(b, shape, dtype);
    if (n == name && b.empty() && shape.empty()) continue;  // dropped
    w.add(n, dtype, shape, b.data(), b.size());
  }
  for (const auto& [k, v] : f.metadata()) w.set_metadata(k, v);
  const auto blob = w.to_bytes();
  try {
    const auto g = ds::io::SafetensorsFile::from_bytes(blob.data(), blob.size(), "edited.safetensors");
    ds::Model::from_file(g);
  } catch (const Exception& e) {
    return e.what();
  }
  return "";
}

TEST(ModelSave, CorruptPartsAreRefusedNamingFileAndTensor) {
  ds::LoadOptions opt = with_extra();
  opt.formats["layers.0.ffn.up"] = "gsparse_i8";
  opt.formats["layers.0.ffn.down"] = "gsparse_f32";
  opt.formats["layers.1.ffn.up"] = "dense_i8";
  opt.prune = 0.5;
  const std::string path = temp_path("corrupt");
  ds::Model::load(model_data("tiny_head_gate.safetensors"), opt).save(path);
  ASSERT_EQ(load_error<ds::Error>(path, "none", [](auto&, auto&, auto&) {}), "");

  auto expect = [&](const std::string& msg, const std::string& tensor) {
    EXPECT_NE(msg.find("edited.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find(tensor), std::string::npos) << msg;
  };
  auto set_i32 = [](std::size_t i, std::int32_t v) {
    return [i, v](std::vector<std::uint8_t>& b, auto&, auto&) { std::memcpy(b.data() + 4 * i, &v, 4); };
  };
  // -128 is outside the symmetric range the kernels rely on.
  expect(load_error<ds::FormatError>(path, "layers.1.ffn.up.qweight",
                                     [](auto& b, auto&, auto&) { b[5] = 0x80; }),
         "layers.1.ffn.up.qweight");
  expect(load_error<ds::FormatError>(path, "layers.0.ffn.up.block_values",
                                     [](auto& b, auto&, auto&) { b[0] = 0x80; }),
         "layers.0.ffn.up.block_values");
  expect(load_error<ds::FormatError>(path, "layers.1.ffn.up.weight_alpha",
                                     [](auto& b, auto&, auto&) {
                                       const float nan = std::nanf("");
                                       std::memcpy(b.data(), &nan, 4);
                                     }),
         "layers.1.ffn.up.weight_alpha");
  expect(load_error<ds::FormatError>(path, "layers.0.ffn.up.weight_alpha",
                                     [](auto& b, auto&, auto&) {
                                       const float neg = -1.0f;
                                       std::memcpy(b.data() + 8, &neg, 4);
                                     }),
         "layers.0.ffn.up.weight_alpha");
  // Block-CSR structure: a middle row pointer past the blocks, a negative or out-of-range
  // column, a zero or absurd block shape, a row pointer of the wrong length.
  expect(load_error<ds::FormatError>(path, "layers.0.ffn.down.block_row_ptr", set_i32(1, 1 << 30)),
         "layers.0.ffn.down");
  expect(load_error<ds::FormatError>(path, "layers.0.ffn.down.block_col_idx", set_i32(0, -3)),
         "layers.0.ffn.down.block_col_idx");
  expect(load_error<ds::FormatError>(path, "layers.0.ffn.down.block_col_idx", set_i32(0, 1 << 20)),
         "layers.0.ffn.down");
  expect(load_error<ds::FormatError>(path, "layers.0.ffn.up.block_shape", set_i32(0, 0)),
         "layers.0.ffn.up.block_shape");
  expect(load_error<ds::FormatError>(path, "layers.0.ffn.up.block_shape", set_i32(1, 1 << 30)),
         "layers.0.ffn.up.block_shape");
  expect(load_error<ds::ShapeError>(path, "layers.0.ffn.up.block_row_ptr",
                                    [](auto& b, auto& shape, auto&) {
                                      b.resize(b.size() - 4);
                                      shape[0] -= 1;
                                    }),
         "layers.0.ffn.up.block_row_ptr");
  // Values whose count disagrees with the structure, and a wrong dtype.
  expect(load_error<ds::ShapeError>(path, "layers.0.ffn.down.block_values",
                                    [](auto& b, auto& shape, auto&) {
                                      b.resize(b.size() - shape[1] * 4);
                                      shape[0] -= 1;
                                    }),
         "layers.0.ffn.down.block_col_idx");
  expect(load_error<ds::FormatError>(path, "layers.1.ffn.up.qweight",
                                     [](auto& b, auto& shape, auto& dtype) {
                                       dtype = ds::DType::U8;
                                       (void)b;
                                       (void)shape;
                                     }),
         "layers.1.ffn.up.qweight");
  // A missing part.
  expect(load_error<ds::FormatError>(path, "layers.1.ffn.up.weight_alpha",
                                     [](auto& b, auto& shape, auto&) {
                                       b.clear();
                                       shape.clear();
                                     }),
         "layers.1.ffn.up.weight_alpha");
  std::remove(path.c_str());
}

}  // namespace
