// SPDX-License-Identifier: Apache-2.0
// The plain-data description of a parallel deployment: what the Partitioner chooses and the
// executors run. Testable without threads or devices.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "dynasparse/config.hpp"

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
  double flops = 0;  ///< sustained FLOP/s on this model's kernels
  std::size_t node = 0;  ///< devices with the same node share the fast link
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
  double time_per_token = 0;    ///< predicted seconds per decoded token of one sequence (latency)
  double tokens_per_second = 0; ///< predicted decode throughput of the whole deployment
  double max_memory_bytes = 0;  ///< the largest rank's memory
  bool feasible = true;
  std::string bound;            ///< what limits it: "compute", "tp-communication", "pipeline", ...
  std::string reason;           ///< why it was rejected (when !feasible)

  std::size_t world() const noexcept { return tp * pp * dp; }
  /// e.g. "tp=8 pp=2 dp=1".
  std::string shape() const {
    return "tp=" + std::to_string(tp) + " pp=" + std::to_string(pp) + " dp=" + std::to_string(dp);
  }
};

}  // namespace parallel
DYNASPARSE_NAMESPACE_END
