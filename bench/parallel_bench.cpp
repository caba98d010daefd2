// SPDX-License-Identifier: Apache-2.0
// Parallel prefill on in-process threads against one rank, measured in the same benchmark:
//   BM_ParallelTpPrefill/E1024/L512/layers:2          tensor parallel, TP = 2
//   BM_ParallelPipelinePrefill/E1024/L512/micro:<m>  a 2-stage pipeline (one layer per
//                                                    stage), m micro-batches (token chunks)
//   BM_ParallelPipelineStream/E1024/L512/prompts:<p>/micro:<m>  the same pipeline serving p
//                                                    prompts back to back: the first stage
//                                                    starts the next prompt while the second
//                                                    finishes this one (throughput)
// Each iteration runs the one-rank forward pass and the parallel one back to back, so both
// see the same machine load; the reported time is the parallel run's, and the counters give
// both times and speedup = one-rank time / parallel time (summed over iterations). Every
// rank, the one-rank baseline included, computes on one thread (set_num_threads(1)), so the
// ratio is what the second core buys through parallelism across ranks.
// Model: hidden 1024, 128 heads (the seed's hidden / 8), FFN 4096, 2 layers, head gates,
// vocab 256, causal; random weights.
//
// The partitioner's prediction of each parallel time (parallel::evaluate, a prefill being
// L tokens in flight with an average causal context of L / 2) is reported as <set>_ms and
// <set>_ratio = predicted / measured, for three sets of device constants:
//   pred       device FLOP/s measured by the one-rank runs (gflops_alone: the devices
//              file's "sustained FLOP/s on this model's kernels", one core alone);
//   pred_busy  device FLOP/s measured by two one-rank runs at once (gflops_busy: each core
//              while the other computes too, which is what a rank gets when every rank works);
//   pred_file  examples/plans/two_cores.json as shipped.
// The link (link_gb_per_s, link_latency_us) is probed once per benchmark: all_reduce_sum of 1
// float and of the hidden states of all L tokens on two in-process ranks. chunked_over_one is
// one rank's pass cut into the pipeline's micro-batches over its pass in one piece: the cost
// of the chunks alone, so a 2-stage pipeline's speedup is at most 2m / (m + 1) divided by it.
//
//   BM_ParallelForOverhead/<pool|openmp>/threads:2  the fixed cost of splitting a call over
//                                                    two threads: parallel_for's worker pool
//                                                    against an OpenMP parallel region, each
//                                                    part touching one cache line
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

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
const ds::io::SafetensorsFile& parallel_model_file() {
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
    for (std::size_t r = 0; r < plan_.world(); ++r)
      shards_.push_back(par::ModelShard::load(parallel_model_file(), plan_, r));
    logits_.resize(kLen * bench_config().vocab);
  }
  // Seconds for `prompts` prefills of `t`, back to back on every rank.
  double run(const std::vector<std::int32_t>& t, std::size_t micro, std::size_t prompts = 1) {
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
      for (std::size_t i = 0; i < prompts; ++i) ex.forward(t.data(), t.size(), out, ws_[c.rank()], opt);
    });
    return std::chrono::duration<double>(Clock::now() - t0).count();
  }

  // Seconds per decoded token: a prefill of `prompt`, then `steps` single-token decode
  // steps timed on rank 0 between two barriers.
  double decode(std::size_t prompt, std::size_t steps) {
    par::ThreadGroup group(plan_.world());
    const auto t = tokens();
    double seconds = 0;
    group.run([&](par::Communicator& c) {
      par::Executor ex(shards_[c.rank()], c);
      par::ShardSession session = ex.new_session(prompt + steps);
      std::vector<float> own(prompt * bench_config().vocab);
      const bool writes = ex.writes_logits();
      ex.decode(t.data(), prompt, session, writes ? ds::MatrixView(own.data(), prompt, bench_config().vocab)
                                                  : ds::MatrixView(), ws_[c.rank()]);
      c.barrier();
      const auto t0 = Clock::now();
      for (std::size_t i = 0; i < steps; ++i) {
        ex.decode(t.data() + prompt + i, 1, session, writes ? ds::MatrixView(own.data(), 1, bench_config().vocab)
                                                            : ds::MatrixView(), ws_[c.rank()]);
      }
      c.barrier();
      if (c.rank() == 0) seconds = std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(steps);
    });
    return seconds;
  }

 private:
  par::Plan plan_;
  std::vector<par::ModelShard> shards_;
  std::vector<ds::Workspace> ws_;
  std::vector<float> logits_;
};

