// SPDX-License-Identifier: Apache-2.0
// The plain-data description of a parallel deployment: what the Partitioner chooses and the
// executors run. Testable without threads or devices.
#pragma once

#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dynasparse/config.hpp"
#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

/// Cost of one transformer layer, per token of the workload.
struct LayerCost {
  double flops_per_token = 0;     ///< forward FLOPs (2 per multiply-add)
  double param_bytes = 0;         ///< weight bytes in the layer's format
  double kv_bytes_per_token = 0;  ///< KV-cache bytes one token adds to this layer
};

/// What the partitioner needs to know about a model.
struct ModelCost {
  std::vector<LayerCost> layers;
  double embedding_bytes = 0;      ///< embedding + head weights (kept on the first/last stage)
  double hidden_bytes_per_token = 0;  ///< activation bytes one token carries between layers
  std::size_t num_heads = 1;       ///< tensor parallelism keeps heads whole: TP must divide it
  std::string name = "model";
};

/// One device (a CPU socket, a phone, a GPU): memory and compute speed.
struct Device {
  double memory_bytes = 0;
  /// Sustained FLOP/s on this model's kernels, measured while the other devices of the node
  /// compute too (cores of one CPU share its memory bandwidth and clock). One forward pass
  /// gives it: costs_from_config()'s FLOPs per token x tokens / seconds. With it, the
  /// predicted prefill times of bench/parallel_bench.cpp's 2-rank plans come within 10% of
  /// the measured ones (AVX-512 core: about 85 GFLOP/s in FP32).
  double flops = 0;
  std::size_t node = 0;  ///< devices with the same node share the fast link
  /// Bytes per second the device streams its weights and KV cache at when it reads alone: a
  /// decoding step reads every weight of the stage once, so few tokens in flight are bound
  /// by it, not by FLOPs. Cluster::node_memory_bandwidth caps what devices reading at the
  /// same time share. 0 leaves memory traffic out of the predictions.
  double memory_bandwidth = 0;
};

/// A link: bandwidth in bytes per second, latency in seconds.
struct Link {
  double bandwidth = 1e9;
  double latency = 1e-5;
};

/// The machine: devices and the links within and between nodes.
struct Cluster {
  std::vector<Device> devices;
  Link intra_node;
  Link inter_node;
  /// Bytes per second all the devices of one node read at together (cores of one CPU share
  /// its memory): devices busy at the same time get at most an equal share of it. 0: no
  /// shared limit.
  double node_memory_bandwidth = 0;
};

/// What the deployment must serve, and what to optimize.
enum class Objective { Latency, Throughput };
struct Workload {
  std::size_t batch = 1;          ///< sequences processed together
  std::size_t prompt_len = 128;
  std::size_t decode_len = 128;
  std::size_t micro_batches = 1;  ///< pipeline micro-batches per batch (<= batch)
  Objective objective = Objective::Throughput;
};

/// One rank's share.
struct RankShard {
  std::size_t rank = 0;
  std::size_t dp = 0, stage = 0, tp = 0;  ///< replica, pipeline stage, tensor-parallel index
  std::size_t first_layer = 0, last_layer = 0;  ///< [first, last) layers of its stage
  std::size_t first_head = 0, head_count = 0;   ///< its heads (columns of Q/K/V, gate, FFN-up)
  double memory_bytes = 0;                      ///< predicted: weights + KV cache + activations
};

/// A chosen (or rejected) configuration: TP x PP x DP = world size.
struct Plan {
  std::size_t tp = 1, pp = 1, dp = 1;
  std::vector<std::size_t> stage_first_layer;  ///< pp + 1 boundaries: stage s has layers [b[s], b[s+1])
  std::vector<RankShard> ranks;
  /// Predicted seconds per decoded token of one sequence (latency): each stage takes the
  /// longer of its compute and, when the devices give memory_bandwidth, its weight and KV
  /// reads, plus its links. Without memory_bandwidth a CPU decode is predicted several times
  /// too fast (it reads every weight once per step).
  double time_per_token = 0;
  double tokens_per_second = 0; ///< predicted decode throughput of the whole deployment
  double max_memory_bytes = 0;  ///< the largest rank's memory
  bool feasible = true;
  std::string bound;            ///< what limits it: "compute", "memory-bandwidth", "tp-communication", "pipeline-bubble"
  std::string reason;           ///< why it was rejected (when !feasible)

