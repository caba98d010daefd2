// SPDX-License-Identifier: Apache-2.0
// ModelShard: one rank's share of a Model under a Plan: its pipeline stage's layers, and of
// each layer its tensor-parallel slice (whole heads; FFN rows in whole 16-row blocks), in
// every weight format the config names.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "dynasparse/core/eigen_interop.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/model/model.hpp"
#include "dynasparse/model/model_config.hpp"
#include "dynasparse/model/stored_linear.hpp"
#include "dynasparse/nn/any_linear.hpp"
#include "dynasparse/nn/embedding.hpp"
#include "dynasparse/nn/feed_forward.hpp"
#include "dynasparse/nn/gated_attention.hpp"
#include "dynasparse/nn/kv_cache.hpp"
#include "dynasparse/nn/norm.hpp"
#include "dynasparse/parallel/plan.hpp"
#include "dynasparse/quant/dense_i8.hpp"
#include "dynasparse/quant/quantize.hpp"
#include "dynasparse/simd/math.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/sparse/block_mask.hpp"
#include "dynasparse/sparse/group_sparse_f32.hpp"
#include "dynasparse/sparse/group_sparse_i8.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

/// Where rank `rank` sits in a plan: replica, stage and tensor-parallel index (ranks are laid
/// out TP-innermost, as the Partitioner does: rank = (dp * pp + stage) * tp + tp_index), its
/// layers [first_layer, last_layer), heads [first_head, first_head + head_count), and FFN
/// rows [first_ffn, first_ffn + ffn_count).
struct RankPlace {
  std::size_t rank = 0, replica = 0, stage = 0, tp_index = 0;
  std::size_t first_layer = 0, last_layer = 0;
  std::size_t first_head = 0, head_count = 0;
  std::size_t first_ffn = 0, ffn_count = 0;
  bool first_stage() const noexcept { return stage == 0; }
};

/// Rows of a width-`rows` column-parallel layer given to part t of `parts`: whole blocks of
/// `align` rows, spread as evenly as blocks allow (the remainder of a partial last block
/// goes with the last part). Returns {first, count}.
inline std::pair<std::size_t, std::size_t> aligned_split(std::size_t rows, std::size_t parts, std::size_t t,
                                                         std::size_t align) {
  const std::size_t blocks = rows / align;
  std::size_t b0 = blocks * t / parts, b1 = blocks * (t + 1) / parts;
  const std::size_t first = b0 * align;
  const std::size_t last = t + 1 == parts ? rows : b1 * align;
  return {first, last - first};
}

