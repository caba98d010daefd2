// SPDX-License-Identifier: Apache-2.0
// Decoding with the shipped demo models (examples/models: hidden 256, 4 layers, 32 heads,
// head gates at tau 0.05), one token at a time as a chat or completion does:
//   BM_ModelDecode/<variant>/threads:<T>
// <variant>: fp32_dense (the baseline), fp32_sparse70 (the trained 70% group-sparse model),
// int8_dense and int8_sparse70 (every linear layer INT8 with dynamic per-row activations, as
// in the demo), int8_sparse70_int8head (the output head, tied to the embedding, in
// INT8 too: LoadOptions::int8_head), int8_sparse70_int8head_i8kv (and the KV cache in INT8 with
// a scale per token and head, nn::KVDType::I8). Each iteration decodes the 64 held-out bytes after
// a 128-byte prompt (positions 128-191, the demo's decode measure); only those steps are timed
// (manual time), not the prompt's prefill. Counter ms_per_token. bench/report.py divides every
// variant by fp32_dense of the same run and thread count: run with repetitions and random
// interleaving (scripts/bench.sh does) so that a burst of load on this shared machine falls on both
// sides.
//   BM_ModelLinears/<variant>
// One decoding row through every linear layer of the variant (attention projections, output
// gates, FFN; not the output head) in layer order, every output computed (no head skipping),
// 64 times, on one thread, nothing else touching the caches between passes (int8_sparse70's
// 0.9 MB of weights stay in the Zen 5's 1 MB L2; fp32_dense's 9 MB come from L3): an upper bound on
// the products' share of BM_ModelDecode's step, and what they cost without the step's other
// work evicting their weights. Counter us_per_token.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model_variants.hpp"
#include <benchmark/benchmark.h>

#include "dynasparse/dynasparse.hpp"

#ifndef DYNASPARSE_BENCH_MODELS
#error "DYNASPARSE_BENCH_MODELS must name the directory of the shipped models"
#endif

namespace {

namespace dsm = dynasparse;

constexpr std::size_t kModelPrompt = bench_models::prompt_bytes,
                      kModelDecode = bench_models::decode_bytes;

const std::vector<std::int32_t>& model_text() {
  static const std::vector<std::int32_t> ids = [] {
    const std::string path = std::string(DYNASPARSE_BENCH_MODELS) + "/fortunes_heldout.txt";
    std::ifstream in(path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() < kModelPrompt + kModelDecode) {
      dsm::detail::fail<dsm::FormatError>("bench", "held-out text too short",
                                          std::to_string(kModelPrompt + kModelDecode) + " bytes",
                                          std::to_string(text.size()) + " bytes", path);
    }
    return dsm::ByteTokenizer::encode(text.substr(0, kModelPrompt + kModelDecode));
  }();
  return ids;
}

// Loaded once per variant (converting to INT8 takes a fraction of a second).
const dsm::Model& model_variant(const std::string& variant) {
  static std::map<std::string, std::unique_ptr<dsm::Model>> cache;
  auto& slot = cache[variant];
  if (!slot) {
    const bench_models::Variant v = bench_models::parse_variant(variant);
    dsm::LoadOptions o;
    o.int8 = v.int8;
    o.int8_head = v.int8_head;
    slot = std::make_unique<dsm::Model>(
        dsm::Model::load(std::string(DYNASPARSE_BENCH_MODELS) + v.file(), o));
  }
  return *slot;
}

void bm_model_decode(benchmark::State& state, const std::string& variant, int threads) {
  dsm::set_num_threads(threads);
  const dsm::Model& m = model_variant(variant);
  const auto& ids = model_text();
  const std::size_t v = m.vocab();
  std::vector<float> logits(kModelPrompt * v);
  // One session reused, as a server reuses its sessions (a fresh one would time page faults).
  const bool i8kv = bench_models::parse_variant(variant).i8kv;
  dsm::Session s = m.new_session(kModelPrompt + kModelDecode,
                                 i8kv ? dsm::nn::KVDType::I8 : dsm::nn::KVDType::F32);
  double total = 0;
  for (auto _ : state) {
    s.reset();
    m.decode(ids.data(), kModelPrompt, s, dsm::MatrixView(logits.data(), kModelPrompt, v));
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < kModelDecode; ++i) {
      m.decode(ids.data() + kModelPrompt + i, 1, s, dsm::MatrixView(logits.data(), 1, v));
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(logits.data());
    state.SetIterationTime(sec);
    total += sec;
  }
  state.counters["ms_per_token"] =
      total * 1e3 /
      static_cast<double>(kModelDecode * std::max<std::size_t>(1, state.iterations()));
  state.counters["skipped"] = s.stats().skipped_fraction();
  state.SetLabel(dsm::build_info());
}

void bm_model_linears(benchmark::State& state, const std::string& variant) {
  dsm::set_num_threads(1);
  const dsm::Model& m = model_variant(variant);
  std::vector<const dsm::nn::AnyLinear*> layers;
  std::size_t width = 0;
  m.for_each_linear([&](const dsm::nn::AnyLinear& l) {
    layers.push_back(&l);
    width = std::max({width, l.in_features(), l.out_features()});
  });
  // A fixed row, values in [-1.97, 1.97] and none zero (INT8 layers scale each row anyway).
  std::vector<float> x(width), y(width);
  for (std::size_t i = 0; i < width; ++i) x[i] = static_cast<float>((i * 37) % 64) / 16.0f - 1.97f;
  dsm::Workspace ws;
  const auto pass = [&] {
    for (const auto* l : layers) {
      l->forward(dsm::ConstMatrixView(x.data(), 1, l->in_features()),
                 dsm::MatrixView(y.data(), 1, l->out_features()), ws);
    }
  };
  pass();  // warms the weights and the workspace
  double total = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < kModelDecode; ++i) pass();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(y.data());
    state.SetIterationTime(sec);
    total += sec;
  }
  state.counters["us_per_token"] =
      total * 1e6 /
      static_cast<double>(kModelDecode * std::max<std::size_t>(1, state.iterations()));
  state.counters["layers"] = static_cast<double>(layers.size());
  state.SetLabel(dsm::build_info());
}

const bool model_registered = [] {
  for (const char* variant : bench_models::variants) {
    for (int t : {1, 2}) {
      const std::string name =
          std::string("BM_ModelDecode/") + variant + "/threads:" + std::to_string(t);
      benchmark::RegisterBenchmark(
          name.c_str(),
          [v = std::string(variant), t](benchmark::State& st) { bm_model_decode(st, v, t); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (const char* variant : {"fp32_dense", "int8_dense", "int8_sparse70"}) {
    benchmark::RegisterBenchmark(
        (std::string("BM_ModelLinears/") + variant).c_str(),
        [v = std::string(variant)](benchmark::State& st) { bm_model_linears(st, v); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