  std::size_t world() const noexcept { return tp * pp * dp; }
  /// e.g. "tp=8 pp=2 dp=1".
  std::string shape() const {
    return "tp=" + std::to_string(tp) + " pp=" + std::to_string(pp) + " dp=" + std::to_string(dp);
  }
};

namespace detail {

// Field readers of the plan and devices files: every error names the file and the field.
inline void json_fail(const std::string& source, const std::string& field, const std::string& expected,
                      const nlohmann::json& got) {
  ::dynasparse::detail::fail<FormatError>("parallel", "bad field", expected, got.is_null() ? "nothing" : got.dump(),
                                          source + ": " + field);
}
inline void json_only_keys(const nlohmann::json& j, std::initializer_list<const char*> keys, const std::string& source,
                           const std::string& where) {
  if (!j.is_object()) json_fail(source, where, "a JSON object", j);
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : keys) known = known || it.key() == k;
    if (!known) {
      std::string list;
      for (const char* k : keys) list += (list.empty() ? "" : ", ") + std::string(k);
      ::dynasparse::detail::fail<FormatError>("parallel", "unknown field", "one of " + list, "\"" + it.key() + "\"",
                                              source + ": " + (where.empty() ? it.key() : where + "." + it.key()));
    }
  }
}
inline std::size_t json_size(const nlohmann::json& j, const char* key, const std::string& source,
                             const std::string& where, std::size_t lo, bool required = true, std::size_t fallback = 0) {
  const std::string field = where.empty() ? key : where + "." + key;
  if (!j.contains(key)) {
    if (required) json_fail(source, field, "an integer >= " + std::to_string(lo), nullptr);
    return fallback;
  }
  const nlohmann::json& v = j.at(key);
  if (!v.is_number_integer() || v.get<long long>() < static_cast<long long>(lo)) {
    json_fail(source, field, "an integer >= " + std::to_string(lo), v);
  }
  return v.get<std::size_t>();
}
inline double json_positive(const nlohmann::json& j, const char* key, const std::string& source,
                            const std::string& where, bool allow_zero = false) {
  const std::string field = where.empty() ? key : where + "." + key;
  const nlohmann::json v = j.contains(key) ? j.at(key) : nlohmann::json();
  const bool ok = v.is_number() && std::isfinite(v.get<double>()) && (allow_zero ? v.get<double>() >= 0 : v.get<double>() > 0);
  if (!ok) json_fail(source, field, allow_zero ? "a number >= 0" : "a number > 0", v);
  return v.get<double>();
}

}  // namespace detail

