// SPDX-License-Identifier: Apache-2.0
// Model: a pre-norm transformer of gated attention and feed-forward blocks, loaded from a
// safetensors file, with forward, cached decoding and generation.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "dynasparse/core/eigen_interop.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/model/model_config.hpp"
#include "dynasparse/model/sampling.hpp"
#include "dynasparse/model/stored_linear.hpp"
#include "dynasparse/nn/any_linear.hpp"
#include "dynasparse/nn/embedding.hpp"
#include "dynasparse/nn/feed_forward.hpp"
#include "dynasparse/nn/gated_attention.hpp"
#include "dynasparse/nn/kv_cache.hpp"
#include "dynasparse/nn/norm.hpp"
#include "dynasparse/quant/calibrator.hpp"
#include "dynasparse/quant/dense_i8.hpp"
#include "dynasparse/sparse/block_mask.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// Options of Model::load.
struct LoadOptions {
  /// Tensors the model does not use are an error unless this is set (files that carry
  /// extra data, such as golden inputs and outputs).
  bool allow_extra_tensors = false;
  /// Block shape assumed for layers whose format is group-sparse: their blocks are those
  /// with any non-zero weight.
  sparse::BlockShape sparse_block{16, 4};
  /// Formats by linear-layer name (e.g. "layers.0.ffn.up" -> "gsparse_f32"), overriding the
  /// file's config, so one file loads as FP32, INT8 or group-sparse without rewriting it.
  /// A name that is not a linear layer of the model is a ConfigError.
  std::map<std::string, std::string> formats;
  /// Every linear layer in INT8 (after `formats`): dense_f32 becomes dense_i8 and
  /// gsparse_f32 becomes gsparse_i8 (per-channel max-abs weights, dynamic activations until
  /// Model::set_activation_alphas).
  bool int8 = false;
  /// The output head in INT8 too: logits (or class logits) from an INT8 copy of the head's
  /// table (the tied embedding, `lm_head.weight` or `classifier.weight`) with per-row
  /// max-abs weight scales and dynamic per-row activation scales. The float table stays
  /// (the embedding lookup and save() read it), so weight bytes grow by about a quarter of
  /// the table's; a decoding step reads a quarter of the head's bytes. Also set by the
  /// config's `head_format: "dense_i8"`, which save() writes for such a model (the file keeps
  /// the float table; the INT8 copy is made again at load). Not calibrated: the head's
  /// activations stay dynamic.
  bool int8_head = false;
  /// One-shot magnitude pruning: group-sparse layers whose stored weights have fewer than
  /// this fraction of sparse_block blocks all zero are pruned to it, dropping the blocks of
  /// smallest L2 norm (no retraining). 0 keeps the file's zeros as they are.
  double prune = 0.0;
  /// Longest context a config may declare (sessions size their KV caches from it): a file
  /// asking for more is refused with a ConfigError before anything is allocated. The
  /// config parser's own bound is 2^20.
  std::size_t max_seq_len = std::size_t{1} << 20;
  /// Bounds on the file itself (header size, tensor count, total elements), checked before
  /// any tensor is read; see io::SafetensorsLimits.
  io::SafetensorsLimits limits;
};

/// Per-sequence state of decoding: one KV cache per layer, scratch memory, the position
/// reached and the attention statistics. A Session belongs to one thread at a time; many
/// Sessions may share one Model.
class Session {
 public:
  std::size_t position() const noexcept { return pos_; }
  const nn::AttentionStats& stats() const noexcept { return stats_; }
  /// KV-cache bytes held by all layers.
  std::size_t kv_bytes() const noexcept {
    std::size_t b = 0;
    for (const auto& c : caches_) b += c.bytes();
    return b;
  }
  /// KV-cache bytes one token takes in all layers: K and V of every head, scales included,
  /// without the allocation's padding (nn::KVCache::bytes_per_token).
  std::size_t kv_bytes_per_token() const noexcept {
    std::size_t b = 0;
    for (const auto& c : caches_) b += c.bytes_per_token();
    return b;
  }
  /// Forgets the sequence (keeps the memory).
  void reset() noexcept {
    for (auto& c : caches_) c.clear();
    pos_ = 0;
    stats_ = {};
  }

 private:
  friend class Model;
  std::vector<nn::KVCache> caches_;
  Workspace ws_;
  std::size_t pos_ = 0;
  nn::AttentionStats stats_;
};

/// Options of Model::generate.
struct GenerateOptions {
  std::size_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<std::int32_t> stop_tokens;
  /// Called with each new token as it is produced; return false to stop.
  std::function<bool(std::int32_t)> on_token;
};

/// What generate() produced, with its timing.
struct GenerateResult {
  std::vector<std::int32_t> tokens;  ///< new tokens only
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double decode_tokens_per_second() const noexcept {
    return tokens.size() > 1 && decode_seconds > 0 ? static_cast<double>(tokens.size() - 1) / decode_seconds : 0.0;
  }
};

