// SPDX-License-Identifier: Apache-2.0
// Model's members, declared in model/model.hpp. That header includes this one, so
// header-only users never name it; under DYNASPARSE_COMPILED, src/model.cpp (the
// dynasparse::compiled library) is its only includer, and the definitions are not inline.
#pragma once

#include "dynasparse/model/model.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN

DYNASPARSE_COMPILED_INLINE Model Model::load(const std::string& path, const LoadOptions& options) {
  const io::SafetensorsFile file(path, options.limits);
  return from_file(file, options);
}

DYNASPARSE_COMPILED_INLINE Model Model::from_file(const io::SafetensorsFile& file,
                                                  const LoadOptions& options) {
  const auto meta = file.metadata().find("dynasparse.config");
  if (meta == file.metadata().end()) {
    ::dynasparse::detail::fail<FormatError>("model", "missing model config",
                                            "metadata key dynasparse.config", "none", file.name());
  }
  Model m(config_from_json(meta->second, file.name() + " metadata"));
  m.build(file, options);
  return m;
}

DYNASPARSE_COMPILED_INLINE Session Model::new_session(std::size_t max_len, nn::KVDType kv) const {
  Session s;
  max_len = max_len ? std::min(max_len, cfg_.max_seq_len) : cfg_.max_seq_len;
  for (std::size_t l = 0; l < cfg_.layers; ++l) {
    s.caches_.emplace_back(1, cfg_.num_heads(), cfg_.head_dim(), max_len, kv,
                           "layers." + std::to_string(l) + ".kv");
  }
  return s;
}

DYNASPARSE_COMPILED_INLINE void Model::save(const std::string& path) const {
  io::SafetensorsWriter w;
  w.add("embed.weight", embed_->table());
  if (pos_) w.add("pos_embed.weight", pos_->table());
  auto add_norm = [&](const Norm& n, const std::string& name) {
    std::visit(
        [&](const auto& norm) {
          w.add<float>(name + ".weight", {norm.weight().size()}, norm.weight().data());
          if constexpr (std::is_same_v<std::decay_t<decltype(norm)>, nn::LayerNorm>) {
            if (!norm.bias().empty())
              w.add<float>(name + ".bias", {norm.bias().size()}, norm.bias().data());
          }
        },
        n);
  };
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    const Block& blk = blocks_[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    add_norm(blk.norm1, p + "norm1");
    add_norm(blk.norm2, p + "norm2");
    std::vector<const nn::AnyLinear*> lin;
    std::as_const(*blk.attn).for_each_linear([&](const nn::AnyLinear& x) { lin.push_back(&x); });
    // PyTorch's packed in_proj while q, k and v are all float, as the exporter writes it.
    const bool packed = std::all_of(lin.begin(), lin.begin() + 3, [](const nn::AnyLinear* x) {
      return std::string(x->format_name()) == "dense_f32";
    });
    if (packed) {
      const std::string base = p + "attn.attention.in_proj_";
      // A packed bias covers q, k and v: a projection without one contributes zeros.
      const bool any_bias = std::any_of(lin.begin(), lin.begin() + 3,
                                        [](const nn::AnyLinear* x) { return !x->bias().empty(); });
      std::vector<float> weight, bias;
      for (std::size_t i = 0; i < 3; ++i) {
        const std::vector<float> wi = lin[i]->to_dense();
        weight.insert(weight.end(), wi.begin(), wi.end());
        const std::vector<float>& bi = lin[i]->bias();
        if (!any_bias) continue;
        if (bi.empty())
          bias.insert(bias.end(), cfg_.hidden, 0.0f);
        else
          bias.insert(bias.end(), bi.begin(), bi.end());
      }
      w.add<float>(base + "weight", {3 * cfg_.hidden, cfg_.hidden}, weight.data());
      if (any_bias) w.add<float>(base + "bias", {bias.size()}, bias.data());
    }
    for (std::size_t i = packed ? 3 : 0; i < lin.size(); ++i) write_linear(w, *lin[i]);
    blk.ffn.for_each_linear([&](const nn::AnyLinear& x) { write_linear(w, x); });
  }
  add_norm(*norm_f_, "norm_f");
  if (lm_head_) w.add("lm_head.weight", lm_head_->table());
  if (classifier_) {
    w.add("classifier.weight", classifier_->table());
    w.add<float>("classifier.bias", {classifier_bias_.size()}, classifier_bias_.data());
  }
  w.set_metadata("format", "pt");
  w.set_metadata("dynasparse.config", to_json(cfg_).dump());
  w.write(path);
}