// Seconds for two one-rank runs at once, one per thread (the slower one's).
double run_two_at_once(Deployment& a, Deployment& b, const std::vector<std::int32_t>& t, std::size_t prompts) {
  double tb = 0;
  std::thread other([&] { tb = b.run(t, 1, prompts); });
  const double ta = a.run(t, 1, prompts);
  other.join();
  return std::max(ta, tb);
}

// The in-process link, as the partitioner models it: all_reduce_sum over two ranks costs
// bytes / bandwidth + 2 latency (detail::allreduce_seconds at n = 2). The fastest of five
// trials, each a run of back-to-back calls: preemption by other processes only slows a trial.
par::Link probe_link() {
  auto seconds_per_call = [](std::size_t n, int calls) {
    double best = std::numeric_limits<double>::infinity();
    par::ThreadGroup group(2);
    group.run([&](par::Communicator& c) {
      std::vector<float> buf(n, 0.0f);
      for (int trial = 0; trial < 5; ++trial) {
        c.barrier();
        const auto t0 = Clock::now();
        for (int i = 0; i < calls; ++i) c.all_reduce_sum(buf.data(), n);
        const double s = std::chrono::duration<double>(Clock::now() - t0).count() / calls;
        if (c.rank() == 0) best = std::min(best, s);
      }
    });
    return best;
  };
  const std::size_t big = kLen * kHidden;
  const double small = seconds_per_call(1, 200), large = seconds_per_call(big, 4);
  par::Link link;
  link.latency = small / 2;
  link.bandwidth = static_cast<double>(big * sizeof(float)) / std::max(large - small, 0.01 * large);
  return link;
}

// The partitioner's predicted seconds for `prompts` prefills of kLen tokens under a tp x pp
// plan with `micro` micro-batches each, on devices of `flops` FLOP/s joined by `link`:
// back-to-back prompts fill the pipeline like one batch of prompts x micro micro-batches.
double predicted_seconds(std::size_t tp, std::size_t pp, std::size_t micro, double flops, const par::Link& link,
                         std::size_t prompts = 1) {
  par::Cluster c;
  c.devices.assign(tp * pp, par::Device{std::numeric_limits<double>::infinity(), flops, 0});
  c.intra_node = c.inter_node = link;
  par::Workload w;
  w.batch = kLen * prompts;  // a prefill has all its tokens in flight, as a batch has its sequences
  w.prompt_len = kLen;
  w.decode_len = 0;
  w.micro_batches = micro * prompts;
  const par::Plan p = par::evaluate(par::costs_from_config(bench_config(), 4.0, kLen / 2.0), c, w, tp, pp, 1);
  return static_cast<double>(kLen * prompts) / p.tokens_per_second;
}

// examples/plans/two_cores.json, the devices file shipped for this kind of machine (empty if
// the source tree is not where this file was built from).
par::Cluster shipped_cluster() {
  std::string path = __FILE__;
  path = path.substr(0, path.find_last_of('/') + 1) + "../examples/plans/two_cores.json";
  std::ifstream in(path);
  if (!in) return {};
  return par::cluster_from_json(nlohmann::json::parse(in), path);
}

// Measured seconds, summed over the iterations.
struct Times {
  double base = 0, parallel = 0, busy = 0, chunked = 0;
};