/// A transformer: Embedding (+ learned positions, unless the config asks for rotary positions,
/// which act on q and k inside attention) -> blocks (pre-norm: norm -> GatedAttention ->
/// residual -> norm -> FeedForward -> residual) -> final norm -> LM head (tied to the
/// embedding or not), or a classifier head (num_classes > 0: per-token class logits, which
/// classify() pools). Each linear layer's weight format comes from the config (`formats`),
/// converted at load. Immutable after load: forward() and generate() may run from many
/// threads at once, each with its own Session (and, for forward(), Workspace).
class Model {
 public:
  using Norm = std::variant<nn::LayerNorm, nn::RMSNorm>;

  /// Loads `path` (safetensors; config JSON in the metadata key "dynasparse.config"; tensor
  /// names of examples/python/model.py: a rotary model has no `pos_embed.weight`; a
  /// classifier has `classifier.weight` [num_classes, hidden] and `classifier.bias`
  /// [num_classes] and no `lm_head.weight`). @throws FormatError naming the file and tensor
  /// for a missing, mistyped or unused tensor or a missing config; ShapeError for a tensor of
  /// the wrong shape; ConfigError for an invalid config.
  static Model load(const std::string& path, const LoadOptions& options = {});

  /// As load(), from an opened file (e.g. SafetensorsFile::from_bytes).
  static Model from_file(const io::SafetensorsFile& file, const LoadOptions& options = {});

  const ModelConfig& config() const noexcept { return cfg_; }
  /// Token vocabulary size (the embedding's rows), also for classifier models.
  std::size_t vocab() const noexcept { return cfg_.vocab; }
  /// Width of forward()'s and decode()'s output rows: num_classes for a classifier model,
  /// vocab() otherwise.
  std::size_t out_dim() const noexcept { return cfg_.num_classes ? cfg_.num_classes : cfg_.vocab; }
  /// Weight bytes of all layers in their formats (embedding and head included).
  std::size_t bytes() const noexcept {
    std::size_t b = embed_->bytes() + (pos_ ? pos_->bytes() : 0);
    for (const auto& blk : blocks_) b += blk.ffn.bytes() + blk.attn_bytes;
    if (lm_head_) b += lm_head_->bytes();
    if (classifier_) b += classifier_->bytes() + classifier_bias_.size() * sizeof(float);
    if (head_i8_) b += head_i8_->bytes();
    return b;
  }
  /// The format of each linear layer, by name (as in the config's `formats`).
  const std::vector<std::pair<std::string, std::string>>& layer_formats() const noexcept { return formats_; }

  /// A fresh session able to hold `max_len` tokens (default: the config's maximum) with
  /// float or INT8 KV caches.
  Session new_session(std::size_t max_len = 0, nn::KVDType kv = nn::KVDType::F32) const;

  /// Checked mode: forward() and decode() verify that every block's output is finite and
  /// throw dynasparse::Error naming the layer and token otherwise (off by default: it costs
  /// one pass over the activations per block).
  void set_checked(bool on) noexcept { checked_ = on; }
  bool checked() const noexcept { return checked_; }

  /// Calls fn(nn::AnyLinear&) for every linear layer (attention projections, gates, FFN), in
  /// layer order; the layer's name() is its config name.
  template <class Fn>
  void for_each_linear(Fn&& fn) {
    for (auto& blk : blocks_) {
      blk.attn->for_each_linear(fn);
      blk.ffn.for_each_linear(fn);
    }
  }

  /// As above, read-only.
  template <class Fn>
  void for_each_linear(Fn&& fn) const {
    for (const auto& blk : blocks_) {
      std::as_const(*blk.attn).for_each_linear(fn);
      blk.ffn.for_each_linear(fn);
    }
  }

  /// Writes the model as it is now to `path` (safetensors): the config, with each linear
  /// layer's format, in the metadata; float tensors under examples/python/model.py's names,
  /// in F32; converted layers as their stored parts (model/stored_linear.hpp) with any
  /// calibrated activation alpha. load() of the file gives this model back (the same
  /// outputs) without the original file and without quantizing or pruning again (an INT8
  /// head is recorded in the config and made again from the float table).
  /// Saving over the file this model was loaded from is safe: the new file is renamed into
  /// place (io::SafetensorsWriter::write). @throws FormatError if the file cannot be
  /// written (no partial file is left, and a file already at `path` is kept).
  void save(const std::string& path) const;

  /// Static INT8 calibration: runs every sample (a token sequence of at most max_seq_len)
  /// through this model as loaded and returns, per linear layer, the activation alpha the
  /// observer chooses from that layer's inputs. Calibrate an FP32 load of the model, then
  /// hand the result to set_activation_alphas() of an INT8 load. Not to be called while
  /// another thread uses this model. @throws the errors of forward() and quant::Calibrator.
  std::map<std::string, float> calibrate(const std::vector<std::vector<std::int32_t>>& samples,
                                         const quant::CalibratorOptions& options = {});

