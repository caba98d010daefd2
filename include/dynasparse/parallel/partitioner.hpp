// SPDX-License-Identifier: Apache-2.0
// Partitioner: chooses tensor-, pipeline- and data-parallel degrees, balanced pipeline
// stages and each rank's shard from a cost model of the model, the devices and the links.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "dynasparse/error.hpp"
#include "dynasparse/model/model_config.hpp"
#include "dynasparse/parallel/plan.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

/// Per-layer costs of a ModelConfig, with weights of `bytes_per_param` (4 for FP32, about
/// 1 for INT8, density x that for group-sparse layers). FLOPs count the projections, the
/// FFN and the attention over `context` tokens.
inline ModelCost costs_from_config(const ModelConfig& c, double bytes_per_param, double context) {
  ModelCost m;
  const double h = static_cast<double>(c.hidden), f = static_cast<double>(c.ffn);
  const double gate = c.gate == GatePosition::None ? 0.0 : (c.gate_granularity == HeadGate::Headwise
                                                                 ? h * static_cast<double>(c.num_heads())
                                                                 : h * h);
  const double params = 4 * h * h + gate + 2 * h * f;
  for (std::size_t l = 0; l < c.layers; ++l) {
    LayerCost lc;
    lc.param_bytes = params * bytes_per_param;
    lc.flops_per_token = 2 * params + 4 * h * context;
    lc.kv_bytes_per_token = 2 * h * 4;
    m.layers.push_back(lc);
  }
  m.embedding_bytes = static_cast<double>(c.vocab) * h * bytes_per_param * (c.tied_lm_head ? 1 : 2);
  m.hidden_bytes_per_token = h * 4;
  m.num_heads = c.num_heads();
  m.name = "config";
  return m;
}