void report(benchmark::State& state, const Times& m, std::size_t tp, std::size_t pp, std::size_t micro,
            std::size_t prompts, const par::Link& link) {
  const double n = static_cast<double>(state.iterations());
  state.counters["one_rank_ms"] = benchmark::Counter(m.base * 1e3 / n);
  state.counters["parallel_ms"] = benchmark::Counter(m.parallel * 1e3 / n);
  state.counters["speedup"] = benchmark::Counter(m.base / m.parallel);
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(kLen * prompts) * n / m.parallel);
  // One rank's FLOPs, from the model with unit-speed devices (one rank has no links).
  const double flop = predicted_seconds(1, 1, 1, 1.0, link, prompts);
  const double measured = m.parallel / n;
  auto predict = [&](const char* name, double flops) {
    const double p = predicted_seconds(tp, pp, micro, flops, link, prompts);
    state.counters[std::string(name) + "_ms"] = benchmark::Counter(p * 1e3);
    state.counters[std::string(name) + "_ratio"] = benchmark::Counter(p / measured);
  };
  predict("pred", flop * n / m.base);
  predict("pred_busy", flop * n / m.busy);
  state.counters["gflops_alone"] = benchmark::Counter(flop * n / m.base * 1e-9);
  state.counters["gflops_busy"] = benchmark::Counter(flop * n / m.busy * 1e-9);
  const par::Cluster file = shipped_cluster();
  if (!file.devices.empty()) {
    const double p = predicted_seconds(tp, pp, micro, file.devices[0].flops, file.intra_node, prompts);
    state.counters["pred_file_ms"] = benchmark::Counter(p * 1e3);
    state.counters["pred_file_ratio"] = benchmark::Counter(p / measured);
  }
  if (m.chunked > 0) state.counters["chunked_over_one"] = benchmark::Counter(m.chunked / m.base);
  state.counters["link_gb_per_s"] = benchmark::Counter(link.bandwidth * 1e-9);
  state.counters["link_latency_us"] = benchmark::Counter(link.latency * 1e6);
  state.SetLabel(std::string(ds::isa_name()));
}

// Iterations: the one-rank run, the plan's run, two one-rank runs at once and, with
// micro-batches, the one rank cutting its pass into the same micro-batches (what the
// pipeline's chunks cost without any parallelism).
void run_plan(benchmark::State& state, std::size_t tp, std::size_t pp, std::size_t micro, std::size_t prompts = 1) {
  ds::set_num_threads(1);
  const auto t = tokens();
  Deployment one(1, 1), other(1, 1), plan(tp, pp);
  one.run(t, 1);  // warm the workspaces
  other.run(t, 1);
  plan.run(t, micro);
  const par::Link link = probe_link();
  Times m;
  for (auto _ : state) {
    m.base += one.run(t, 1, prompts);
    const double s = plan.run(t, micro, prompts);
    m.parallel += s;
    m.busy += run_two_at_once(one, other, t, prompts);
    if (micro > 1) m.chunked += one.run(t, micro, prompts);
    state.SetIterationTime(s);
  }
  report(state, m, tp, pp, micro, prompts, link);
}

void BM_ParallelTpPrefill(benchmark::State& state) { run_plan(state, 2, 1, 1); }
BENCHMARK(BM_ParallelTpPrefill)->Name("BM_ParallelTpPrefill/E1024/L512/layers:2")->UseManualTime()->Iterations(4)->Unit(benchmark::kMillisecond);

void BM_ParallelPipelinePrefill(benchmark::State& state) {
  run_plan(state, 1, 2, static_cast<std::size_t>(state.range(0)));
}
BENCHMARK(BM_ParallelPipelinePrefill)->Name("BM_ParallelPipelinePrefill/E1024/L512")->ArgName("micro")->Arg(4)->Arg(8)
    ->UseManualTime()->Iterations(4)->Unit(benchmark::kMillisecond);