/// A devices file (`dynasparse plan --devices`), the Cluster it describes:
/// ```
/// { "devices": [ {"memory_bytes": 8e9, "flops": 5e10, "memory_bandwidth": 2e10,
///                 "count": 2, "node": 0} ],
///   "devices_per_node": 2, "node_memory_bandwidth": 3e10,
///   "links": { "intra_node": {"bandwidth": 1e10, "latency": 2e-6},
///              "inter_node": {"bandwidth": 1.25e9, "latency": 2e-5} } }
/// ```
/// - devices (required, non-empty): memory_bytes (bytes) and flops (sustained FLOP/s on
///   this model's kernels) are required and positive; memory_bandwidth (optional, bytes/s,
///   > 0; Device::memory_bandwidth) bounds decoding; count (default 1) repeats the entry;
///   node (optional) places it on a node.
/// - devices_per_node (optional): a device without "node" sits on node i / devices_per_node
///   (i counted over the expanded list); without it, on node 0.
/// - node_memory_bandwidth (optional, bytes/s, > 0): Cluster::node_memory_bandwidth.
/// - links: bandwidth in bytes per second (> 0), latency in seconds (>= 0). intra_node is
///   required; inter_node is required when the devices span more than one node.
/// Unknown fields are errors (a misspelt field would otherwise silently take a default).
/// @throws FormatError naming `source` and the field, with expected and actual values.
inline Cluster cluster_from_json(const nlohmann::json& j, const std::string& source = "devices") {
  using detail::json_fail;
  detail::json_only_keys(j, {"devices", "devices_per_node", "links", "node_memory_bandwidth", "comment"}, source, "");
  Cluster c;
  if (!j.contains("devices") || !j.at("devices").is_array() || j.at("devices").empty()) {
    json_fail(source, "devices", "a non-empty array of devices", j.contains("devices") ? j.at("devices") : nlohmann::json());
  }
  const std::size_t per_node = detail::json_size(j, "devices_per_node", source, "", 1, false, 0);
  std::size_t index = 0;
  for (std::size_t i = 0; i < j.at("devices").size(); ++i) {
    const nlohmann::json& d = j.at("devices")[i];
    const std::string where = "devices[" + std::to_string(i) + "]";
    detail::json_only_keys(d, {"memory_bytes", "flops", "memory_bandwidth", "count", "node", "comment"}, source,
                           where);
    Device dev;
    dev.memory_bytes = detail::json_positive(d, "memory_bytes", source, where);
    dev.flops = detail::json_positive(d, "flops", source, where);
    if (d.contains("memory_bandwidth")) dev.memory_bandwidth = detail::json_positive(d, "memory_bandwidth", source, where);
    const std::size_t count = detail::json_size(d, "count", source, where, 1, false, 1);
    if (count > 1000000) json_fail(source, where + ".count", "at most 1000000", d.at("count"));
    const bool named = d.contains("node");
    const std::size_t node = named ? detail::json_size(d, "node", source, where, 0) : 0;
    for (std::size_t k = 0; k < count; ++k, ++index) {
      dev.node = named ? node : (per_node ? index / per_node : 0);
      c.devices.push_back(dev);
    }
  }
  std::size_t nodes = 0;
  for (const Device& d : c.devices) nodes = std::max(nodes, d.node + 1);
  if (!j.contains("links")) json_fail(source, "links", "an object with intra_node (and inter_node)", nullptr);
  const nlohmann::json& links = j.at("links");
  detail::json_only_keys(links, {"intra_node", "inter_node"}, source, "links");
  auto link = [&](const char* key, bool required, Link fallback) {
    if (!links.contains(key)) {
      if (required) json_fail(source, std::string("links.") + key, "{\"bandwidth\": bytes/s, \"latency\": s}", nullptr);
      return fallback;
    }
    const std::string where = std::string("links.") + key;
    detail::json_only_keys(links.at(key), {"bandwidth", "latency"}, source, where);
    Link l;
    l.bandwidth = detail::json_positive(links.at(key), "bandwidth", source, where);
    l.latency = detail::json_positive(links.at(key), "latency", source, where, true);
    return l;
  };
  c.intra_node = link("intra_node", true, Link{});
  if (j.contains("node_memory_bandwidth")) {
    c.node_memory_bandwidth = detail::json_positive(j, "node_memory_bandwidth", source, "");
  }
  c.inter_node = link("inter_node", nodes > 1, c.intra_node);
  return c;
}

/// A plan as JSON: {"format": "dynasparse.plan", "version": 1, tp, pp, dp,
/// stage_first_layer, ranks: [{rank, dp, stage, tp, first_layer, last_layer, first_head,
/// head_count, memory_bytes}], predicted: {time_per_token_s, tokens_per_second,
/// max_memory_bytes, bound}, feasible, reason}. plan_from_json() reads it back.
inline nlohmann::json to_json(const Plan& p) {
  nlohmann::json ranks = nlohmann::json::array();
  for (const RankShard& r : p.ranks) {
    ranks.push_back({{"rank", r.rank}, {"dp", r.dp}, {"stage", r.stage}, {"tp", r.tp}, {"first_layer", r.first_layer},
                     {"last_layer", r.last_layer}, {"first_head", r.first_head}, {"head_count", r.head_count},
                     {"memory_bytes", r.memory_bytes}});
  }
  nlohmann::json j = {{"format", "dynasparse.plan"}, {"version", 1},   {"tp", p.tp}, {"pp", p.pp}, {"dp", p.dp},
                      {"stage_first_layer", p.stage_first_layer},       {"ranks", ranks},
                      {"predicted", {{"time_per_token_s", p.time_per_token},
                                     {"tokens_per_second", p.tokens_per_second},
                                     {"max_memory_bytes", p.max_memory_bytes},
                                     {"bound", p.bound}}},
                      {"feasible", p.feasible}};
  if (!p.reason.empty()) j["reason"] = p.reason;
  return j;
}