DYNASPARSE_COMPILED_INLINE std::map<std::string, float> Model::calibrate(
    const std::vector<std::vector<std::int32_t>>& samples,
    const quant::CalibratorOptions& options) {
  quant::Calibrator cal(options);
  // The same input feeds q, k and v: observe it once, under each name only at the end.
  for_each_linear([&](nn::AnyLinear& l) {
    const std::string key = tap_key(l.name());
    l.set_tap([&cal, key](ConstMatrixView x) { cal.observe(key, x); });
  });
  struct Untap {
    Model* m;
    ~Untap() {
      m->for_each_linear([](nn::AnyLinear& l) { l.set_tap({}); });
    }
  } untap{this};
  Workspace ws;
  std::vector<float> logits;
  cal.run(samples.size(), [&](std::size_t i, quant::Calibrator&) {
    const auto& t = samples[i];
    logits.resize(t.size() * out_dim());
    forward(t.data(), t.size(), MatrixView(logits.data(), t.size(), out_dim()), ws);
  });
  std::map<std::string, float> out;
  for_each_linear([&](nn::AnyLinear& l) { out[l.name()] = cal.alpha(tap_key(l.name())); });
  return out;
}

DYNASPARSE_COMPILED_INLINE void Model::set_activation_alphas(
    const std::map<std::string, float>& alphas) {
  std::set<std::string> seen;
  for_each_linear([&](nn::AnyLinear& l) {
    const auto it = alphas.find(l.name());
    if (it == alphas.end()) return;
    seen.insert(it->first);
    if (l.quantizes_input()) l.set_activation_alpha(it->second);
  });
  for (const auto& [name, alpha] : alphas) {
    if (!seen.count(name)) {
      ::dynasparse::detail::fail<ConfigError>("model", "activation alpha for an unknown layer",
                                              "a linear layer name", name, "set_activation_alphas");
    }
  }
}

DYNASPARSE_COMPILED_INLINE void Model::set_skip_threshold(float tau) {
  if (!(tau >= 0.0f && tau <= 1.0f)) {
    ::dynasparse::detail::fail<ConfigError>("model", "skip threshold out of range", "[0, 1]", tau,
                                            "skip_threshold");
  }
  for (auto& blk : blocks_) blk.attn->set_tau(tau);
  cfg_.skip_threshold = tau;
}

DYNASPARSE_COMPILED_INLINE nn::AttentionStats Model::forward(const std::int32_t* tokens,
                                                             std::size_t n, MatrixView logits,
                                                             Workspace& ws) const {
  check_shape(logits, n, out_dim(), "model", "logits");
  if (n > cfg_.max_seq_len) {
    ::dynasparse::detail::fail<ShapeError>("model", "sequence longer than the model's maximum",
                                           "<= " + std::to_string(cfg_.max_seq_len), n, "tokens");
  }
  Workspace::Scope scope(ws);
  const std::size_t e = cfg_.hidden;
  MatrixView x(ws.allocate<float>(n * e), n, e);
  embed(tokens, n, 0, x);
  MatrixView t1(ws.allocate<float>(n * e), n, e), t2(ws.allocate<float>(n * e), n, e);
  nn::AttentionStats stats;
  nn::AttentionMasks masks;
  masks.causal = cfg_.causal;
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    const Block& blk = blocks_[l];
    apply_norm(blk.norm1, x, t1);
    stats += blk.attn->forward(t1, t1, t1, 1, t2, ws, masks);
    add_into(x, t2);
    apply_norm(blk.norm2, x, t1);
    blk.ffn.forward(t1, t2, ws);
    add_into(x, t2);
    check_finite(x, l);
  }
  head(x, logits, t1, ws);
  return stats;
}

