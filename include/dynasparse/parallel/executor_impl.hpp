// SPDX-License-Identifier: Apache-2.0
// The members of Executor and run_forward(), declared in parallel/executor.hpp. That header
// includes this one, so header-only users never name it; under DYNASPARSE_COMPILED,
// src/parallel.cpp (the dynasparse::compiled library) is its only includer, and the definitions are
// not inline.
#pragma once

#include "dynasparse/parallel/executor.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

DYNASPARSE_COMPILED_INLINE Executor::Executor(const ModelShard& shard, Communicator& world)
    : shard_(&shard) {
  const RankPlace p = place_of(shard.plan(), shard.config(), world.rank(), world.size());
  if (shard.place().rank != world.rank()) {
    ::dynasparse::detail::fail<ConfigError>(
        "parallel", "shard made for another rank", "rank " + std::to_string(world.rank()),
        "rank " + std::to_string(shard.place().rank), "Executor");
  }
  replica_ = world.split(p.replica, world.rank());
  tp_ = replica_->split(p.stage, p.tp_index);
}

DYNASPARSE_COMPILED_INLINE nn::AttentionStats Executor::forward(const std::int32_t* tokens,
                                                                std::size_t n, MatrixView logits,
                                                                Workspace& ws,
                                                                const ExecutorOptions& opt) {
  const ModelConfig& cfg = shard_->config();
  check_len(n, 0, cfg.max_seq_len, "forward");
  check_micro(n, opt);
  if (opt.micro_batches > 1) {
    if (!cfg.causal) {
      ::dynasparse::detail::fail<UnsupportedError>(
          "parallel", "micro-batches of a bidirectional model",
          "micro_batches = 1 (every token attends to every other)", opt.micro_batches, "forward");
    }
    std::vector<nn::KVCache> caches = shard_->new_caches(n);
    nn::AttentionStats stats;
    run(tokens, n, 0, &caches, logits, ws, opt, stats);
    return stats;
  }
  nn::AttentionStats stats;
  run(tokens, n, 0, nullptr, logits, ws, opt, stats);
  return stats;
}

DYNASPARSE_COMPILED_INLINE ShardSession Executor::new_session(std::size_t max_len,
                                                              nn::KVDType kv) const {
  ShardSession s;
  s.caches_ = shard_->new_caches(max_len, kv);
  s.max_len_ =
      max_len ? std::min(max_len, shard_->config().max_seq_len) : shard_->config().max_seq_len;
  return s;
}

DYNASPARSE_COMPILED_INLINE void Executor::decode(const std::int32_t* tokens, std::size_t n,
                                                 ShardSession& s, MatrixView logits, Workspace& ws,
                                                 const ExecutorOptions& opt) {
  if (!shard_->config().causal) {
    ::dynasparse::detail::fail<UnsupportedError>("parallel",
                                                 "cached decoding of a bidirectional model",
                                                 "a causal model", "causal = false", "decode");
  }
  check_len(n, s.pos_, s.capacity(), "session");
  check_micro(n, opt);
  run(tokens, n, s.pos_, &s.caches_, logits, ws, opt, s.stats_);
  s.pos_ += n;
}

DYNASPARSE_COMPILED_INLINE void Executor::check_len(std::size_t n, std::size_t start,
                                                    std::size_t cap, const char* what) const {
  if (start + n > cap) {
    ::dynasparse::detail::fail<ShapeError>("parallel", "sequence beyond the capacity",
                                           "<= " + std::to_string(cap) + " tokens",
                                           std::to_string(start + n) + " tokens", what);
  }
}

DYNASPARSE_COMPILED_INLINE void Executor::check_micro(std::size_t n,
                                                      const ExecutorOptions& opt) const {
  if (opt.micro_batches == 0 || (n > 0 && opt.micro_batches > n)) {
    ::dynasparse::detail::fail<ConfigError>("parallel", "micro-batch count",
                                            "1 .. " + std::to_string(std::max<std::size_t>(n, 1)),
                                            opt.micro_batches, "ExecutorOptions::micro_batches");
  }
}

DYNASPARSE_COMPILED_INLINE void Executor::add_into(MatrixView x, ConstMatrixView d) noexcept {
  for (std::size_t r = 0; r < x.rows(); ++r) {
    float* xr = x.row(r);
    const float* dr = d.row(r);
    for (std::size_t c = 0; c < x.cols(); ++c) xr[c] += dr[c];
  }
}

DYNASPARSE_COMPILED_INLINE void Executor::layer(std::size_t l, MatrixView x, MatrixView t1,
                                                MatrixView t2, Workspace& ws, nn::KVCache* cache,
                                                nn::AttentionStats& stats) {
  const ModelShard& sh = *shard_;
  const std::size_t rows = x.rows(), e = x.cols();
  shard_->norm(l, 0, x, t1);
  stats += sh.attention(l, t1, t2, ws, cache);
  tp_->all_reduce_sum(t2.data(), rows * e);
  if (const std::size_t gw = sh.output_gate_width()) {
    Workspace::Scope scope(ws);
    MatrixView g(ws.allocate<float>(rows * gw), rows, gw);
    sh.output_gate(l, t1, g, ws);
    const std::size_t tp = tp_->size(), c0 = sh.place().tp_index * gw;
    if (tp == 1) {
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t c = 0; c < e; ++c) t2(r, c) *= g(r, c);
      }
    } else {
      // Each rank gates its heads' columns of the sum; one all-gather reassembles them.
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t c = 0; c < gw; ++c) g(r, c) *= t2(r, c0 + c);
      }
      float* all = ws.allocate<float>(tp * rows * gw);
      tp_->all_gather(g.data(), rows * gw, all);
      for (std::size_t t = 0; t < tp; ++t) {
        for (std::size_t r = 0; r < rows; ++r) {
          std::copy(all + (t * rows + r) * gw, all + (t * rows + r + 1) * gw, t2.row(r) + t * gw);
        }
      }
    }
  }
  add_into(x, t2);
  sh.norm(l, 1, x, t1);
  sh.ffn(l, t1, t2, ws);
  tp_->all_reduce_sum(t2.data(), rows * e);
  add_into(x, t2);
}

