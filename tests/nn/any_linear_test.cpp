// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/nn/any_linear.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
namespace nn = dynasparse::nn;
using dynasparse_test::uniform_floats;

TEST(AnyLinear, SparsifyPicksTheFormatAndSaysWhy) {
  const std::size_t out = 64, in = 48;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 1u);
  const ds::ConstMatrixView wv(w.data(), out, in);
  nn::SparsifyOptions opt;
  opt.prune = {{16, 4}, 0.7, false};
  auto sparse_f = nn::sparsify(wv, {}, opt, "layers.0.ffn.up");
  EXPECT_STREQ(nn::format_name(sparse_f.layer), "gsparse_f32");
  EXPECT_NE(sparse_f.note.find("group-sparse 16x4 at sparsity 0.7"), std::string::npos) << sparse_f.note;
  opt.int8 = true;
  EXPECT_STREQ(nn::format_name(nn::sparsify(wv, {}, opt, "l").layer), "gsparse_i8");
  opt.prune.target = 0.0;
  const auto dense_i8 = nn::sparsify(wv, {}, opt, "layers.0.ffn.up");
  EXPECT_STREQ(nn::format_name(dense_i8.layer), "dense_i8");
  EXPECT_NE(dense_i8.note.find("kept dense"), std::string::npos) << dense_i8.note;
  opt.int8 = false;
  EXPECT_STREQ(nn::format_name(nn::sparsify(wv, {}, opt, "l").layer), "dense_f32");
}

TEST(AnyLinear, EveryFormatComputesTheSameLayer) {
  const std::size_t m = 4, out = 64, in = 64;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 2u);
  const auto x = uniform_floats(m * in, -1.0f, 1.0f, 3u);
  const auto b = uniform_floats(out, -1.0f, 1.0f, 4u);
  const ds::ConstMatrixView wv(w.data(), out, in);
  // Zero sparsity through the sparse formats too (crossover would keep them dense).
  const auto all = ds::sparse::prune_by_norm(wv, {{16, 4}, 0.0, false});
  std::vector<nn::AnyLinear> layers;
  layers.emplace_back(nn::Linear<nn::DenseF32>(nn::DenseF32(wv, b)));
  layers.emplace_back(nn::Linear<ds::quant::DenseI8>(ds::quant::DenseI8(wv, b)));
  layers.emplace_back(nn::Linear<ds::sparse::GroupSparseF32>(ds::sparse::GroupSparseF32(wv, all, b)));
  layers.emplace_back(nn::Linear<ds::sparse::GroupSparseI8>(ds::sparse::GroupSparseI8(wv, all, b)));
  std::vector<float> ref(m * out);
  ds::Workspace ws;
  nn::forward(layers[0], ds::ConstMatrixView(x.data(), m, in), ds::MatrixView(ref.data(), m, out), ws);
  for (const auto& l : layers) {
    EXPECT_EQ(nn::in_features(l), in);
    EXPECT_EQ(nn::out_features(l), out);
    std::vector<float> y(m * out);
    nn::forward(l, ds::ConstMatrixView(x.data(), m, in), ds::MatrixView(y.data(), m, out), ws);
    // int8 formats: within about 2% of the output range for these magnitudes.
    for (std::size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], 0.15f) << nn::format_name(l);
  }
  EXPECT_LT(nn::bytes(layers[1]), nn::bytes(layers[0]) / 3);
}

}  // namespace