DYNASPARSE_COMPILED_INLINE nn::AttentionStats Model::classify(const std::int32_t* tokens,
                                                              std::size_t n, float* out,
                                                              Workspace& ws) const {
  if (cfg_.num_classes == 0) {
    ::dynasparse::detail::fail<UnsupportedError>("model", "classify() needs a classifier head",
                                                 "num_classes > 0", cfg_.num_classes, "classify");
  }
  if (n == 0)
    ::dynasparse::detail::fail<ShapeError>("model", "empty sequence", ">= 1 token", 0, "classify");
  Workspace::Scope scope(ws);
  const std::size_t c = cfg_.num_classes;
  float* logits = ws.allocate<float>(n * c);
  const nn::AttentionStats stats = forward(tokens, n, MatrixView(logits, n, c), ws);
  if (cfg_.causal) {
    std::copy_n(logits + (n - 1) * c, c, out);
    return stats;
  }
  for (std::size_t j = 0; j < c; ++j) {
    double sum = 0.0;  // n up to 2^20 terms: a float sum would lose digits
    for (std::size_t i = 0; i < n; ++i) sum += logits[i * c + j];
    out[j] = static_cast<float>(sum / static_cast<double>(n));
  }
  return stats;
}

DYNASPARSE_COMPILED_INLINE void Model::decode(const std::int32_t* tokens, std::size_t n, Session& s,
                                              MatrixView logits) const {
  if (!cfg_.causal) {
    ::dynasparse::detail::fail<UnsupportedError>("model",
                                                 "cached decoding of a bidirectional model",
                                                 "a causal model", "causal = false", "decode");
  }
  check_shape(logits, n, out_dim(), "model", "logits");
  check_capacity(s, n);
  Workspace& ws = s.ws_;
  // Nothing of the session's scratch is live between calls: merge the blocks a long prompt
  // grew, so steps allocate from one block.
  ws.reset();
  Workspace::Scope scope(ws);
  const std::size_t e = cfg_.hidden;
  MatrixView x(ws.allocate<float>(n * e), n, e);
  embed(tokens, n, s.pos_, x);
  MatrixView t1(ws.allocate<float>(n * e), n, e), t2(ws.allocate<float>(n * e), n, e);
  for (std::size_t l = 0; l < blocks_.size(); ++l) {
    const Block& blk = blocks_[l];
    apply_norm(blk.norm1, x, t1);
    s.stats_ += blk.attn->forward_cached(t1, 1, s.caches_[l], t2, ws);
    add_into(x, t2);
    apply_norm(blk.norm2, x, t1);
    blk.ffn.forward(t1, t2, ws);
    add_into(x, t2);
    check_finite(x, l);
  }
  head(x, logits, t1, ws);
  s.pos_ += n;
}

