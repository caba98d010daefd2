// SPDX-License-Identifier: Apache-2.0
// ModelShard's members, declared in parallel/shard.hpp. That header includes this one, so
// header-only users never name it; under DYNASPARSE_COMPILED, src/parallel.cpp (the
// dynasparse::compiled library) is its only includer, and the definitions are not inline.
#pragma once

#include "dynasparse/parallel/shard.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

DYNASPARSE_COMPILED_INLINE ModelShard ModelShard::load(const io::SafetensorsFile& file,
                                                       const Plan& plan, std::size_t rank,
                                                       const LoadOptions& options) {
  const auto meta = file.metadata().find("dynasparse.config");
  if (meta == file.metadata().end()) {
    ::dynasparse::detail::fail<FormatError>("parallel", "missing model config",
                                            "metadata key dynasparse.config", "none", file.name());
  }
  ModelShard s;
  s.cfg_ = config_from_json(meta->second, file.name() + " metadata");
  s.plan_ = plan;
  s.rank_ = rank;
  s.build(file, options);
  return s;
}

DYNASPARSE_COMPILED_INLINE void ModelShard::set_activation_alphas(
    const std::map<std::string, float>& alphas) {
  auto apply = [&](nn::AnyLinear& l) {
    const auto it = alphas.find(l.name());
    if (it != alphas.end() && l.quantizes_input()) l.set_activation_alpha(it->second);
  };
  for (auto& blk : blocks_) {
    blk.attn->for_each_linear(apply);
    blk.ffn->for_each_linear(apply);
    if (blk.out_gate) apply(*blk.out_gate);
  }
}

DYNASPARSE_COMPILED_INLINE void ModelShard::embed(const std::int32_t* tokens, std::size_t n,
                                                  std::size_t start, MatrixView x) const {
  if (!embed_) {
    ::dynasparse::detail::fail<UnsupportedError>("parallel", "embedding on a rank without it",
                                                 "stage 0", "stage " + std::to_string(place_.stage),
                                                 "embed");
  }
  embed_->forward(tokens, n, x);
  if (!pos_) return;  // rotary positions act inside attention
  const ConstMatrixView pos = pos_->table();
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t c = 0; c < cfg_.hidden; ++c) x(i, c) += pos(start + i, c);
  }
}

DYNASPARSE_COMPILED_INLINE void ModelShard::norm(std::size_t l, int which, ConstMatrixView x,
                                                 MatrixView y) const {
  std::visit([&](const auto& n) { n.forward(x, y); },
             which == 0 ? blocks_[l].norm1 : blocks_[l].norm2);
}

DYNASPARSE_COMPILED_INLINE nn::AttentionStats ModelShard::attention(
    std::size_t l, ConstMatrixView x, MatrixView partial, Workspace& ws, nn::KVCache* cache) const {
  if (cache) return blocks_[l].attn->forward_cached(x, 1, *cache, partial, ws);
  nn::AttentionMasks masks;
  masks.causal = cfg_.causal;
  return blocks_[l].attn->forward(x, x, x, 1, partial, ws, masks);
}

DYNASPARSE_COMPILED_INLINE void ModelShard::output_gate(std::size_t l, ConstMatrixView x,
                                                        MatrixView gate, Workspace& ws) const {
  nn::forward(*blocks_[l].out_gate, x, gate, ws);
  for (std::size_t r = 0; r < gate.rows(); ++r)
    simd::sigmoid_f32(gate.row(r), gate.row(r), gate.cols());
}

DYNASPARSE_COMPILED_INLINE void ModelShard::ffn(std::size_t l, ConstMatrixView x,
                                                MatrixView partial, Workspace& ws) const {
  blocks_[l].ffn->forward(x, partial, ws);
}

DYNASPARSE_COMPILED_INLINE void ModelShard::head(ConstMatrixView x, MatrixView logits,
                                                 MatrixView scratch, Workspace& ws) const {
  if (!norm_f_) {
    ::dynasparse::detail::fail<UnsupportedError>("parallel", "LM head on a rank without it",
                                                 "stage " + std::to_string(plan_.pp - 1),
                                                 "stage " + std::to_string(place_.stage), "head");
  }
  std::visit([&](const auto& n) { n.forward(x, scratch); }, *norm_f_);
  if (head_i8_) {
    head_i8_->forward(scratch, logits, ws);
    return;
  }
  const ConstMatrixView w = lm_head_ ? lm_head_->table() : embed_table();
  ::dynasparse::detail::keep_eigen_single_threaded();
  as_eigen(logits).noalias() = as_eigen(ConstMatrixView(scratch)) * as_eigen(w).transpose();
}