  /// Static activation alphas (from calibrate()) for this model's INT8 layers, by name (a
  /// file may also carry them as `<layer>.input_alpha` tensors of shape [1], which load()
  /// applies to INT8 layers);
  /// names of float layers are skipped, layers not named keep theirs.
  /// @throws ConfigError for a name that is not a linear layer of the model, or a bad alpha.
  void set_activation_alphas(const std::map<std::string, float>& alphas);

  /// Sets the head-skip threshold tau of every layer (head gates only): the range a model
  /// file may hold, so that save() writes a file load() reads back. @throws ConfigError for
  /// tau outside [0, 1] or NaN, leaving the model unchanged.
  void set_skip_threshold(float tau);

  /// logits [L, out_dim()] of one whole sequence `tokens` [L] (causal or bidirectional as
  /// configured), without a cache: next-token logits [L, vocab], or for a classifier model
  /// per-token class logits [L, num_classes]. Returns the attention statistics.
  /// @throws ShapeError if L exceeds max_seq_len or logits has another shape; ConfigError for
  /// a token id outside the vocabulary.
  nn::AttentionStats forward(const std::int32_t* tokens, std::size_t n, MatrixView logits,
                             Workspace& ws) const;

  /// Class logits out [num_classes] of one whole sequence `tokens` [n], n >= 1, for a
  /// classifier model: forward()'s per-token class logits pooled by their mean over the n
  /// tokens for a bidirectional (encoder) model, or those of the last token for a causal
  /// model (the only one that has seen the whole sequence). Returns the attention statistics.
  /// @throws UnsupportedError for a model without a classifier head; ShapeError for n = 0 or
  /// n > max_seq_len; ConfigError for a token id outside the vocabulary.
  nn::AttentionStats classify(const std::int32_t* tokens, std::size_t n, float* out,
                              Workspace& ws) const;

  /// Runs `n` new tokens through the cached decoder and writes their logits [n, out_dim()]
  /// (prefill: n = prompt length; decoding: n = 1). @throws UnsupportedError for
  /// bidirectional (encoder) models; ShapeError past the session's capacity.
  void decode(const std::int32_t* tokens, std::size_t n, Session& s, MatrixView logits) const;

  /// Continues `prompt` in session `s` (which must be fresh or hold an earlier part of the
  /// same text): prefill, then one token at a time until max_new_tokens, a stop token, the
  /// session's capacity or on_token returning false. Deterministic for a given seed.
  /// @throws UnsupportedError for a classifier model (it has no next-token logits).
  GenerateResult generate(const std::vector<std::int32_t>& prompt, const GenerateOptions& opt,
                          Session& s) const;

 private:
  struct Block {
    Norm norm1, norm2;
    std::unique_ptr<nn::GatedAttention<nn::AnyLinear>> attn;
    nn::FeedForward ffn;
    std::size_t attn_bytes = 0;
  };

  explicit Model(ModelConfig cfg) : cfg_(std::move(cfg)) {}

  void check_finite(ConstMatrixView x, std::size_t layer) const;

  static void add_into(MatrixView x, ConstMatrixView d) noexcept;
  static void apply_norm(const Norm& n, ConstMatrixView x, MatrixView y);

  // Session `s` belongs to a model of this shape and has room for n more tokens. Positions
  // index this model's tables, whatever capacity the session was made with.
  void check_capacity(const Session& s, std::size_t n) const;

  void embed(const std::int32_t* tokens, std::size_t n, std::size_t start, MatrixView x) const;

  // Final norm, then logits = x W_head^T (the embedding table when tied), or class logits
  // x W_cls^T + b_cls; through head_i8_ when it is set.
  void head(ConstMatrixView x, MatrixView logits, MatrixView scratch, Workspace& ws) const;

  // Calibration key of a layer: q, k and v read the same input, so they share one observer.
  static std::string tap_key(const std::string& name);

  void build(const io::SafetensorsFile& file, const LoadOptions& opt);

  ModelConfig cfg_;
  std::unique_ptr<nn::Embedding> embed_, pos_, lm_head_;  // pos_: learned positions only
  std::unique_ptr<nn::Embedding> classifier_;             // [num_classes, E], with a bias
  std::vector<float> classifier_bias_;
  std::unique_ptr<quant::DenseI8> head_i8_;  // LoadOptions::int8_head (bias: the classifier's)
  std::vector<Block> blocks_;
  std::unique_ptr<Norm> norm_f_;
  std::vector<std::pair<std::string, std::string>> formats_;
  bool checked_ = false;
};

DYNASPARSE_NAMESPACE_END

// Header-only use compiles Model's members in every translation unit that includes this;
// with DYNASPARSE_COMPILED they come from the dynasparse::compiled library instead.
#if !defined(DYNASPARSE_COMPILED)
#include "dynasparse/model/model_impl.hpp"
#endif