/// Checks a plan against a model config and a world size (0: not checked) and returns rank
/// `rank`'s place. FFN rows split in blocks of `ffn_align` (the group-sparse block height).
/// @throws ConfigError naming the cause: tp x pp x dp not the world size, TP not dividing
/// the head count, stage boundaries that do not cover the model's layers (or leave a stage
/// empty), an FFN narrower than tp blocks, a rank table that disagrees with the layout, or
/// a rank out of range.
inline RankPlace place_of(const Plan& plan, const ModelConfig& cfg, std::size_t rank, std::size_t world = 0,
                          std::size_t ffn_align = 16) {
  using ::dynasparse::detail::fail;
  if (plan.tp == 0 || plan.pp == 0 || plan.dp == 0) {
    fail<ConfigError>("parallel", "plan degrees must be positive", "tp, pp, dp >= 1", plan.shape(), "plan");
  }
  if (world != 0 && plan.world() != world) {
    fail<ConfigError>("parallel", "plan does not match the world size",
                      std::to_string(plan.world()) + " ranks (" + plan.shape() + ")", std::to_string(world) + " ranks",
                      "plan");
  }
  if (rank >= plan.world()) {
    fail<ConfigError>("parallel", "rank outside the plan", "< " + std::to_string(plan.world()), rank, "plan");
  }
  const std::size_t heads = cfg.num_heads();
  if (heads % plan.tp != 0) {
    fail<ConfigError>("parallel", "tensor-parallel degree does not divide the head count",
                      "a divisor of " + std::to_string(heads) + " heads", "tp=" + std::to_string(plan.tp), "plan");
  }
  const auto& b = plan.stage_first_layer;
  bool ok = b.size() == plan.pp + 1 && b.front() == 0 && b.back() == cfg.layers;
  for (std::size_t s = 0; ok && s < plan.pp; ++s) ok = b[s] < b[s + 1];
  if (!ok) {
    std::string got = "[";
    for (std::size_t i = 0; i < b.size(); ++i) got += (i ? ", " : "") + std::to_string(b[i]);
    fail<ConfigError>("parallel", "plan does not match the model's layer count",
                      std::to_string(plan.pp) + " non-empty stages covering layers 0.." + std::to_string(cfg.layers),
                      "stage boundaries " + got + "]", "plan");
  }
  if (cfg.ffn / ffn_align < plan.tp) {
    fail<ConfigError>("parallel", "feed-forward too narrow for the tensor-parallel degree",
                      ">= " + std::to_string(plan.tp) + " blocks of " + std::to_string(ffn_align) + " rows",
                      "ffn=" + std::to_string(cfg.ffn), "plan");
  }
  RankPlace p;
  p.rank = rank;
  p.tp_index = rank % plan.tp;
  p.stage = (rank / plan.tp) % plan.pp;
  p.replica = rank / (plan.tp * plan.pp);
  p.first_layer = b[p.stage];
  p.last_layer = b[p.stage + 1];
  p.head_count = heads / plan.tp;
  p.first_head = p.tp_index * p.head_count;
  const auto f = aligned_split(cfg.ffn, plan.tp, p.tp_index, ffn_align);
  p.first_ffn = f.first;
  p.ffn_count = f.second;
  if (!plan.ranks.empty()) {
    const bool agrees = plan.ranks.size() == plan.world() && plan.ranks[rank].rank == rank &&
                        plan.ranks[rank].stage == p.stage && plan.ranks[rank].tp == p.tp_index &&
                        plan.ranks[rank].first_layer == p.first_layer && plan.ranks[rank].last_layer == p.last_layer &&
                        plan.ranks[rank].head_count == p.head_count && plan.ranks[rank].first_head == p.first_head;
    if (!agrees) {
      fail<ConfigError>("parallel", "plan's rank table disagrees with its shape",
                        "stage " + std::to_string(p.stage) + ", tp index " + std::to_string(p.tp_index) + ", layers " +
                            std::to_string(p.first_layer) + ".." + std::to_string(p.last_layer),
                        plan.ranks.size() == plan.world() ? "stage " + std::to_string(plan.ranks[rank].stage) + ", tp index " +
                                                                std::to_string(plan.ranks[rank].tp)
                                                          : std::to_string(plan.ranks.size()) + " rank entries",
                        "plan rank " + std::to_string(rank));
    }
  }
  return p;
}