DYNASPARSE_COMPILED_INLINE GenerateResult Model::generate(const std::vector<std::int32_t>& prompt,
                                                          const GenerateOptions& opt,
                                                          Session& s) const {
  if (cfg_.num_classes != 0) {
    ::dynasparse::detail::fail<UnsupportedError>(
        "model", "generation needs an LM head; this model is a classifier", "num_classes = 0",
        cfg_.num_classes, "generate");
  }
  validate(opt.sampling);
  GenerateResult r;
  if (prompt.empty())
    ::dynasparse::detail::fail<ShapeError>("model", "empty prompt", ">= 1 token", 0, "generate");
  check_capacity(s, prompt.size());  // before the logits are allocated
  SplitMix64 rng(opt.sampling.seed);
  std::vector<float> logits(prompt.size() * cfg_.vocab);
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  decode(prompt.data(), prompt.size(), s, MatrixView(logits.data(), prompt.size(), cfg_.vocab));
  r.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  const float* last = logits.data() + (prompt.size() - 1) * cfg_.vocab;
  t0 = clock::now();
  const std::size_t capacity = s.caches_.empty() ? cfg_.max_seq_len : s.caches_[0].max_len();
  for (std::size_t i = 0; i < opt.max_new_tokens; ++i) {
    const std::int32_t tok = sample_token(last, cfg_.vocab, opt.sampling, rng);
    r.tokens.push_back(tok);
    if (opt.on_token && !opt.on_token(tok)) break;
    if (std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), tok) != opt.stop_tokens.end())
      break;
    if (i + 1 == opt.max_new_tokens || s.pos_ >= capacity) break;
    decode(&tok, 1, s, MatrixView(logits.data(), 1, cfg_.vocab));
    last = logits.data();
  }
  r.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return r;
}

DYNASPARSE_COMPILED_INLINE void Model::check_finite(ConstMatrixView x, std::size_t layer) const {
  if (!checked_) return;
  for (std::size_t r = 0; r < x.rows(); ++r) {
    for (std::size_t c = 0; c < x.cols(); ++c) {
      if (!std::isfinite(x(r, c))) {
        ::dynasparse::detail::fail<Error>(
            "model", "non-finite activation", "finite values", x(r, c),
            "layers." + std::to_string(layer) + " output, token " + std::to_string(r));
      }
    }
  }
}

DYNASPARSE_COMPILED_INLINE void Model::add_into(MatrixView x, ConstMatrixView d) noexcept {
  for (std::size_t r = 0; r < x.rows(); ++r) {
    float* xr = x.row(r);
    const float* dr = d.row(r);
    // alpha = 1: the multiply is exact, so this is x + d rounded once, as a plain loop.
    simd::axpy_f32(1.0f, dr, xr, x.cols());
  }
}

DYNASPARSE_COMPILED_INLINE void Model::apply_norm(const Norm& n, ConstMatrixView x, MatrixView y) {
  std::visit([&](const auto& norm) { norm.forward(x, y); }, n);
}

DYNASPARSE_COMPILED_INLINE void Model::check_capacity(const Session& s, std::size_t n) const {
  if (s.caches_.size() != blocks_.size()) {
    ::dynasparse::detail::fail<ConfigError>("model", "session made for another model",
                                            blocks_.size(), s.caches_.size(), "session");
  }
  const std::size_t cap =
      s.caches_.empty() ? cfg_.max_seq_len : std::min(cfg_.max_seq_len, s.caches_[0].max_len());
  if (s.pos_ > cap || n > cap - s.pos_) {
    ::dynasparse::detail::fail<ShapeError>(
        "model", "sequence beyond the session's capacity", "<= " + std::to_string(cap) + " tokens",
        std::to_string(s.pos_) + " + " + std::to_string(n) + " tokens", "session");
  }
}

DYNASPARSE_COMPILED_INLINE void Model::embed(const std::int32_t* tokens, std::size_t n,
                                             std::size_t start, MatrixView x) const {
  embed_->forward(tokens, n, x);
  if (!pos_) return;  // rotary positions act inside attention
  const ConstMatrixView pos = pos_->table();
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t c = 0; c < cfg_.hidden; ++c) x(i, c) += pos(start + i, c);
  }
}