DYNASPARSE_COMPILED_INLINE std::vector<nn::KVCache> ModelShard::new_caches(std::size_t max_len,
                                                                           nn::KVDType kv) const {
  std::vector<nn::KVCache> c;
  max_len = max_len ? std::min(max_len, cfg_.max_seq_len) : cfg_.max_seq_len;
  for (std::size_t l = place_.first_layer; l < place_.last_layer; ++l) {
    c.emplace_back(
        1, place_.head_count, cfg_.head_dim(), max_len, kv,
        "layers." + std::to_string(l) + ".kv[tp " + std::to_string(place_.tp_index) + "]");
  }
  return c;
}

DYNASPARSE_COMPILED_INLINE void ModelShard::build(const io::SafetensorsFile& file,
                                                  const LoadOptions& opt) {
  using ::dynasparse::detail::fail;
  if (!(opt.prune >= 0.0 && opt.prune < 1.0)) {
    fail<ConfigError>("parallel", "prune fraction", "0 <= prune < 1", opt.prune,
                      "LoadOptions::prune");
  }
  for (const auto& [layer, format] : opt.formats) cfg_.formats[layer] = format;
  validate(cfg_);
  if (cfg_.num_classes != 0) {
    fail<UnsupportedError>("parallel",
                           "classifier head in a sharded model (run it on one device with Model)",
                           "num_classes = 0 (LM head)", cfg_.num_classes, file.name());
  }
  place_ = place_of(plan_, cfg_, rank_of(), 0, opt.sparse_block.rows);
  const std::size_t e = cfg_.hidden, d = cfg_.head_dim();
  const std::size_t q0 = place_.first_head * d, qn = place_.head_count * d;
  const bool tp0 = place_.tp_index == 0;
  auto where = [&](const std::string& t) { return file.name() + ": " + t; };
  auto finite = [&](const float* p, std::size_t n, const std::string& name) {
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(p[i])) {
        fail<FormatError>("parallel", "non-finite weight", "finite values", p[i],
                          where(name) + " element " + std::to_string(i));
      }
    }
  };
  auto shape_of = [&](const std::string& name) {
    if (!file.contains(name))
      fail<FormatError>("parallel", "missing tensor", name, "nothing", where(name));
    return file.info(name).shape;
  };
  auto matrix = [&](const std::string& name, std::size_t rows, std::size_t cols) {
    const auto shape = shape_of(name);
    if (shape.size() != 2 || shape[0] != rows || shape[1] != cols) {
      std::string got = "[";
      for (std::size_t i = 0; i < shape.size(); ++i)
        got += (i ? ", " : "") + std::to_string(shape[i]);
      fail<ShapeError>("parallel", "tensor shape", shape_string(rows, cols), got + "]",
                       where(name));
    }
    auto t = file.load<float>(name);
    finite(t.data(), t.size(), name);
    return t;
  };
  auto vec = [&](const std::string& name, std::size_t n, bool required) -> std::vector<float> {
    if (!file.contains(name)) {
      if (required) fail<FormatError>("parallel", "missing tensor", name, "nothing", where(name));
      return {};
    }
    const auto shape = file.info(name).shape;
    if (shape.size() != 1 || shape[0] != n) {
      fail<ShapeError>("parallel", "tensor shape", "[" + std::to_string(n) + "]",
                       std::to_string(shape.size()) + "-d tensor", where(name));
    }
    const auto t = file.load<float>(name);
    finite(t.data(), t.size(), name);
    return std::vector<float>(t.data(), t.data() + n);
  };
  auto norm = [&](const std::string& prefix) -> Norm {
    if (cfg_.norm == NormKind::LayerNorm) {
      return nn::LayerNorm(vec(prefix + ".weight", e, true), vec(prefix + ".bias", e, false),
                           cfg_.norm_eps, prefix);
    }
    return nn::RMSNorm(vec(prefix + ".weight", e, true), cfg_.norm_eps, prefix);
  };
  // A linear layer's full weight and format, as Model::build chooses them (formats, int8,
  // group-sparse masks and pruning on the whole matrix).
  auto full = [&](ConstMatrixView w, std::vector<float> b, const std::string& name) {
    detail::FullWeight f;
    f.name = name;
    const auto it = cfg_.formats.find(name);
    f.format = it == cfg_.formats.end() ? "dense_f32" : it->second;
    if (opt.int8) f.format = f.format.rfind("gsparse", 0) == 0 ? "gsparse_i8" : "dense_i8";
    f.out = w.rows();
    f.in = w.cols();
    f.w.resize(f.out * f.in);
    for (std::size_t r = 0; r < f.out; ++r)
      std::copy(w.row(r), w.row(r) + f.in, f.w.data() + r * f.in);
    f.bias = std::move(b);
    if (f.format == "gsparse_f32" || f.format == "gsparse_i8") {
      sparse::BlockMask mask = sparse::nonzero_blocks(f.view(), opt.sparse_block, name);
      if (opt.prune > 0.0 && mask.sparsity() < opt.prune) {
        mask = sparse::prune_by_norm(f.view(), {opt.sparse_block, opt.prune, false}, name);
      }
      const std::size_t R = mask.shape.rows, C = mask.shape.cols;
      for (std::size_t r = 0; r < f.out; ++r) {
        for (std::size_t c = 0; c < f.in; ++c) {
          if (!mask.keep[(r / R) * mask.block_cols() + c / C]) f.w[r * f.in + c] = 0.0f;
        }
      }
      f.mask = std::move(mask);
    }
    return f;
  };
  // Layer `name` [r, c] as a full float weight: from `<name>.weight`, or from the parts of
  // a converted layer (Model::save), dequantized. Re-quantizing per channel gives the
  // stored INT8 values back, so shards of an INT8 file hold the file's weights.
  auto weight = [&](const std::string& name, std::size_t r, std::size_t c) {
    if (!has_stored_parts(file, name)) {
      const auto w = matrix(name + ".weight", r, c);
      return full(w.view(), vec(name + ".bias", r, false), name);
    }
    std::set<std::string> parts;
    const nn::AnyLinear stored = read_stored_linear(file, name, r, c, parts);
    const std::vector<float> w = stored.to_dense();
    return full(ConstMatrixView(w.data(), r, c), stored.bias(), name);
  };
  // A calibrated activation alpha stored with the layer holds for any slice of it: a
  // column-parallel slice sees the same inputs, a row-parallel one a subset of them.
  auto with_alpha = [&](nn::AnyLinear l) {
    const std::string an = l.name() + ".input_alpha";
    if (l.quantizes_input() && file.contains(an)) {
      const auto& info = file.info(an);
      if (info.shape.size() != 1 || info.shape[0] != 1) {
        fail<ShapeError>("parallel", "tensor shape", "[1]",
                         std::to_string(info.shape.size()) + "-d tensor", where(an));
      }
      const float alpha = file.load<float>(an).data()[0];
      if (!(alpha >= 0.0f) || !std::isfinite(alpha)) {
        fail<FormatError>("parallel", "activation alpha must be finite and >= 0", ">= 0", alpha,
                          where(an));
      }
      l.set_activation_alpha(alpha);
    }
    return l;
  };
  auto bias_rows = [](const std::vector<float>& b, std::size_t r0, std::size_t n) {
    return b.empty() ? std::vector<float>{}
                     : std::vector<float>(b.begin() + r0, b.begin() + r0 + n);
  };
  // Column-parallel: output rows [r0, r0 + n), all inputs.
  auto rows = [&](const detail::FullWeight& f, std::size_t r0, std::size_t n) {
    return with_alpha(detail::slice_linear(f, r0, n, 0, f.in, bias_rows(f.bias, r0, n)));
  };
  // Row-parallel: all outputs, inputs [c0, c0 + n); the bias is added once, by index 0.
  auto cols = [&](const detail::FullWeight& f, std::size_t c0, std::size_t n) {
    return with_alpha(
        detail::slice_linear(f, 0, f.out, c0, n, tp0 ? f.bias : std::vector<float>{}));
  };

  if (first_stage()) {
    const auto t = matrix("embed.weight", cfg_.vocab, e);
    embed_ = std::make_unique<nn::Embedding>(t.view(), "embed");
    if (cfg_.positions == PositionKind::Learned) {
      const auto p = matrix("pos_embed.weight", cfg_.max_seq_len, e);
      pos_ = std::make_unique<nn::Embedding>(p.view(), "pos_embed");
    }
  }
  nn::GatedAttentionConfig acfg;
  acfg.embed_dim = e;
  acfg.num_heads = cfg_.num_heads();
  acfg.local_heads = place_.head_count;
  acfg.gate = cfg_.gate == GatePosition::Output ? GatePosition::None : cfg_.gate;
  acfg.head_gate = cfg_.gate_granularity;
  acfg.tau = cfg_.skip_threshold;
  if (cfg_.positions == PositionKind::Rotary) acfg.rotary_base = cfg_.rope_base;
  out_gate_width_ = cfg_.gate == GatePosition::Output ? qn : 0;
  for (std::size_t l = place_.first_layer; l < place_.last_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const std::string a = p + "attn.attention.";
    Block blk{norm(p + "norm1"), norm(p + "norm2"), nullptr, nullptr, nullptr};
    // q, k and v: PyTorch's packed in_proj, or each by its own name in a converted file.
    std::vector<detail::FullWeight> qkv;
    if (file.contains(a + "in_proj_weight")) {
      const auto in_w = matrix(a + "in_proj_weight", 3 * e, e);
      const std::vector<float> in_b = vec(a + "in_proj_bias", 3 * e, false);
      const char* names[] = {"q_proj", "k_proj", "v_proj"};
      for (std::size_t i = 0; i < 3; ++i) {
        qkv.push_back(
            full(in_w.view().row_range(i * e, e), bias_rows(in_b, i * e, e), a + names[i]));
      }
    } else {
      for (const char* n : {"q_proj", "k_proj", "v_proj"}) qkv.push_back(weight(a + n, e, e));
    }
    nn::AnyLinear q = rows(qkv[0], q0, qn);
    nn::AnyLinear k = rows(qkv[1], q0, qn);
    nn::AnyLinear v = rows(qkv[2], q0, qn);
    nn::AnyLinear o = cols(weight(a + "out_proj", e, e), q0, qn);
    std::optional<nn::AnyLinear> gate;
    if (cfg_.gate != GatePosition::None) {
      const bool headwise =
          cfg_.gate == GatePosition::Head && cfg_.gate_granularity == HeadGate::Headwise;
      const std::size_t gw = headwise ? cfg_.num_heads() : e;
      const auto gf = weight(p + "attn.gate.0", gw, e);
      nn::AnyLinear g =
          headwise ? rows(gf, place_.first_head, place_.head_count) : rows(gf, q0, qn);
      if (cfg_.gate == GatePosition::Output) {
        blk.out_gate = std::make_unique<nn::AnyLinear>(std::move(g));
      } else {
        gate.emplace(std::move(g));
      }
    }
    blk.attn = std::make_unique<nn::GatedAttention<nn::AnyLinear>>(
        acfg, std::move(q), std::move(k), std::move(v), std::move(o), std::move(gate),
        a + "attention");
    nn::AnyLinear up = rows(weight(p + "ffn.up", cfg_.ffn, e), place_.first_ffn, place_.ffn_count);
    nn::AnyLinear down =
        cols(weight(p + "ffn.down", e, cfg_.ffn), place_.first_ffn, place_.ffn_count);
    blk.ffn = std::make_unique<nn::FeedForward>(std::move(up), std::move(down), cfg_.activation,
                                                p + "ffn");
    blocks_.push_back(std::move(blk));
  }
  if (last_stage()) {
    norm_f_ = std::make_unique<Norm>(norm("norm_f"));
    if (!cfg_.tied_lm_head) {
      const auto h = matrix("lm_head.weight", cfg_.vocab, e);
      lm_head_ = std::make_unique<nn::Embedding>(h.view(), "lm_head");
    } else if (embed_) {
      tied_ = embed_.get();
    } else {
      const auto t = matrix("embed.weight", cfg_.vocab, e);
      tied_own_ = std::make_unique<nn::Embedding>(t.view(), "embed");
      tied_ = tied_own_.get();
    }
    if (opt.int8_head || cfg_.head_format == "dense_i8") {  // as Model's: plans match one device
      head_i8_ = std::make_unique<quant::DenseI8>(lm_head_ ? lm_head_->table() : embed_table(),
                                                  std::vector<float>{},
                                                  lm_head_ ? "lm_head" : "embed (tied head)");
    }
  }
  for (const auto& [layer, format] : opt.formats) {
    if (!is_linear_name(layer)) {
      fail<ConfigError>("parallel", "format for a layer the model does not have",
                        "a linear layer name", layer, file.name() + ": LoadOptions::formats");
    }
  }
}

DYNASPARSE_COMPILED_INLINE bool ModelShard::is_linear_name(const std::string& name) const {
  for (std::size_t l = 0; l < cfg_.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* s : {"attn.attention.q_proj", "attn.attention.k_proj", "attn.attention.v_proj",
                          "attn.attention.out_proj", "attn.gate.0", "ffn.up", "ffn.down"}) {
      if (name == p + s) return true;
    }
  }
  return false;
}

}  // namespace parallel
DYNASPARSE_NAMESPACE_END