namespace detail {

// A block mask for rows [r0, r0 + nr) x columns [c0, c0 + nc) of a matrix whose full mask is
// `full`: a block of the slice is stored if it overlaps a stored block of the full matrix.
// When the slice starts on block boundaries this is exactly the full mask's blocks.
inline sparse::BlockMask slice_mask(const sparse::BlockMask& full, std::size_t r0, std::size_t nr, std::size_t c0,
                                    std::size_t nc) {
  sparse::BlockMask m;
  m.out = nr;
  m.in = nc;
  m.shape = full.shape;
  m.keep.assign(m.block_rows() * m.block_cols(), 0);
  const std::size_t R = full.shape.rows, C = full.shape.cols, fbc = full.block_cols();
  for (std::size_t r = 0; r < nr; ++r) {
    for (std::size_t c = 0; c < nc; c += 1) {
      if (full.keep[((r0 + r) / R) * fbc + (c0 + c) / C]) m.keep[(r / R) * m.block_cols() + c / C] = 1;
    }
  }
  return m;
}

// A weight read once from the file, with its format and (for group-sparse formats) the full
// matrix's mask and the weights outside it zeroed: slices of it then hold exactly what the
// one-device layer holds.
struct FullWeight {
  std::string name, format;
  std::vector<float> w;  // [out, in], row-major
  std::size_t out = 0, in = 0;
  std::vector<float> bias;
  std::optional<sparse::BlockMask> mask;
  ConstMatrixView view() const { return ConstMatrixView(w.data(), out, in); }
};

// The slice rows [r0, r0 + nr) x cols [c0, c0 + nc) of a FullWeight as a layer of its format,
// with `bias` (already sliced, or empty). Row slices quantize per output channel exactly as
// the full layer does (an INT8 channel's alpha only depends on its own row); column slices
// keep the full row's alpha, so every INT8 weight equals the one-device code.
inline nn::AnyLinear slice_linear(const FullWeight& f, std::size_t r0, std::size_t nr, std::size_t c0, std::size_t nc,
                                  std::vector<float> bias) {
  const ConstMatrixView full = f.view();
  const ConstMatrixView part = full.row_range(r0, nr).col_range(c0, nc);
  const bool whole_rows = c0 == 0 && nc == f.in;
  if (f.format == "dense_f32") return nn::Linear<nn::DenseF32>(nn::DenseF32(part, std::move(bias), f.name));
  if (f.format == "dense_i8") {
    if (whole_rows) return nn::Linear<quant::DenseI8>(quant::DenseI8(part, std::move(bias), f.name));
    const quant::QuantizedMatrix q = quant::quantize(full.row_range(r0, nr), quant::Granularity::PerChannel, 0, f.name);
    quant::QuantizedMatrix s;
    s.params = q.params;
    s.params.cols = nc;
    s.values.resize_discard(nr * nc);
    for (std::size_t r = 0; r < nr; ++r) {
      for (std::size_t c = 0; c < nc; ++c) s.values[r * nc + c] = q.values[r * f.in + c0 + c];
    }
    return nn::Linear<quant::DenseI8>(quant::DenseI8(s, std::move(bias), f.name));
  }
  const sparse::BlockMask mask = slice_mask(*f.mask, r0, nr, c0, nc);
  if (f.format == "gsparse_f32") {
    return nn::Linear<sparse::GroupSparseF32>(sparse::GroupSparseF32(part, mask, std::move(bias), f.name));
  }
  // gsparse_i8
  if (whole_rows) return nn::Linear<sparse::GroupSparseI8>(sparse::GroupSparseI8(part, mask, std::move(bias), f.name));
  // Quantize the slice's stored values with the full rows' alphas (the max over a row's
  // stored weights, which are the row's non-zeros here since the rest was zeroed).
  std::vector<float> alpha(nr, 0.0f);
  for (std::size_t r = 0; r < nr; ++r) {
    for (std::size_t c = 0; c < f.in; ++c) alpha[r] = std::max(alpha[r], std::fabs(full(r0 + r, c)));
  }
  const sparse::BlockCsr<float> fc = sparse::BlockCsr<float>::from_dense(part, mask, f.name);
  sparse::BlockCsr<std::int8_t> csr;
  csr.out = fc.out;
  csr.in = fc.in;
  csr.shape = fc.shape;
  csr.row_ptr = fc.row_ptr;
  csr.col_idx = fc.col_idx;
  csr.values.resize_discard(fc.values.size());
  const std::size_t rb = fc.shape.rows, cb = fc.shape.cols, per_block = rb * cb;
  for (std::size_t br = 0; br < fc.block_rows(); ++br) {
    for (std::uint32_t b = fc.row_ptr[br]; b < fc.row_ptr[br + 1]; ++b) {
      for (std::size_t i = 0; i < rb; ++i) {
        const float a = br * rb + i < nr ? alpha[br * rb + i] : 0.0f;
        for (std::size_t c = 0; c < cb; ++c) {
          const float v = fc.values[b * per_block + sparse::BlockCsr<float>::offset(fc.shape, i, c)];
          simd::quantize_f32s8(
              &v,
              &csr.values[b * per_block + sparse::BlockCsr<std::int8_t>::offset(fc.shape, i, c)], 1,
              simd::inv_scale_for(a));
        }
      }
    }
  }
  return nn::Linear<sparse::GroupSparseI8>(sparse::GroupSparseI8(std::move(csr), std::move(alpha), std::move(bias), f.name));
}

}  // namespace detail

/// One rank's share of a Model under a Plan (see RankPlace): the embeddings on the first
/// stage (token embedding, and learned positions unless the model uses rotary positions,
/// which each rank applies to its own heads inside attention), the final norm and LM head
/// on the last, and for each layer of its stage the norms (replicated), its heads' attention
/// (q, k, v, head gate: rows of its heads; out_proj: the matching columns, bias on
/// tensor-parallel index 0 only), the output gate's rows of its heads (an output gate acts
/// after the all-reduce), and the FFN's up rows [first_ffn, first_ffn + ffn_count) with
/// down's matching columns (bias on index 0 only).
///
/// Weight formats and pruning follow the config and LoadOptions exactly as Model::load, and
/// the slices are cut from the full one-device weights (group-sparse masks and INT8 alphas
/// of the whole matrix), so a shard's weights are the one-device model's. Immutable after
/// load; the compute steps are const and used by Executor.
///
/// Classifier models (ModelConfig::num_classes > 0) are not sharded: Executor's output rows
/// are vocabulary-wide, so load() refuses them with an UnsupportedError; run them on one
/// device with Model.
class ModelShard {
 public:
  using Norm = Model::Norm;

  /// Loads rank `rank`'s share of `file` (a Model file, see Model::load) under `plan`.
  /// @throws the errors of Model::load for the tensors it reads, and of place_of() for a
  /// plan that does not fit the model; UnsupportedError for a classifier model.
  static ModelShard load(const io::SafetensorsFile& file, const Plan& plan, std::size_t rank,
                         const LoadOptions& options = {});