DYNASPARSE_COMPILED_INLINE void Model::head(ConstMatrixView x, MatrixView logits,
                                            MatrixView scratch, Workspace& ws) const {
  apply_norm(*norm_f_, x, scratch);
  if (head_i8_) {
    head_i8_->forward(scratch, logits, ws);  // the classifier's bias included
    return;
  }
  const ConstMatrixView w = classifier_ ? classifier_->table()
                            : lm_head_  ? lm_head_->table()
                                        : embed_->table();
  ::dynasparse::detail::keep_eigen_single_threaded();
  // Eigen stays on one thread (its OpenMP workers would spin against the pool's), so the
  // head is split here, by output columns: the whole vocabulary of a decoding step is one
  // matrix-vector product over the embedding table, a quarter of an INT8 step's weight bytes
  // in the demo model.
  const std::size_t m = x.rows(), k = w.cols(), n = w.rows();
  const std::size_t grain = std::max<std::size_t>(16, parallel_min_macs_f32 / (m * k + 1));
  const ConstMatrixView xs(scratch);
  parallel_for(0, n, grain, [&](std::size_t c0, std::size_t c1) {
    MatrixView lp = logits.col_range(c0, c1 - c0);
    as_eigen(lp).noalias() = as_eigen(xs) * as_eigen(w.row_range(c0, c1 - c0)).transpose();
  });
  if (!classifier_) return;
  for (std::size_t r = 0; r < logits.rows(); ++r) {
    float* row = logits.row(r);
    for (std::size_t c = 0; c < classifier_bias_.size(); ++c) row[c] += classifier_bias_[c];
  }
}

DYNASPARSE_COMPILED_INLINE std::string Model::tap_key(const std::string& name) {
  for (const char* p : {".q_proj", ".k_proj", ".v_proj"}) {
    const std::size_t n = std::char_traits<char>::length(p);
    if (name.size() > n && name.compare(name.size() - n, n, p) == 0)
      return name.substr(0, name.size() - n) + ".qkv";
  }
  return name;
}