namespace detail {

// Ring all-reduce of `bytes` over n ranks: 2 (n - 1) steps of bytes / n each.
inline double allreduce_seconds(double bytes, std::size_t n, const Link& link) {
  if (n <= 1) return 0.0;
  const double k = static_cast<double>(n);
  return 2.0 * (k - 1.0) / k * bytes / link.bandwidth + 2.0 * (k - 1.0) * link.latency;
}

// Contiguous split of per-layer costs into `parts` stages minimizing the largest stage cost
// (the linear partition problem, solved exactly by dynamic programming).
inline std::vector<std::size_t> balance(const std::vector<double>& cost, std::size_t parts) {
  const std::size_t n = cost.size();
  std::vector<double> prefix(n + 1, 0.0);
  for (std::size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + cost[i];
  const double inf = std::numeric_limits<double>::infinity();
  // best[p][i]: min over splits of the first i layers into p stages of the largest stage.
  std::vector<std::vector<double>> best(parts + 1, std::vector<double>(n + 1, inf));
  std::vector<std::vector<std::size_t>> cut(parts + 1, std::vector<std::size_t>(n + 1, 0));
  best[0][0] = 0.0;
  for (std::size_t p = 1; p <= parts; ++p) {
    for (std::size_t i = p; i <= n; ++i) {
      for (std::size_t j = p - 1; j < i; ++j) {
        const double v = std::max(best[p - 1][j], prefix[i] - prefix[j]);
        if (v < best[p][i]) {
          best[p][i] = v;
          cut[p][i] = j;
        }
      }
    }
  }
  std::vector<std::size_t> bounds(parts + 1, n);
  std::size_t i = n;
  for (std::size_t p = parts; p > 0; --p) {
    bounds[p] = i;
    i = cut[p][i];
  }
  bounds[0] = 0;
  return bounds;
}

}  // namespace detail

/// The partitioner's answer: the best plan and every candidate it compared (including
/// the infeasible ones, with their reasons).
struct Partition {
  Plan best;
  std::vector<Plan> candidates;
};

/// Evaluates one TP x PP x DP shape on the cluster. Ranks are laid out TP-innermost, so a
/// TP group shares a node whenever it fits in one. The cost model:
/// - compute: a stage's FLOPs per token / (TP x device FLOP/s) of its slowest device;
/// - memory (devices with memory_bandwidth): each stage slot reads the rank's weights (the
///   stage's / TP) once and the KV cache of the sequences in flight (context of prompt +
///   decode / 2 tokens on average); a slot takes the longer of compute and these reads. The
///   devices busy at once (TP x DP x the stages that micro-batches keep busy, at most a
///   node's devices) share node_memory_bandwidth equally;
/// - tensor parallel: two all-reduces of the hidden state per layer (after out_proj and
///   FFN-down), ring algorithm on the intra- or inter-node link;
/// - pipeline: one hidden-state transfer per stage boundary; with m micro-batches a batch
///   takes (m + pp - 1) stage times (the bubble);
/// - memory: the stage's weights / TP, its KV cache for batch / dp sequences of
///   prompt + decode tokens / TP, embeddings on the first stage (and the LM head's on the
///   last).
inline Plan evaluate(const ModelCost& model, const Cluster& cluster, const Workload& work, std::size_t tp,
                     std::size_t pp, std::size_t dp) {
  Plan plan;
  plan.tp = tp;
  plan.pp = pp;
  plan.dp = dp;
  const std::size_t world = cluster.devices.size();
  if (tp * pp * dp != world) {
    plan.feasible = false;
    plan.reason = "tp x pp x dp = " + std::to_string(tp * pp * dp) + " != world size " + std::to_string(world);
    return plan;
  }
  if (model.num_heads % tp != 0) {
    plan.feasible = false;
    plan.reason = "tensor-parallel degree " + std::to_string(tp) + " does not divide " +
                  std::to_string(model.num_heads) + " heads";
    return plan;
  }
  if (pp > model.layers.size()) {
    plan.feasible = false;
    plan.reason = "more pipeline stages than layers";
    return plan;
  }
  std::vector<double> flops;
  for (const auto& l : model.layers) flops.push_back(l.flops_per_token);
  plan.stage_first_layer = detail::balance(flops, pp);
  std::size_t per_node = 0;
  for (const auto& d : cluster.devices) per_node = std::max<std::size_t>(per_node, static_cast<std::size_t>(
      std::count_if(cluster.devices.begin(), cluster.devices.end(), [&](const Device& e) { return e.node == d.node; })));
  const Link& tp_link = tp <= per_node ? cluster.intra_node : cluster.inter_node;
  // Sequences on the busiest replica: replicas beyond the batch size sit idle, so data
  // parallelism adds nothing to a batch of one.
  const double batch = static_cast<double>(std::max<std::size_t>(1, work.batch));
  const double seqs = std::ceil(batch / static_cast<double>(dp));
  const double micro = static_cast<double>(std::max<std::size_t>(1, std::min(work.micro_batches, work.batch)));
  const double tokens_in_flight = seqs / micro;  // decode: one token per sequence per step
  const double ctx = static_cast<double>(work.prompt_len + work.decode_len);
  const double read_ctx = static_cast<double>(work.prompt_len) + static_cast<double>(work.decode_len) / 2.0;
  double stage_max = 0.0, latency = 0.0, tp_time_total = 0.0, compute_total = 0.0;
  std::size_t memory_bound_stages = 0;
  for (std::size_t s = 0; s < pp; ++s) {
    const std::size_t l0 = plan.stage_first_layer[s], l1 = plan.stage_first_layer[s + 1];
    double f = 0, params = 0, kv = 0;
    for (std::size_t l = l0; l < l1; ++l) {
      f += model.layers[l].flops_per_token;
      params += model.layers[l].param_bytes;
      kv += model.layers[l].kv_bytes_per_token;
    }
    double slowest = std::numeric_limits<double>::infinity(), narrowest = std::numeric_limits<double>::infinity();
    for (std::size_t d = 0; d < dp; ++d) {
      for (std::size_t t = 0; t < tp; ++t) {
        const Device& dev = cluster.devices[(d * pp + s) * tp + t];
        slowest = std::min(slowest, dev.flops);
        if (dev.memory_bandwidth > 0) narrowest = std::min(narrowest, dev.memory_bandwidth);
      }
    }
    const double flops_time = f * tokens_in_flight / (static_cast<double>(tp) * slowest);
    // Sequences in one slot each read their own cache: tokens_in_flight of them at decode.
    const double read_bytes = (params + kv * tokens_in_flight * read_ctx) / static_cast<double>(tp);
    if (cluster.node_memory_bandwidth > 0 && std::isfinite(narrowest)) {
      const double busy = std::min(static_cast<double>(per_node),
                                   static_cast<double>(tp * dp) * std::min(static_cast<double>(pp), micro));
      narrowest = std::min(narrowest, cluster.node_memory_bandwidth / std::max(1.0, busy));
    }
    const double memory_time = std::isfinite(narrowest) ? read_bytes / narrowest : 0.0;
    const double compute = std::max(flops_time, memory_time);
    memory_bound_stages += memory_time > flops_time ? 1 : 0;
    const double comm = 2.0 * static_cast<double>(l1 - l0) *
                        detail::allreduce_seconds(model.hidden_bytes_per_token * tokens_in_flight, tp, tp_link);
    double transfer = 0.0;
    if (s + 1 < pp) {
      const Device& a = cluster.devices[s * tp];
      const Device& b = cluster.devices[(s + 1) * tp];
      const Link& link = a.node == b.node ? cluster.intra_node : cluster.inter_node;
      transfer = model.hidden_bytes_per_token * tokens_in_flight / link.bandwidth + link.latency;
    }
    const double stage_time = compute + comm + transfer;
    stage_max = std::max(stage_max, stage_time);
    latency += stage_time;
    tp_time_total += comm;
    compute_total += compute;
    double mem = params / static_cast<double>(tp) + kv * seqs * ctx / static_cast<double>(tp) +
                 model.hidden_bytes_per_token * seqs * ctx;  // activations of one layer at prefill
    if (s == 0 || s + 1 == pp) mem += model.embedding_bytes / (pp == 1 ? 1.0 : 2.0);
    for (std::size_t d = 0; d < dp; ++d) {
      for (std::size_t t = 0; t < tp; ++t) {
        RankShard r;
        r.rank = (d * pp + s) * tp + t;
        r.dp = d;
        r.stage = s;
        r.tp = t;
        r.first_layer = l0;
        r.last_layer = l1;
        r.head_count = model.num_heads / tp;
        r.first_head = t * r.head_count;
        r.memory_bytes = mem;
        plan.ranks.push_back(r);
        if (mem > cluster.devices[r.rank].memory_bytes && plan.feasible) {
          plan.feasible = false;
          plan.reason = "rank " + std::to_string(r.rank) + " needs " + std::to_string(mem / 1e9) +
                        " GB, device has " + std::to_string(cluster.devices[r.rank].memory_bytes / 1e9) + " GB";
        }
      }
    }
    plan.max_memory_bytes = std::max(plan.max_memory_bytes, mem);
  }
  std::sort(plan.ranks.begin(), plan.ranks.end(), [](const RankShard& a, const RankShard& b) { return a.rank < b.rank; });
  // One decode step of the whole batch on a replica: (m + pp - 1) stage slots.
  const double step = (micro + static_cast<double>(pp) - 1.0) * stage_max;
  plan.time_per_token = latency;
  plan.tokens_per_second = batch / step;
  if (tp_time_total > 0.5 * compute_total) {
    plan.bound = "tp-communication";
  } else if (pp > 1 && static_cast<double>(pp) - 1.0 > micro) {
    plan.bound = "pipeline-bubble";
  } else if (2 * memory_bound_stages > pp) {
    plan.bound = "memory-bandwidth";
  } else {
    plan.bound = "compute";
  }
  return plan;
}

/// The plan of a chosen shape, without a cost model: layers in pp contiguous stages balanced
/// by FLOPs (as even as the layer count allows), ranks TP-innermost, as evaluate() lays them
/// out; predictions assume unit-speed devices, memory is not checked. For running a given
/// shape (tests, benchmarks, a user's choice). @throws ConfigError with evaluate()'s reason
/// when the model cannot take the shape (TP not dividing the heads, more stages than layers)
/// or a degree is 0.
inline Plan fixed_plan(const ModelConfig& c, std::size_t tp, std::size_t pp, std::size_t dp = 1) {
  if (tp == 0 || pp == 0 || dp == 0) {
    dynasparse::detail::fail<ConfigError>("parallel", "plan degrees must be positive", "tp, pp, dp >= 1",
                                          "tp=" + std::to_string(tp) + " pp=" + std::to_string(pp) +
                                              " dp=" + std::to_string(dp),
                                          "fixed_plan");
  }
  Cluster cluster;
  cluster.devices.assign(tp * pp * dp, Device{std::numeric_limits<double>::infinity(), 1.0, 0});
  Plan plan = evaluate(costs_from_config(c, 4.0, 1.0), cluster, Workload{}, tp, pp, dp);
  if (!plan.feasible) {
    dynasparse::detail::fail<ConfigError>("parallel", "the model cannot take this plan shape", "a feasible shape",
                                          plan.shape() + ": " + plan.reason, "fixed_plan");
  }
  return plan;
}

/// Compares every TP (dividing the head count) x PP (up to the layer count) x DP shape of
/// the world size, pure data parallelism included, and returns the best feasible one for
/// the objective, with all candidates. @throws ConfigError naming the tightest candidate's
/// reason if none fits in memory, or if the cluster or model is empty.
inline Partition partition(const ModelCost& model, const Cluster& cluster, const Workload& work) {
  const std::size_t world = cluster.devices.size();
  if (world == 0 || model.layers.empty()) {
    dynasparse::detail::fail<ConfigError>("parallel", "nothing to partition", "devices and layers",
                                          std::to_string(world) + " devices, " + std::to_string(model.layers.size()) +
                                              " layers",
                                          model.name);
  }
  Partition out;
  for (std::size_t tp = 1; tp <= world; ++tp) {
    if (world % tp) continue;
    for (std::size_t pp = 1; pp <= world / tp; ++pp) {
      if ((world / tp) % pp) continue;
      out.candidates.push_back(evaluate(model, cluster, work, tp, pp, world / tp / pp));
    }
  }
  const Plan* best = nullptr;
  for (const Plan& p : out.candidates) {
    if (!p.feasible) continue;
    const bool better = !best || (work.objective == Objective::Throughput
                                      ? p.tokens_per_second > best->tokens_per_second
                                      : p.time_per_token < best->time_per_token);
    if (better) best = &p;
  }
  if (!best) {
    const Plan* least = &out.candidates.front();
    for (const Plan& p : out.candidates) {
      if (p.max_memory_bytes > 0 && (least->max_memory_bytes == 0 || p.max_memory_bytes < least->max_memory_bytes)) least = &p;
    }
    dynasparse::detail::fail<ConfigError>("parallel", "no plan fits in memory", "a feasible plan",
                                          least->shape() + ": " + least->reason, model.name);
  }
  out.best = *best;
  return out;
}

}  // namespace parallel
DYNASPARSE_NAMESPACE_END