/// Reads a plan written by to_json(Plan) (other top-level fields, such as the CLI's "model",
/// "workload" and "candidates", are left to the caller). Only the shape is checked here
/// (positive degrees, pp + 1 increasing stage boundaries, one rank entry per rank if any);
/// place_of() checks it against a model and a world size.
/// @throws FormatError naming `source` and the field.
inline Plan plan_from_json(const nlohmann::json& j, const std::string& source = "plan") {
  using detail::json_fail;
  if (!j.is_object()) json_fail(source, "(top level)", "a JSON object", j);
  const nlohmann::json format = j.contains("format") ? j.at("format") : nlohmann::json();
  if (!format.is_string() || format.get<std::string>() != "dynasparse.plan") {
    json_fail(source, "format", "\"dynasparse.plan\"", format);
  }
  if (detail::json_size(j, "version", source, "", 1) != 1) json_fail(source, "version", "1", j.at("version"));
  Plan p;
  p.tp = detail::json_size(j, "tp", source, "", 1);
  p.pp = detail::json_size(j, "pp", source, "", 1);
  p.dp = detail::json_size(j, "dp", source, "", 1);
  const nlohmann::json b = j.contains("stage_first_layer") ? j.at("stage_first_layer") : nlohmann::json();
  if (!b.is_array() || b.size() != p.pp + 1) {
    json_fail(source, "stage_first_layer", "an array of pp + 1 = " + std::to_string(p.pp + 1) + " layer indices", b);
  }
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (!b[i].is_number_integer() || b[i].get<long long>() < 0 ||
        (i > 0 && b[i].get<long long>() <= b[i - 1].get<long long>())) {
      json_fail(source, "stage_first_layer[" + std::to_string(i) + "]", "increasing integers from 0", b);
    }
    p.stage_first_layer.push_back(b[i].get<std::size_t>());
  }
  if (j.contains("ranks")) {
    const nlohmann::json& rs = j.at("ranks");
    if (!rs.is_array() || (!rs.empty() && rs.size() != p.world())) {
      json_fail(source, "ranks", "an array of tp x pp x dp = " + std::to_string(p.world()) + " entries", rs);
    }
    for (std::size_t i = 0; i < rs.size(); ++i) {
      const std::string where = "ranks[" + std::to_string(i) + "]";
      RankShard r;
      r.rank = detail::json_size(rs[i], "rank", source, where, 0);
      r.dp = detail::json_size(rs[i], "dp", source, where, 0);
      r.stage = detail::json_size(rs[i], "stage", source, where, 0);
      r.tp = detail::json_size(rs[i], "tp", source, where, 0);
      r.first_layer = detail::json_size(rs[i], "first_layer", source, where, 0);
      r.last_layer = detail::json_size(rs[i], "last_layer", source, where, 0);
      r.first_head = detail::json_size(rs[i], "first_head", source, where, 0);
      r.head_count = detail::json_size(rs[i], "head_count", source, where, 1);
      if (rs[i].contains("memory_bytes")) r.memory_bytes = detail::json_positive(rs[i], "memory_bytes", source, where, true);
      p.ranks.push_back(r);
    }
  }
  // The predictions are informative: read when well-formed, never needed to run the plan.
  if (j.contains("predicted") && j.at("predicted").is_object()) {
    const nlohmann::json& q = j.at("predicted");
    auto number = [&](const char* k) { return q.contains(k) && q.at(k).is_number() ? q.at(k).get<double>() : 0.0; };
    p.time_per_token = number("time_per_token_s");
    p.tokens_per_second = number("tokens_per_second");
    p.max_memory_bytes = number("max_memory_bytes");
    if (q.contains("bound") && q.at("bound").is_string()) p.bound = q.at("bound").get<std::string>();
  }
  if (j.contains("feasible") && j.at("feasible").is_boolean()) p.feasible = j.at("feasible").get<bool>();
  if (j.contains("reason") && j.at("reason").is_string()) p.reason = j.at("reason").get<std::string>();
  return p;
}

}  // namespace parallel
DYNASPARSE_NAMESPACE_END