DYNASPARSE_COMPILED_INLINE void Model::build(const io::SafetensorsFile& file,
                                             const LoadOptions& opt) {
  if (cfg_.max_seq_len > opt.max_seq_len) {
    ::dynasparse::detail::fail<ConfigError>(
        "model", "context longer than LoadOptions::max_seq_len allows",
        "<= " + std::to_string(opt.max_seq_len), cfg_.max_seq_len, file.name() + ": max_seq_len");
  }
  if (!(opt.prune >= 0.0 && opt.prune < 1.0)) {
    ::dynasparse::detail::fail<ConfigError>("model", "prune fraction", "0 <= prune < 1", opt.prune,
                                            "LoadOptions::prune");
  }
  for (const auto& [layer, format] : opt.formats) cfg_.formats[layer] = format;
  validate(cfg_);
  std::set<std::string> used;
  const std::size_t e = cfg_.hidden;
  auto where = [&](const std::string& t) { return file.name() + ": " + t; };
  auto shape_of = [&](const std::string& name) {
    const auto& shape = file.info(name).shape;
    std::string got = "[";
    for (std::size_t i = 0; i < shape.size(); ++i)
      got += (i ? ", " : "") + std::to_string(shape[i]);
    return got + "]";
  };
  // NaN or Inf in any weight would poison every output: refuse the file, naming it, before
  // a conversion at load (INT8, pruning) meets the value and names only the layer.
  std::set<std::string> finite;  // float tensors already checked
  auto check_finite_weights = [&](const std::string& name, const float* v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(v[i])) {
        ::dynasparse::detail::fail<FormatError>("model", "non-finite weight", "finite values", v[i],
                                                where(name) + " element " + std::to_string(i));
      }
    }
    finite.insert(name);
  };
  auto matrix = [&](const std::string& name, std::size_t rows, std::size_t cols) {
    if (!file.contains(name))
      ::dynasparse::detail::fail<FormatError>("model", "missing tensor", name, "nothing",
                                              where(name));
    const auto& info = file.info(name);
    if (info.shape.size() != 2 || info.shape[0] != rows || info.shape[1] != cols) {
      ::dynasparse::detail::fail<ShapeError>("model", "tensor shape", shape_string(rows, cols),
                                             shape_of(name), where(name));
    }
    used.insert(name);
    auto t = file.load<float>(name);
    check_finite_weights(name, t.data(), rows * cols);
    return t;
  };
  auto vec = [&](const std::string& name, std::size_t n, bool required) -> std::vector<float> {
    if (!file.contains(name)) {
      if (required)
        ::dynasparse::detail::fail<FormatError>("model", "missing tensor", name, "nothing",
                                                where(name));
      return {};
    }
    const auto& info = file.info(name);
    if (info.shape.size() != 1 || info.shape[0] != n) {
      ::dynasparse::detail::fail<ShapeError>("model", "tensor shape", "[" + std::to_string(n) + "]",
                                             shape_of(name), where(name));
    }
    used.insert(name);
    const auto t = file.load<float>(name);
    check_finite_weights(name, t.data(), n);
    return std::vector<float>(t.data(), t.data() + n);
  };
  auto norm = [&](const std::string& prefix) -> Norm {
    if (cfg_.norm == NormKind::LayerNorm) {
      return nn::LayerNorm(vec(prefix + ".weight", e, true), vec(prefix + ".bias", e, false),
                           cfg_.norm_eps, prefix);
    }
    return nn::RMSNorm(vec(prefix + ".weight", e, true), cfg_.norm_eps, prefix);
  };
  // Each linear layer in the format the config names for it (after LoadOptions).
  std::size_t made_bytes = 0;  // bytes of the linear layers made so far
  auto wanted_format = [&](const std::string& name) {
    const auto it = cfg_.formats.find(name);
    std::string format = it == cfg_.formats.end() ? "dense_f32" : it->second;
    if (opt.int8) format = format.rfind("gsparse", 0) == 0 ? "gsparse_i8" : "dense_i8";
    return format;
  };
  auto record = [&](const std::string& name, const std::string& format) {
    formats_.emplace_back(name, format);
    if (format != "dense_f32") cfg_.formats[name] = format;
  };
  // `blocks`: the stored block structure of a group-sparse layer converted between float
  // and INT8 (kept as it is, so its block shape survives); otherwise the non-zero blocks.
  auto make_format = [&](ConstMatrixView w, std::vector<float> b, const std::string& name,
                         const sparse::BlockMask* blocks = nullptr) -> nn::AnyLinear {
    const std::string format = wanted_format(name);
    record(name, format);
    if (format == "dense_i8")
      return nn::Linear<quant::DenseI8>(quant::DenseI8(w, std::move(b), name));
    if (format == "gsparse_f32" || format == "gsparse_i8") {
      sparse::BlockMask mask = blocks ? *blocks : sparse::nonzero_blocks(w, opt.sparse_block, name);
      if (opt.prune > 0.0 && mask.sparsity() < opt.prune) {
        mask = sparse::prune_by_norm(w, {opt.sparse_block, opt.prune, false}, name);
      }
      if (format == "gsparse_i8") {
        return nn::Linear<sparse::GroupSparseI8>(
            sparse::GroupSparseI8(w, mask, std::move(b), name));
      }
      return nn::Linear<sparse::GroupSparseF32>(
          sparse::GroupSparseF32(w, mask, std::move(b), name));
    }
    return nn::Linear<nn::DenseF32>(nn::DenseF32(w, std::move(b), name));
  };
  // Counts the layer's bytes and applies a calibrated activation alpha stored with it.
  auto finish = [&](nn::AnyLinear l) -> nn::AnyLinear {
    made_bytes += l.bytes();
    // A calibrated activation alpha (`dynasparse quantize --calibrate`) travels as a
    // one-element tensor; float loads of the same file ignore it.
    const std::string alpha_name = l.name() + ".input_alpha";
    if (file.contains(alpha_name)) {
      const auto& info = file.info(alpha_name);
      if (info.shape.size() != 1 || info.shape[0] != 1) {
        ::dynasparse::detail::fail<ShapeError>("model", "tensor shape", "[1]",
                                               std::to_string(info.shape.size()) + "-d tensor",
                                               where(alpha_name));
      }
      used.insert(alpha_name);
      const float alpha = file.load<float>(alpha_name).data()[0];
      if (!(alpha >= 0.0f) || !std::isfinite(alpha)) {
        ::dynasparse::detail::fail<FormatError>("model", "activation alpha must be finite and >= 0",
                                                ">= 0", alpha, where(alpha_name));
      }
      if (l.quantizes_input()) l.set_activation_alpha(alpha);
    }
    return l;
  };
  auto make = [&](ConstMatrixView w, std::vector<float> b,
                  const std::string& name) -> nn::AnyLinear {
    return finish(make_format(w, std::move(b), name));
  };
  // Layer `name` [rows, cols]: from its float `.weight` (and `.bias`), or from the parts
  // Model::save wrote for a converted layer (model/stored_linear.hpp). Parts are used as
  // they are when they hold the format asked for (no requantization); otherwise the layer
  // goes through float into the format asked for.
  auto linear = [&](const std::string& name, std::size_t rows, std::size_t cols) -> nn::AnyLinear {
    if (!has_stored_parts(file, name)) {
      const auto w = matrix(name + ".weight", rows, cols);
      return make(w.view(), vec(name + ".bias", rows, false), name);
    }
    nn::AnyLinear stored = read_stored_linear(file, name, rows, cols, used);
    const std::string format = wanted_format(name);
    const bool prune_more =
        opt.prune > 0.0 && format.rfind("gsparse", 0) == 0 && 1.0 - stored.density() < opt.prune;
    if (format == stored.format_name() && !prune_more) {
      record(name, format);
      return finish(std::move(stored));
    }
    const std::vector<float> w = stored.to_dense();
    std::optional<sparse::BlockMask> blocks;
    if (!prune_more) {
      if (const auto* f = std::get_if<nn::Linear<sparse::GroupSparseF32>>(&stored.variant()))
        blocks = f->format().csr().mask();
      if (const auto* i = std::get_if<nn::Linear<sparse::GroupSparseI8>>(&stored.variant()))
        blocks = i->format().csr().mask();
    }
    return finish(make_format(ConstMatrixView(w.data(), rows, cols), stored.bias(), name,
                              blocks ? &*blocks : nullptr));
  };
  {
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
  acfg.gate = cfg_.gate;
  acfg.head_gate = cfg_.gate_granularity;
  acfg.tau = cfg_.skip_threshold;
  if (cfg_.positions == PositionKind::Rotary) acfg.rotary_base = cfg_.rope_base;
  for (std::size_t l = 0; l < cfg_.layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    Norm n1 = norm(p + "norm1");
    const std::size_t bytes_before = made_bytes;
    // q, k and v: slices of PyTorch's packed in_proj_weight while all three are float;
    // each under its own name once any of them is stored converted.
    const std::string base = p + "attn.attention";
    std::vector<nn::AnyLinear> qkv;
    if (file.contains(base + ".in_proj_weight")) {
      const auto w = matrix(base + ".in_proj_weight", 3 * e, e);
      const std::vector<float> b = vec(base + ".in_proj_bias", 3 * e, false);
      const char* names[] = {".q_proj", ".k_proj", ".v_proj"};
      for (std::size_t i = 0; i < 3; ++i) {
        std::vector<float> bi =
            b.empty() ? std::vector<float>{}
                      : std::vector<float>(b.begin() + i * e, b.begin() + (i + 1) * e);
        qkv.push_back(make(w.view().row_range(i * e, e), std::move(bi), base + names[i]));
      }
    } else {
      for (const char* n : {".q_proj", ".k_proj", ".v_proj"}) qkv.push_back(linear(base + n, e, e));
    }
    nn::AnyLinear out_proj = linear(base + ".out_proj", e, e);
    std::optional<nn::AnyLinear> gate;
    if (cfg_.gate != GatePosition::None) {
      const bool headwise =
          cfg_.gate == GatePosition::Head && cfg_.gate_granularity == HeadGate::Headwise;
      gate.emplace(linear(p + "attn.gate.0", headwise ? cfg_.num_heads() : e, e));
    } else {
      // Files exported from the seed's module with the gate switched off may still carry it.
      for (const char* t : {"attn.gate.0.weight", "attn.gate.0.bias"}) {
        if (file.contains(p + t)) used.insert(p + t);
      }
    }
    auto attn = std::make_unique<nn::GatedAttention<nn::AnyLinear>>(
        acfg, std::move(qkv[0]), std::move(qkv[1]), std::move(qkv[2]), std::move(out_proj),
        std::move(gate), base);
    const std::size_t attn_bytes = made_bytes - bytes_before;
    Norm n2 = norm(p + "norm2");
    nn::AnyLinear up = linear(p + "ffn.up", cfg_.ffn, e);
    nn::AnyLinear down = linear(p + "ffn.down", e, cfg_.ffn);
    blocks_.push_back(Block{
        std::move(n1), std::move(n2), std::move(attn),
        nn::FeedForward(std::move(up), std::move(down), cfg_.activation, p + "ffn"), attn_bytes});
  }
  norm_f_ = std::make_unique<Norm>(norm("norm_f"));
  if (cfg_.num_classes != 0) {
    const auto c = matrix("classifier.weight", cfg_.num_classes, e);
    classifier_ = std::make_unique<nn::Embedding>(c.view(), "classifier");
    classifier_bias_ = vec("classifier.bias", cfg_.num_classes, true);
  } else if (!cfg_.tied_lm_head) {
    const auto h = matrix("lm_head.weight", cfg_.vocab, e);
    lm_head_ = std::make_unique<nn::Embedding>(h.view(), "lm_head");
  }
  if (opt.int8_head) cfg_.head_format = "dense_i8";  // so that save() records it
  if (cfg_.head_format == "dense_i8") {
    const ConstMatrixView w = classifier_ ? classifier_->table()
                              : lm_head_  ? lm_head_->table()
                                          : embed_->table();
    const char* name = classifier_ ? "classifier" : lm_head_ ? "lm_head" : "embed (tied head)";
    head_i8_ = std::make_unique<quant::DenseI8>(w, classifier_bias_, name);
  }
  // The float tensors read by other paths (a stored layer's scales and bias).
  for (const std::string& name : used) {
    const auto& info = file.info(name);
    if (finite.count(name) ||
        (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16)) {
      continue;
    }
    const auto values = file.load<float>(name);
    check_finite_weights(name, values.data(), values.size());
  }
  // A format named for no layer would otherwise leave the layer it meant in another format.
  const auto check_layers_named = [&](const std::map<std::string, std::string>& formats,
                                      const std::string& source) {
    for (const auto& entry : formats) {
      // (A structured binding cannot be captured by a lambda in C++17.)
      const std::string& layer = entry.first;
      const bool known = std::any_of(formats_.begin(), formats_.end(),
                                     [&](const auto& f) { return f.first == layer; });
      if (!known) {
        ::dynasparse::detail::fail<ConfigError>(
            "model", "format for a layer the model does not have", "a linear layer name",
            io::detail::shown_text(layer), file.name() + ": " + source);
      }
    }
  };
  check_layers_named(opt.formats, "LoadOptions::formats");
  check_layers_named(cfg_.formats, "the config's formats");
  if (!opt.allow_extra_tensors) {
    for (const std::string& name : file.names()) {
      if (!used.count(name)) {
        ::dynasparse::detail::fail<FormatError>("model", "tensor not used by the model",
                                                "only the model's tensors", name, file.name());
      }
    }
  }
}

DYNASPARSE_NAMESPACE_END
