// SPDX-License-Identifier: Apache-2.0
// Attention at E = 512, batch 1, self-attention without mask, named
// BM_Attention/<variant>/E512/H<H>/L<L>/threads:<T> (T: threads inside one call):
//   naive, streaming   the attention core alone (all heads; projected Q, K, V given), with
//                      attention_naive_f32 (scores materialized per head) or attention_f32;
//   gated_output       the whole seed module: projections, attention, out_proj, output gate;
//   gated_head@skipX   the whole module with a head-wise head gate whose weights are zero
//                      and whose biases put exactly X% of (query, head) pairs below tau
//                      (every 4th head group: heads h with h % 4 < X / 25), each head closed
//                      for every query or for none, so whole heads leave the projections;
//   gated_head_scattered@skipX (X = 50, 75) the same fraction closed per query (query i
//                      closes head h when (i + h) % 4 < X / 25): every head is used by some
//                      query, so only the attention core skips work.
// and BM_AttentionDecode/<f32kv|i8kv>/E512/H64/ctx<C>: one decoding step of the seed
// module (GatedAttention::forward_cached) with C - 1 tokens already cached (C = 160: the
// demo's decoding context, where each head's fixed costs weigh most).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/build_info.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/nn/gated_attention.hpp"
#include "dynasparse/nn/kv_cache.hpp"
#include "dynasparse/simd/attention.hpp"

namespace {

namespace ds = dynasparse;
namespace nn = dynasparse::nn;
namespace simd = dynasparse::simd;
using Dense = nn::Linear<nn::DenseF32>;

constexpr std::size_t kEmbed = 512;

std::vector<float> normal(std::size_t n, float stddev, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Dense dense(std::size_t out, std::size_t in, unsigned seed, std::vector<float> bias = {}) {
  const auto w = normal(out * in, 1.0f / std::sqrt(static_cast<float>(in)), seed);
  if (bias.empty()) bias = normal(out, 0.02f, seed + 100);
  return Dense(nn::DenseF32(ds::ConstMatrixView(w.data(), out, in), std::move(bias)));
}

void label(benchmark::State& state) { state.SetLabel(std::string(ds::isa_name())); }

// The per-call counters bench/report.py needs for the roofline: ops_per_call (FLOPs of the
// products actually done: 2 per multiply-add; softmax and gates' exp not counted),
// bytes_per_call (weights plus the float inputs and outputs, the traffic no implementation
// can avoid; a score matrix or a workspace is not counted) and int8_ops = 0 (FP32 compute).
void roofline_counters(benchmark::State& state, double ops, double bytes) {
  state.counters["ops_per_call"] = ops;
  state.counters["bytes_per_call"] = bytes;
  state.counters["int8_ops"] = 0.0;
}

// The attention core of every head: Q [L, E] and K, V transposed per head [H][d][L].
void bm_core(benchmark::State& state, bool naive, std::size_t h, std::size_t l, int threads) {
  ds::set_num_threads(threads);
  const std::size_t e = kEmbed, d = e / h;
  const auto q = normal(l * e, 1.0f, 1);
  const std::size_t kvs = simd::attention_kv_stride(l);
  const auto kt = normal(h * d * kvs, 1.0f, 2);
  const auto vt = normal(h * d * kvs, 1.0f, 3);
  std::vector<float> out(l * e);
  const std::size_t parts = std::min<std::size_t>(static_cast<std::size_t>(ds::num_threads()), h);
  // Naive: one score matrix [L, L] per thread, the one head it works on at a time.
  const std::size_t per_part = naive ? l * l + d : simd::attention_scratch_floats(d);
  ds::AlignedBuffer<float> scratch(parts * ((per_part + 15) / 16 * 16));
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (auto _ : state) {
    ds::parallel_for(0, parts, 1, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t p = lo; p < hi; ++p) {
        float* sp = scratch.data() + p * ((per_part + 15) / 16 * 16);
        for (std::size_t hd = h * p / parts; hd < h * (p + 1) / parts; ++hd) {
          simd::AttentionArgs a;
          a.q = q.data() + hd * d;
          a.q_stride = e;
          a.lq = l;
          a.d = d;
          a.kt = kt.data() + hd * d * kvs;
          a.vt = vt.data() + hd * d * kvs;
          a.kv_stride = kvs;
          a.lkv = l;
          a.scale = scale;
          a.out = out.data() + hd * d;
          a.out_stride = e;
          if (naive) {
            simd::attention_naive_f32(a, sp);
          } else {
            simd::attention_f32(a, sp);
          }
        }
      }
    });
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * l * l * e * state.iterations(), benchmark::Counter::kIsRate,
                                                 benchmark::Counter::kIs1000);
  // Q, K, V read and the output written once.
  roofline_counters(state, 4.0 * l * l * e, 4.0 * static_cast<double>(l * e * sizeof(float)));
  label(state);
}

