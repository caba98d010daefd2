// SPDX-License-Identifier: Apache-2.0
// Parallel prefill on in-process threads against one rank, measured in the same benchmark:
//   BM_ParallelTpPrefill/E1024/L512/layers:2          tensor parallel, TP = 2
//   BM_ParallelPipelinePrefill/E1024/L512/micro:<m>  a 2-stage pipeline (one layer per
//                                                    stage), m micro-batches (token chunks)
// Each iteration runs the one-rank forward pass and the parallel one back to back, so both
// see the same machine load; the reported time is the parallel run's, and the counters give
// both times and speedup = one-rank time / parallel time (summed over iterations). Every
// rank, the one-rank baseline included, computes on one thread (set_num_threads(1)), so the
// ratio is what the second core buys through parallelism across ranks.
// Model: hidden 1024, 128 heads (the seed's hidden / 8), FFN 4096, 2 layers, head gates,
// vocab 256, causal; random weights.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dynasparse/core/build_info.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/model/model.hpp"
#include "dynasparse/parallel/executor.hpp"
#include "dynasparse/parallel/partitioner.hpp"
#include "dynasparse/parallel/thread_communicator.hpp"

namespace {

namespace ds = dynasparse;
namespace par = dynasparse::parallel;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kHidden = 1024, kLen = 512;

ds::ModelConfig bench_config() {
  ds::ModelConfig c;
  c.vocab = 256;
  c.hidden = kHidden;
  c.layers = 2;
  c.ffn = 4 * kHidden;
  c.max_seq_len = kLen;
  c.gate = ds::GatePosition::Head;
  return c;
}

// The model file, made once: random weights scaled by 1 / sqrt(fan-in).
const ds::io::SafetensorsFile& model_file() {
  static const ds::io::SafetensorsFile file = [] {
    const ds::ModelConfig c = bench_config();
    ds::io::SafetensorsWriter w;
    std::mt19937 rng(1);
    auto add = [&](const std::string& name, std::vector<std::size_t> shape, float scale) {
      std::size_t n = 1;
      for (auto d : shape) n *= d;
      std::uniform_real_distribution<float> dist(-scale, scale);
      std::vector<float> v(n);
      for (float& x : v) x = dist(rng);
      w.add<float>(name, shape, v.data());
    };
    const std::size_t e = c.hidden, f = c.ffn;
    const float se = 1.0f / std::sqrt(static_cast<float>(e)), sf = 1.0f / std::sqrt(static_cast<float>(f));
    add("embed.weight", {c.vocab, e}, 1.0f);
    add("pos_embed.weight", {c.max_seq_len, e}, 0.1f);
    for (std::size_t l = 0; l < c.layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      add(p + "norm1.weight", {e}, 1.0f);
      add(p + "norm2.weight", {e}, 1.0f);
      add(p + "attn.attention.in_proj_weight", {3 * e, e}, se);
      add(p + "attn.attention.out_proj.weight", {e, e}, se);
      add(p + "attn.gate.0.weight", {c.num_heads(), e}, se);
      add(p + "ffn.up.weight", {f, e}, se);
      add(p + "ffn.down.weight", {e, f}, sf);
    }
    add("norm_f.weight", {e}, 1.0f);
    w.set_metadata("dynasparse.config", ds::to_json(c).dump());
    const auto bytes = w.to_bytes();
    return ds::io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "bench");
  }();
  return file;
}

std::vector<std::int32_t> tokens() {
  std::vector<std::int32_t> t(kLen);
  for (std::size_t i = 0; i < kLen; ++i) t[i] = static_cast<std::int32_t>((i * 31 + 7) % 256);
  return t;
}

// The plan's shards, loaded once, and one forward pass of all ranks on threads.
class Deployment {
 public:
  Deployment(std::size_t tp, std::size_t pp) : plan_(par::fixed_plan(bench_config(), tp, pp)), ws_(plan_.world()) {
    for (std::size_t r = 0; r < plan_.world(); ++r) shards_.push_back(par::ModelShard::load(model_file(), plan_, r));
    logits_.resize(kLen * bench_config().vocab);
  }
  // Seconds for one prefill of `t`.
  double run(const std::vector<std::int32_t>& t, std::size_t micro) {
    par::ThreadGroup group(plan_.world());
    const auto t0 = Clock::now();
    group.run([&](par::Communicator& c) {
      par::Executor ex(shards_[c.rank()], c);
      par::ExecutorOptions opt;
      opt.micro_batches = micro;
      ds::MatrixView out;
      if (ex.writes_logits(opt)) out = ds::MatrixView(logits_.data(), t.size(), bench_config().vocab);
      // Only one rank writes when tp = 1; with tp > 1 the last stage's ranks would race on
      // one buffer, so only index 0 writes and the others use their own.
      std::vector<float> own;
      if (out.data() && c.rank() % plan_.tp != 0) {
        own.resize(logits_.size());
        out = ds::MatrixView(own.data(), t.size(), bench_config().vocab);
      }
      ex.forward(t.data(), t.size(), out, ws_[c.rank()], opt);
    });
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }

 private:
  par::Plan plan_;
  std::vector<par::ModelShard> shards_;
  std::vector<ds::Workspace> ws_;
  std::vector<float> logits_;
};

void report(benchmark::State& state, double base, double parallel) {
  state.counters["one_rank_ms"] = benchmark::Counter(base * 1e3 / static_cast<double>(state.iterations()));
  state.counters["parallel_ms"] = benchmark::Counter(parallel * 1e3 / static_cast<double>(state.iterations()));
  state.counters["speedup"] = benchmark::Counter(base / parallel);
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(kLen) * static_cast<double>(state.iterations()) / parallel);
  state.SetLabel(std::string(ds::isa_name()));
}

void BM_ParallelTpPrefill(benchmark::State& state) {
  ds::set_num_threads(1);
  const auto t = tokens();
  Deployment one(1, 1), tp2(2, 1);
  one.run(t, 1);  // warm the workspaces
  tp2.run(t, 1);
  double base = 0, parallel = 0;
  for (auto _ : state) {
    base += one.run(t, 1);
    const double s = tp2.run(t, 1);
    parallel += s;
    state.SetIterationTime(s);
  }
  report(state, base, parallel);
}
BENCHMARK(BM_ParallelTpPrefill)->Name("BM_ParallelTpPrefill/E1024/L512/layers:2")->UseManualTime()->Iterations(4)->Unit(benchmark::kMillisecond);

void BM_ParallelPipelinePrefill(benchmark::State& state) {
  ds::set_num_threads(1);
  const auto micro = static_cast<std::size_t>(state.range(0));
  const auto t = tokens();
  Deployment one(1, 1), pp2(1, 2);
  one.run(t, 1);
  pp2.run(t, micro);
  double base = 0, parallel = 0;
  for (auto _ : state) {
    base += one.run(t, 1);
    const double s = pp2.run(t, micro);
    parallel += s;
    state.SetIterationTime(s);
  }
  report(state, base, parallel);
}
BENCHMARK(BM_ParallelPipelinePrefill)->Name("BM_ParallelPipelinePrefill/E1024/L512")->ArgName("micro")->Arg(4)->Arg(8)
    ->UseManualTime()->Iterations(4)->Unit(benchmark::kMillisecond);

}  // namespace