DYNASPARSE_COMPILED_INLINE void Executor::run(const std::int32_t* tokens, std::size_t n,
                                              std::size_t start, std::vector<nn::KVCache>* caches,
                                              MatrixView logits, Workspace& ws,
                                              const ExecutorOptions& opt,
                                              nn::AttentionStats& stats) {
#if DYNASPARSE_HAS_EXCEPTIONS
  try {
    stream(tokens, n, start, caches, logits, ws, opt, stats);
  } catch (const std::exception& e) {
    replica_->abort(e.what());
    throw;
  }
#else
  stream(tokens, n, start, caches, logits, ws, opt, stats);
#endif
}

DYNASPARSE_COMPILED_INLINE void Executor::stream(
    const std::int32_t* tokens, std::size_t n, std::size_t start, std::vector<nn::KVCache>* caches,
    MatrixView logits, Workspace& ws, const ExecutorOptions& opt, nn::AttentionStats& stats) {
  const ModelShard& sh = *shard_;
  const ModelConfig& cfg = sh.config();
  const Plan& plan = sh.plan();
  const RankPlace& p = sh.place();
  const std::size_t e = cfg.hidden, v = cfg.vocab;
  const bool out = writes_logits(opt);
  if (out) check_shape(logits, n, v, "parallel", "logits");
  // Replica ranks: stage s, tensor-parallel index t is s * tp + t.
  const std::size_t prev = (p.stage - 1) * plan.tp + p.tp_index,
                    next = (p.stage + 1) * plan.tp + p.tp_index;
  const std::size_t m = opt.micro_batches;
  const std::vector<std::size_t> bounds =
      n > 0 ? detail::micro_batch_bounds(n, m) : std::vector<std::size_t>();
  for (std::size_t c = 0; c < m && n > 0; ++c) {
    const std::size_t r0 = bounds[c], rows = bounds[c + 1] - r0;
    Workspace::Scope scope(ws);
    MatrixView x(ws.allocate<float>(rows * e), rows, e);
    MatrixView t1(ws.allocate<float>(rows * e), rows, e), t2(ws.allocate<float>(rows * e), rows, e);
    const int tag = static_cast<int>(c);
    if (sh.first_stage()) {
      sh.embed(tokens + r0, rows, start + r0, x);
    } else {
      replica_->recv(x.data(), rows * e, prev, tag);
    }
    for (std::size_t l = 0; l < sh.num_layers(); ++l) {
      layer(l, x, t1, t2, ws, caches ? &(*caches)[l] : nullptr, stats);
    }
    if (sh.last_stage()) {
      sh.head(x, logits.row_range(r0, rows), t1, ws);
    } else {
      replica_->send(x.data(), rows * e, next, tag);
    }
  }
  if (opt.logits_on_every_rank && plan.pp > 1 && n > 0) {
    // Contiguous views only: the broadcast moves raw rows.
    check_contiguous(logits);
    replica_->broadcast(logits.data(), n * v, (plan.pp - 1) * plan.tp);
  }
}

DYNASPARSE_COMPILED_INLINE void Executor::check_contiguous(MatrixView v) {
  if (!v.contiguous()) {
    ::dynasparse::detail::fail<ShapeError>("parallel", "logits must be contiguous to broadcast",
                                           v.cols(), v.stride(), "logits stride");
  }
}

DYNASPARSE_COMPILED_INLINE std::vector<float> run_forward(const io::SafetensorsFile& file,
                                                          const Plan& plan,
                                                          const std::vector<std::int32_t>& tokens,
                                                          const RunOptions& options) {
  ThreadGroup group(plan.world(), options.timeout);
  const std::size_t n = tokens.size();
  const std::size_t reporter = (plan.pp - 1) * plan.tp;  // replica 0's last stage, index 0
  std::vector<std::vector<float>> logits(plan.world());
  group.run([&](Communicator& comm) {
    const ModelShard shard = ModelShard::load(file, plan, comm.rank(), options.load);
    Executor ex(shard, comm);
    Workspace ws;
    MatrixView view;
    if (ex.writes_logits(options.exec)) {
      logits[comm.rank()].resize(n * shard.config().vocab);
      view = MatrixView(logits[comm.rank()].data(), n, shard.config().vocab);
    }
    ex.forward(tokens.data(), n, view, ws, options.exec);
  });
  return std::move(logits[reporter]);
}

}  // namespace parallel
DYNASPARSE_NAMESPACE_END