void BM_ParallelPipelineStream(benchmark::State& state) {
  run_plan(state, 1, 2, static_cast<std::size_t>(state.range(1)), static_cast<std::size_t>(state.range(0)));
}
BENCHMARK(BM_ParallelPipelineStream)->Name("BM_ParallelPipelineStream/E1024/L512")->ArgNames({"prompts", "micro"})
    ->Args({4, 1})->Args({4, 4})->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

// Cached decoding of one sequence, one token per step after a 256-token prompt, under a
// tp x pp plan, against the partitioner's prediction with examples/plans/two_cores.json
// (whose memory_bandwidth makes decoding memory-bound, as it is: every step reads all
// weights). Counters: ms_per_token, one_rank_ms (the same on one rank, measured in the same
// iteration), pred_file_ms and pred_file_ratio = predicted / measured.
void BM_ParallelDecode(benchmark::State& state) {
  ds::set_num_threads(1);
  const std::size_t tp = static_cast<std::size_t>(state.range(0)), pp = static_cast<std::size_t>(state.range(1));
  constexpr std::size_t prompt = 256, steps = 32;
  Deployment one(1, 1), plan(tp, pp);
  double base = 0, measured = 0;
  for (auto _ : state) {
    base += one.decode(prompt, steps);
    const double s = plan.decode(prompt, steps);
    measured += s;
    state.SetIterationTime(s);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["ms_per_token"] = benchmark::Counter(measured / n * 1e3);
  state.counters["one_rank_ms"] = benchmark::Counter(base / n * 1e3);
  state.counters["speedup"] = benchmark::Counter(base / measured);
  par::Cluster file = shipped_cluster();
  if (!file.devices.empty()) {
    file.devices.resize(tp * pp, file.devices[0]);
    par::Workload w;
    w.batch = 1;
    w.prompt_len = prompt;
    w.decode_len = steps;
    const par::Plan p = par::evaluate(par::costs_from_config(bench_config(), 4.0, prompt + steps / 2.0), file, w, tp, pp, 1);
    state.counters["pred_file_ms"] = benchmark::Counter(p.time_per_token * 1e3);
    state.counters["pred_file_ratio"] = benchmark::Counter(p.time_per_token / (measured / n));
    state.SetLabel(p.bound);
  }
}
// Back-to-back two-part calls, as a decoding step issues them layer after layer.
void BM_ParallelForOverhead(benchmark::State& state, bool pool) {
  struct alignas(64) Line {
    std::size_t v = 0;
  };
  Line lines[2];
  ds::set_num_threads(2);
  for (auto _ : state) {
    if (pool) {
      ds::parallel_for(0, 2, 1, [&](std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) lines[i].v += i + 1;
      });
    } else {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(2) schedule(static, 1)
      for (int i = 0; i < 2; ++i) lines[i].v += static_cast<std::size_t>(i) + 1;
#endif
    }
  }
  benchmark::DoNotOptimize(lines[0].v + lines[1].v);
  ds::set_num_threads(0);
  const auto n = static_cast<std::size_t>(state.iterations());
  if (lines[0].v != n || lines[1].v != 2 * n) state.SkipWithError("lost a part");
}
BENCHMARK_CAPTURE(BM_ParallelForOverhead, pool, true)->Name("BM_ParallelForOverhead/pool/threads:2");
#if defined(_OPENMP)
BENCHMARK_CAPTURE(BM_ParallelForOverhead, openmp, false)->Name("BM_ParallelForOverhead/openmp/threads:2");
#endif

BENCHMARK(BM_ParallelDecode)->Name("BM_ParallelDecode/E1024/ctx:256")->ArgNames({"tp", "pp"})->Args({1, 1})
    ->Args({2, 1})->Args({1, 2})->UseManualTime()->Iterations(3)->Unit(benchmark::kMillisecond);

}  // namespace
