// SPDX-License-Identifier: Apache-2.0
// Executor: runs a Plan's forward pass (tensor parallel, pipeline parallel with micro-batches,
// or both) on one rank, over a Communicator; run_forward() does it on in-process threads.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/model/model.hpp"
#include "dynasparse/nn/gated_attention.hpp"
#include "dynasparse/nn/kv_cache.hpp"
#include "dynasparse/parallel/communicator.hpp"
#include "dynasparse/parallel/plan.hpp"
#include "dynasparse/parallel/shard.hpp"
#include "dynasparse/parallel/thread_communicator.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

namespace detail {

// Rows a micro-batch boundary falls on when the chunks are long enough: a multiple of the
// register-tile heights of the linear kernels (float: 6 or 12 rows on AVX-512 and NEON, 3 or
// 6 on AVX2; int8: 4 or 6), whose leftover rows each cost nearly a whole tile (the tile's
// weights are streamed again for them). On the E1024 pipeline bench (AVX-512, one rank),
// 8 chunks of 64 rows took 8-11% longer than one pass of 512 rows, chunks of 60 to 72 rows
// 0-5%; 16 chunks of 32 rows 17-20%, of 24 to 36 rows 11-13%.
inline constexpr std::size_t micro_batch_granule = 12;

/// Row boundaries of m micro-batches of n rows (m + 1 values, 0 to n; needs 1 <= m <= n).
/// With at least 2 granules per chunk, every chunk but one is a whole number of granules,
/// as equal as that allows, the larger first: a pipeline takes the sum of its chunks plus its
/// largest one, and later chunks attend to more cached tokens. The one other chunk (the
/// first of the smaller ones) takes the leftover rows. With fewer rows, an even split.
inline std::vector<std::size_t> micro_batch_bounds(std::size_t n, std::size_t m) {
  std::vector<std::size_t> b(m + 1, 0);
  const std::size_t g = micro_batch_granule, granules = n / g;
  if (granules < 2 * m) {
    for (std::size_t c = 0; c <= m; ++c) b[c] = n * c / m;
    return b;
  }
  const std::size_t base = granules / m, extra = granules % m, rest = n % g;
  for (std::size_t c = 0; c < m; ++c) b[c + 1] = b[c] + (base + (c < extra ? 1 : 0)) * g + (c == extra ? rest : 0);
  return b;
}

}  // namespace detail

/// Options of Executor::forward() and decode().
struct ExecutorOptions {
  /// Pipeline micro-batches: the n tokens are cut into this many consecutive chunks that
  /// stream through the stages, so stage s works on chunk c while stage s + 1 works on chunk
  /// c - 1. Chunks after the first attend to the earlier ones through each stage's KV cache,
  /// so micro_batches > 1 needs a causal model (a bidirectional token attends to later ones).
  /// Long chunks are cut at multiples of the kernels' row tiles (detail::micro_batch_bounds),
  /// so they differ in length by up to 12 rows. 1 runs the whole sequence at once
  /// (Model::forward's path).
  std::size_t micro_batches = 1;
  /// Broadcast the logits from the last stage to every rank of the replica (costs one copy of
  /// [n, vocab] per rank). Otherwise only the last stage's ranks write logits.
  bool logits_on_every_rank = false;
};

/// Decoding state of one sequence on one rank: the KV caches of its layers and heads, and
/// the position reached. Made by Executor::new_session(); belongs to that rank's thread.
class ShardSession {
 public:
  std::size_t position() const noexcept { return pos_; }
  const nn::AttentionStats& stats() const noexcept { return stats_; }
  /// Tokens the caches can hold.
  std::size_t capacity() const noexcept { return caches_.empty() ? max_len_ : caches_[0].max_len(); }
  /// KV-cache bytes held by this rank (its layers, its heads).
  std::size_t kv_bytes() const noexcept {
    std::size_t b = 0;
    for (const auto& c : caches_) b += c.bytes();
    return b;
  }
  void reset() noexcept {
    for (auto& c : caches_) c.clear();
    pos_ = 0;
    stats_ = {};
  }

 private:
  friend class Executor;
  std::vector<nn::KVCache> caches_;
  std::size_t pos_ = 0, max_len_ = 0;
  nn::AttentionStats stats_;
};

/// One rank's executor of a ModelShard's plan. Every layer runs as in Model::forward, with
/// the tensor-parallel sums after out_proj and FFN-down done by all_reduce_sum within the
/// stage's group (the same bits on every rank of it), the output gate's columns gathered
/// after that sum, and hidden states passed between stages with send/recv (to the same
/// tensor-parallel index of the next stage). Each replica (dp) runs independently.
///
/// Numerics: with tp = 1 every layer computes exactly what one device computes (pipeline
/// stages only move data), bit for bit at micro_batches = 1. With tp > 1, out_proj and
/// FFN-down sum tp partial products instead of one, a reordered float sum (within a few
/// ulp of the activations per layer). INT8 row-split layers quantize their input slice with
/// its own dynamic alpha (one device uses the whole row's), unless static alphas are set.
class Executor {
 public:
  /// Collective over `world`: every rank constructs its Executor at the same time (it splits
  /// `world` into replica and tensor-parallel groups), with the shard made for its rank.
  /// @throws ConfigError if the shard's plan does not match world.size() (place_of) or the
  /// shard was made for another rank; CommError from the split.
  Executor(const ModelShard& shard, Communicator& world);