// The whole module; skip_pct < 0 means the seed's output gate. With `scattered`, each query
// closes its own heads (query i closes head hd when (i + hd) % 4 < skip_pct / 25), so every
// head is used by some query and only the attention core can skip work.
void bm_layer(benchmark::State& state, int skip_pct, std::size_t h, std::size_t l, int threads,
              bool scattered = false) {
  ds::set_num_threads(threads);
  const std::size_t e = kEmbed;
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  cfg.num_heads = h;
  std::optional<Dense> gate;
  if (skip_pct < 0) {
    cfg.gate = nn::GatePosition::Output;
    gate.emplace(dense(e, e, 14));
  } else {
    cfg.gate = nn::GatePosition::Head;
    cfg.head_gate = nn::HeadGate::Headwise;
    cfg.tau = 0.5f;
    std::vector<float> bias(h, 0.0f), wg(h * e, 0.0f);
    for (std::size_t hd = 0; hd < h; ++hd) {
      if (scattered) {
        wg[hd * e + hd] = 20.0f;  // gate of head hd: sigmoid(20 x[hd]), x[hd] = +-1 below
      } else {
        bias[hd] = static_cast<int>(hd % 4) < skip_pct / 25 ? -10.0f : 10.0f;
      }
    }
    gate.emplace(Dense(nn::DenseF32(ds::ConstMatrixView(wg.data(), h, e), bias)));
  }
  const nn::GatedAttention<Dense> layer(cfg, dense(e, e, 10), dense(e, e, 11), dense(e, e, 12), dense(e, e, 13),
                                       std::move(gate));
  auto x = normal(l * e, 1.0f, 4);
  if (scattered) {
    for (std::size_t i = 0; i < l; ++i) {
      for (std::size_t hd = 0; hd < h; ++hd)
        x[i * e + hd] = static_cast<int>((i + hd) % 4) < skip_pct / 25 ? -1.0f : 1.0f;
    }
  }
  std::vector<float> out(l * e);
  ds::Workspace ws;
  const ds::ConstMatrixView xv(x.data(), l, e);
  nn::AttentionStats stats = layer.forward(xv, xv, xv, 1, ds::MatrixView(out.data(), l, e), ws);
  for (auto _ : state) {
    stats = layer.forward(xv, xv, xv, 1, ds::MatrixView(out.data(), l, e), ws);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["skipped"] = stats.skipped_fraction();
  // Products done per token: q_proj, k_proj and v_proj over the packed panels that hold a
  // head some query uses, or over the used heads gathered into fewer panels (DenseF32 panels
  // of panel_rows(E) outputs; no cache, so K and V of a head no query uses are not needed);
  // out_proj over the used heads' inputs; the gate (E x E output gate, or H x E head gate); and the
  // attention core (QK^T and PV) for the (query, head) pairs not skipped.
  const std::size_t d = e / h, panel = nn::DenseF32::panel_rows(e);
  std::size_t used = 0, q_outputs = 0;
  // A head is used unless every query closes it (never, when scattered).
  const auto head_used = [&](std::size_t hd) {
    return skip_pct < 0 || scattered || static_cast<int>(hd % 4) >= skip_pct / 25;
  };
  for (std::size_t p0 = 0; p0 < e; p0 += panel) {
    bool any = false;
    for (std::size_t hd = p0 / d; hd < std::min(h, (p0 + panel + d - 1) / d); ++hd) any = any || head_used(hd);
    if (any) q_outputs += std::min(panel, e - p0);
  }
  for (std::size_t hd = 0; hd < h; ++hd) used += head_used(hd);
  // Heads narrower than a panel are gathered into ceil(used * d / panel) panels when that is
  // fewer (DenseF32::forward_output_groups).
  const std::size_t gathered = (used * d + panel - 1) / panel * panel;
  if (d < panel && l >= nn::DenseF32::packed_group_min_rows && gathered < q_outputs)
    q_outputs = gathered;
  const double gate_rows = skip_pct < 0 ? static_cast<double>(e) : static_cast<double>(h);
  const double proj_rows =
      3.0 * static_cast<double>(q_outputs) + static_cast<double>(used * d) + gate_rows;
  const double ops = 2.0 * l * e * proj_rows + 4.0 * l * l * e * (1.0 - stats.skipped_fraction());
  roofline_counters(state, ops, (proj_rows * e + 2.0 * l * e) * sizeof(float));
  label(state);
}

void bm_decode(benchmark::State& state, nn::KVDType dtype, std::size_t ctx) {
  ds::set_num_threads(1);
  const std::size_t e = kEmbed, h = 64;
  nn::GatedAttentionConfig cfg;
  cfg.embed_dim = e;
  cfg.num_heads = h;
  const nn::GatedAttention<Dense> layer(cfg, dense(e, e, 10), dense(e, e, 11), dense(e, e, 12), dense(e, e, 13),
                                        dense(e, e, 14));
  nn::KVCache cache(1, h, e / h, ctx, dtype);
  // Fill ctx - 1 tokens with K/V of the right scale, 1024 at a time.
  for (std::size_t done = 0; done + 1 < ctx;) {
    const std::size_t n = std::min<std::size_t>(1024, ctx - 1 - done);
    const auto kv = normal(n * e, 1.0f, static_cast<unsigned>(20 + done));
    cache.append(ds::ConstMatrixView(kv.data(), n, e), ds::ConstMatrixView(kv.data(), n, e));
    done += n;
  }
  const auto x = normal(e, 1.0f, 5);
  std::vector<float> out(e);
  ds::Workspace ws;
  for (auto _ : state) {
    cache.truncate(ctx - 1);
    layer.forward_cached(ds::ConstMatrixView(x.data(), 1, e), 1, cache, ds::MatrixView(out.data(), 1, e), ws);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["kv_MB"] = static_cast<double>(cache.bytes_per_token() * ctx) / 1e6;
  state.counters["kv_bytes_per_token"] = static_cast<double>(cache.bytes_per_token());
  // Five E x E products for the one token, then QK^T and PV over the ctx cached tokens;
  // bytes: the five weight matrices and the whole cache.
  roofline_counters(state, 2.0 * 5 * e * e + 4.0 * static_cast<double>(ctx) * e,
                    5.0 * e * e * sizeof(float) + static_cast<double>(cache.bytes_per_token() * ctx));
  label(state);
}

// One decoding step's append to a layer's cache (one token, every head), in the demo
// model's shape: 32 heads of 8. Each head's d values land in d rows (transposed, for the
// kernels), so the step writes to about 2d lines per head whatever the element type;
// INT8 caches also find each head's (or the token's) scale and quantize. The cache is
// cleared when full (clearing only resets its length).
void bm_append(benchmark::State& state, nn::KVDType dtype) {
  ds::set_num_threads(1);
  const std::size_t h = 32, d = 8, e = h * d, ctx = 256;
  nn::KVCache cache(1, h, d, ctx, dtype);
  const auto k = normal(ctx * e, 1.0f, 30), v = normal(ctx * e, 1.0f, 31);
  std::size_t t = 0;
  for (auto _ : state) {
    if (t == ctx) {
      cache.clear();
      t = 0;
    }
    cache.append(ds::ConstMatrixView(k.data() + t * e, 1, e),
                 ds::ConstMatrixView(v.data() + t * e, 1, e));
    ++t;
    benchmark::ClobberMemory();
  }
  state.counters["kv_bytes_per_token"] = static_cast<double>(cache.bytes_per_token());
  label(state);
}

int register_attention_benchmarks() {
  for (std::size_t h : {8u, 64u}) {
    for (std::size_t l : {128u, 512u, 2048u, 8192u, 16384u}) {
      for (int t : {1, 2}) {
        const std::string suffix =
            "/E512/H" + std::to_string(h) + "/L" + std::to_string(l) + "/threads:" + std::to_string(t);
        // Naive holds one [L, L] score matrix per thread: 1 GiB per thread at L = 16384, and
        // 64 GiB if all 64 heads' scores existed at once. It stops at 8192 (256 MiB each).
        if (l <= 8192) {
          benchmark::RegisterBenchmark(("BM_Attention/naive" + suffix).c_str(), [=](benchmark::State& st) {
            bm_core(st, true, h, l, t);
          })->UseRealTime()->Unit(benchmark::kMillisecond);
        }
        benchmark::RegisterBenchmark(("BM_Attention/streaming" + suffix).c_str(), [=](benchmark::State& st) {
          bm_core(st, false, h, l, t);
        })->UseRealTime()->Unit(benchmark::kMillisecond);
        if (l > 8192) continue;
        benchmark::RegisterBenchmark(("BM_Attention/gated_output" + suffix).c_str(), [=](benchmark::State& st) {
          bm_layer(st, -1, h, l, t);
        })->UseRealTime()->Unit(benchmark::kMillisecond);
        for (int skip : {0, 25, 50, 75}) {
          const std::string name = "BM_Attention/gated_head@skip" + std::to_string(skip) + suffix;
          benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) {
            bm_layer(st, skip, h, l, t);
          })->UseRealTime()->Unit(benchmark::kMillisecond);
          if (skip < 50) continue;
          const std::string scattered = "BM_Attention/gated_head_scattered@skip" + std::to_string(skip) + suffix;
          benchmark::RegisterBenchmark(scattered.c_str(), [=](benchmark::State& st) {
            bm_layer(st, skip, h, l, t, true);
          })->UseRealTime()->Unit(benchmark::kMillisecond);
        }
      }
    }
  }
  for (std::size_t ctx : {160u, 1024u, 16384u}) {
    for (auto [name, dtype] :
         {std::pair{"f32kv", nn::KVDType::F32}, std::pair{"i8kv", nn::KVDType::I8},
          std::pair{"i8compactkv", nn::KVDType::I8Compact}}) {
      const std::string n = std::string("BM_AttentionDecode/") + name + "/E512/H64/ctx" + std::to_string(ctx);
      benchmark::RegisterBenchmark(n.c_str(), [=](benchmark::State& st) {
        bm_decode(st, dtype, ctx);
      })->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
  }
  for (auto [name, dtype] :
       {std::pair{"f32kv", nn::KVDType::F32}, std::pair{"i8kv", nn::KVDType::I8},
        std::pair{"i8compactkv", nn::KVDType::I8Compact}}) {
    benchmark::RegisterBenchmark((std::string("BM_KVAppend/") + name + "/E256/H32").c_str(),
                                 [=](benchmark::State& st) { bm_append(st, dtype); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  return 0;
}

const int attention_registered = register_attention_benchmarks();

}  // namespace
