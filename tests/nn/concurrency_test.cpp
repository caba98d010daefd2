// SPDX-License-Identifier: Apache-2.0
// Immutable layers shared by many threads, each with its own Workspace, give exactly the
// serial results. CI also runs this under ThreadSanitizer (preset tsan).
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "dynasparse/core/threading.hpp"
#include "dynasparse/nn/any_linear.hpp"
#include "support/random.hpp"

namespace {

namespace ds = dynasparse;
namespace nn = dynasparse::nn;
using dynasparse_test::uniform_floats;

TEST(Concurrency, SharedLayersGiveSerialResultsFromEightThreads) {
  // One thread per call inside the kernels: the callers provide the parallelism here (the
  // worker pool under concurrent callers is core/threading_test's ParallelFor suite).
  ds::set_num_threads(1);
  const std::size_t in = 96, out = 80, rows = 3;
  const auto w = uniform_floats(out * in, -1.0f, 1.0f, 1u);
  const auto b = uniform_floats(out, -1.0f, 1.0f, 2u);
  const ds::ConstMatrixView wv(w.data(), out, in);
  std::vector<nn::AnyLinear> layers;
  layers.emplace_back(nn::Linear<nn::DenseF32>(nn::DenseF32(wv, b)));
  layers.emplace_back(nn::Linear<ds::quant::DenseI8>(ds::quant::DenseI8(wv, b)));
  layers.emplace_back(nn::sparsify(wv, b, {{{16, 4}, 0.5, false}, false}, "s").layer);
  layers.emplace_back(nn::sparsify(wv, b, {{{16, 4}, 0.5, false}, true}, "s8").layer);
  constexpr int threads = 8, requests = 40;
  // Serial reference for every (thread, request) input.
  std::vector<std::vector<float>> inputs, expected;
  ds::Workspace ws;
  for (int t = 0; t < threads; ++t) {
    for (int r = 0; r < requests; ++r) {
      inputs.push_back(uniform_floats(rows * in, -1.0f, 1.0f, static_cast<unsigned>(100 + t * requests + r)));
      for (const auto& layer : layers) {
        std::vector<float> y(rows * out);
        nn::forward(layer, ds::ConstMatrixView(inputs.back().data(), rows, in), ds::MatrixView(y.data(), rows, out), ws);
        expected.push_back(std::move(y));
      }
    }
  }
  std::vector<int> mismatches(threads, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ds::Workspace local;
      for (int r = 0; r < requests; ++r) {
        const std::size_t i = static_cast<std::size_t>(t * requests + r);
        for (std::size_t l = 0; l < layers.size(); ++l) {
          std::vector<float> y(rows * out);
          nn::forward(layers[l], ds::ConstMatrixView(inputs[i].data(), rows, in), ds::MatrixView(y.data(), rows, out),
                      local);
          if (y != expected[i * layers.size() + l]) ++mismatches[static_cast<std::size_t>(t)];
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  ds::set_num_threads(0);
  for (int t = 0; t < threads; ++t) EXPECT_EQ(mismatches[static_cast<std::size_t>(t)], 0) << "thread " << t;
}

}  // namespace