  const ModelShard& shard() const noexcept { return *shard_; }
  /// Whether this rank writes logits (the last stage, or every rank with
  /// logits_on_every_rank).
  bool writes_logits(const ExecutorOptions& opt = {}) const noexcept {
    return opt.logits_on_every_rank || shard_->last_stage();
  }

  /// Forward pass of one whole sequence `tokens` [n] (every rank of the replica passes the
  /// same tokens): logits [n, vocab] on the ranks that writes_logits() (others may pass an
  /// empty view). Equals Model::forward within the stated numerics. Returns the attention
  /// statistics of this rank's heads and layers. Sends are buffered (both communicators), so
  /// a rank returns once its own part is done: calls made back to back overlap across the
  /// stages, the first stage starting the next prompt while the last finishes this one,
  /// which is how a pipeline serves a stream of prompts (BM_ParallelPipelineStream).
  /// @throws ShapeError for n beyond max_seq_len or logits of another shape; ConfigError for
  /// micro_batches of 0 or above n; UnsupportedError for micro_batches > 1 on a
  /// bidirectional model; CommError if a peer fails or times out.
  nn::AttentionStats forward(const std::int32_t* tokens, std::size_t n, MatrixView logits,
                             Workspace& ws, const ExecutorOptions& opt = {});

  /// A decoding session for up to max_len tokens (default: the config's maximum).
  ShardSession new_session(std::size_t max_len = 0, nn::KVDType kv = nn::KVDType::F32) const;

  /// Cached decoding (Model::decode): runs n new tokens (prefill, or 1 when generating)
  /// through the sharded KV caches of `s` and writes their logits [n, vocab] on the ranks
  /// that writes_logits(). Micro-batches pipeline a long prefill. Every rank of the replica
  /// calls it with the same tokens. @throws UnsupportedError for a bidirectional model;
  /// ShapeError past the session's capacity; the errors of forward().
  void decode(const std::int32_t* tokens, std::size_t n, ShardSession& s, MatrixView logits,
              Workspace& ws, const ExecutorOptions& opt = {});

 private:
  void check_len(std::size_t n, std::size_t start, std::size_t cap, const char* what) const;
  void check_micro(std::size_t n, const ExecutorOptions& opt) const;

  static void add_into(MatrixView x, ConstMatrixView d) noexcept;

  // One transformer block of local layer l on rows x (replicated within the TP group).
  void layer(std::size_t l, MatrixView x, MatrixView t1, MatrixView t2, Workspace& ws,
             nn::KVCache* cache, nn::AttentionStats& stats);

  // A rank that fails here leaves its peers blocked on it (in a tensor-parallel sum, or in a
  // recv of the next stage): aborting the communicator wakes them at once with this rank's
  // error, whoever runs the threads or processes (ThreadGroup::run and run_or_abort do it
  // too, but an application may not use them).
  void run(const std::int32_t* tokens, std::size_t n, std::size_t start,
           std::vector<nn::KVCache>* caches, MatrixView logits, Workspace& ws,
           const ExecutorOptions& opt, nn::AttentionStats& stats);

  void stream(const std::int32_t* tokens, std::size_t n, std::size_t start,
              std::vector<nn::KVCache>* caches, MatrixView logits, Workspace& ws,
              const ExecutorOptions& opt, nn::AttentionStats& stats);

  static void check_contiguous(MatrixView v);

  const ModelShard* shard_;
  std::unique_ptr<Communicator> replica_, tp_;
};

/// Options of run_forward().
struct RunOptions {
  ExecutorOptions exec;
  LoadOptions load;
  /// How long a rank waits for a peer before failing with CommError.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
};

/// Loads every rank's shard of `file` under `plan` and runs one forward pass of `tokens` on
/// plan.world() in-process threads (one per rank; replicas all run the same tokens).
/// Returns the logits [n, vocab] of rank 0's replica, row-major. The first failure on any
/// rank is rethrown here (the others stop at once instead of waiting for the timeout).
/// @throws the errors of ModelShard::load, place_of and Executor::forward.
DYNASPARSE_COMPILED_INLINE std::vector<float> run_forward(const io::SafetensorsFile& file,
                                                          const Plan& plan,
                                                          const std::vector<std::int32_t>& tokens,
                                                          const RunOptions& options = {});

}  // namespace parallel
DYNASPARSE_NAMESPACE_END

// Header-only use compiles these members in every translation unit that includes this;
// with DYNASPARSE_COMPILED they come from the dynasparse::compiled library instead.
#if !defined(DYNASPARSE_COMPILED)
#include "dynasparse/parallel/executor_impl.hpp"
#endif