  const ModelConfig& config() const noexcept { return cfg_; }
  const Plan& plan() const noexcept { return plan_; }
  const RankPlace& place() const noexcept { return place_; }
  bool first_stage() const noexcept { return place_.stage == 0; }
  bool last_stage() const noexcept { return place_.stage + 1 == plan_.pp; }
  /// Layers held (last_layer - first_layer).
  std::size_t num_layers() const noexcept { return blocks_.size(); }
  /// Weight bytes held, in their formats.
  std::size_t bytes() const noexcept {
    std::size_t b = 0;
    if (embed_) b += embed_->bytes() + (pos_ ? pos_->bytes() : 0);
    if (lm_head_) b += lm_head_->bytes();
    if (head_i8_) b += head_i8_->bytes();
    for (const auto& blk : blocks_) {
      b += blk.ffn->bytes();
      blk.attn->for_each_linear([&](const nn::AnyLinear& l) { b += l.bytes(); });
      if (blk.out_gate) b += blk.out_gate->bytes();
    }
    return b;
  }

  /// Static INT8 activation alphas by layer name (as Model::set_activation_alphas, from
  /// Model::calibrate on one device); names of layers this shard does not hold are skipped.
  /// With static alphas the row-split layers quantize their inputs as one device does.
  void set_activation_alphas(const std::map<std::string, float>& alphas);

  /// x [n, E] = token embeddings + learned positions start .. start + n - 1 (first stage
  /// only; rotary models add no positions here).
  /// @throws ConfigError for a token outside the vocabulary; UnsupportedError off the first stage.
  void embed(const std::int32_t* tokens, std::size_t n, std::size_t start, MatrixView x) const;

  /// y = norm1 (which = 0) or norm2 (which = 1) of local layer l.
  void norm(std::size_t l, int which, ConstMatrixView x, MatrixView y) const;
  /// This rank's heads of local layer l: partial [n, E] = its share of out_proj (to be
  /// summed over the tensor-parallel group), causal or not as configured; with a cache,
  /// cached decoding of these n tokens (KV of this rank's heads only).
  nn::AttentionStats attention(std::size_t l, ConstMatrixView x, MatrixView partial, Workspace& ws,
                               nn::KVCache* cache) const;
  /// Width of this rank's slice of an output gate (0 without one): its heads' columns.
  std::size_t output_gate_width() const noexcept { return out_gate_width_; }
  /// gate [n, output_gate_width()] = sigmoid(W_g x + b_g) for this rank's columns of layer l's
  /// output gate, which start at column place().first_head * head_dim.
  void output_gate(std::size_t l, ConstMatrixView x, MatrixView gate, Workspace& ws) const;
  /// partial [n, E] = this rank's share of local layer l's FFN (summed over the group).
  void ffn(std::size_t l, ConstMatrixView x, MatrixView partial, Workspace& ws) const;
  /// logits [n, vocab] = LM head of the final norm of x (last stage only; scratch [n, E];
  /// INT8 with LoadOptions::int8_head).
  void head(ConstMatrixView x, MatrixView logits, MatrixView scratch, Workspace& ws) const;

  /// KV caches for this rank's layers and heads, holding up to max_len tokens (default: the
  /// config's maximum).
  std::vector<nn::KVCache> new_caches(std::size_t max_len = 0,
                                      nn::KVDType kv = nn::KVDType::F32) const;

 private:
  struct Block {
    Norm norm1, norm2;
    std::unique_ptr<nn::GatedAttention<nn::AnyLinear>> attn;
    std::unique_ptr<nn::AnyLinear> out_gate;
    std::unique_ptr<nn::FeedForward> ffn;
  };

  ModelShard() = default;

  ConstMatrixView embed_table() const { return tied_->table(); }

  void build(const io::SafetensorsFile& file, const LoadOptions& opt);

  bool is_linear_name(const std::string& name) const;

  std::size_t rank_of() const noexcept { return rank_; }

  ModelConfig cfg_;
  Plan plan_;
  std::size_t rank_ = 0;
  RankPlace place_;
  std::unique_ptr<nn::Embedding> embed_, pos_, lm_head_, tied_own_;
  const nn::Embedding* tied_ = nullptr;
  std::unique_ptr<quant::DenseI8> head_i8_;  // LoadOptions::int8_head, last stage only
  std::vector<Block> blocks_;
  std::unique_ptr<Norm> norm_f_;
  std::size_t out_gate_width_ = 0;
};

}  // namespace parallel
DYNASPARSE_NAMESPACE_END

// Header-only use compiles ModelShard's members in every translation unit that includes
// this; with DYNASPARSE_COMPILED they come from the dynasparse::compiled library instead.
#if !defined(DYNASPARSE_COMPILED)
#include "dynasparse/parallel/shard_impl.hpp"
#endif
