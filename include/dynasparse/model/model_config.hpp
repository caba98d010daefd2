// SPDX-License-Identifier: Apache-2.0
// ModelConfig: the architecture of a model, stored as JSON in the safetensors metadata.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "dynasparse/error.hpp"
#include "dynasparse/io/detail/file.hpp"
#include "dynasparse/nn/feed_forward.hpp"
#include "dynasparse/nn/gated_attention.hpp"

DYNASPARSE_NAMESPACE_BEGIN

using nn::GatePosition;
using nn::HeadGate;
enum class NormKind { LayerNorm, RMSNorm };
enum class PositionKind { Learned, Rotary };

/// Model architecture. Defaults follow the seed's advice (heads = hidden / 8). The JSON form
/// (to_json / from_json) is what the safetensors `__metadata__` entry "dynasparse.config"
/// holds; unknown keys are rejected so a typo cannot silently select a default.
struct ModelConfig {
  std::size_t vocab = 256;
  std::size_t hidden = 256;
  std::size_t layers = 4;
  std::size_t heads = 0;  ///< 0: hidden / 8
  std::size_t ffn = 1024;
  nn::Activation activation = nn::Activation::Gelu;
  NormKind norm = NormKind::LayerNorm;
  float norm_eps = 1e-5f;
  PositionKind positions = PositionKind::Learned;
  /// Rotary base b (angles pos * b^(-2c/head_dim)); read only with PositionKind::Rotary.
  float rope_base = 10000.0f;
  std::size_t max_seq_len = 1024;
  GatePosition gate = GatePosition::Head;
  HeadGate gate_granularity = HeadGate::Headwise;  ///< Head position only
  float skip_threshold = 0.0f;  ///< tau: (query, head) pairs gated below it are skipped
  bool causal = true;           ///< decoder (causal LM) or encoder (bidirectional)
  bool tied_lm_head = true;     ///< LM head shares the embedding table
  /// > 0: a classifier head (`classifier.weight` [num_classes, hidden], `classifier.bias`)
  /// instead of the LM head; tied_lm_head is then ignored.
  std::size_t num_classes = 0;
  /// Weight format per linear layer name (e.g. "layers.0.ffn.up" -> "gsparse_i8"); layers not
  /// listed are "dense_f32".
  std::map<std::string, std::string> formats;
  /// Format of the output head's product (LM head or classifier): "dense_f32", or "dense_i8"
  /// for an INT8 copy of its float table made at load (LoadOptions::int8_head). Written to
  /// a file's config only when not "dense_f32".
  std::string head_format = "dense_f32";

  std::size_t num_heads() const noexcept { return heads ? heads : hidden / 8; }
  std::size_t head_dim() const noexcept { return hidden / num_heads(); }
};

namespace detail {
template <class E>
inline E parse_enum(const nlohmann::json& j, const char* key, std::initializer_list<std::pair<const char*, E>> names) {
  if (!j.is_string())
    fail<ConfigError>("model", "config value must be a string", "a string",
                      io::detail::shown_text(j.dump()), key);
  const std::string s = j.get<std::string>();
  std::string options;
  for (const auto& [n, v] : names) {
    if (s == n) return v;
    options += (options.empty() ? "" : "|") + std::string(n);
  }
  fail<ConfigError>("model", "unknown config value", options, io::detail::shown_text(s), key);
}
inline std::size_t parse_size(const nlohmann::json& j, const char* key, std::size_t lo, std::size_t hi) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<std::int64_t>() >= 0)) {
    fail<ConfigError>("model", "config value must be a non-negative integer", "an integer",
                      io::detail::shown_text(j.dump()), key);
  }
  const auto v = j.get<std::uint64_t>();
  if (v < lo || v > hi) {
    fail<ConfigError>("model", "config value out of range", std::to_string(lo) + ".." + std::to_string(hi), v, key);
  }
  return static_cast<std::size_t>(v);
}
inline float parse_float(const nlohmann::json& j, const char* key, float lo, float hi) {
  if (!j.is_number())
    fail<ConfigError>("model", "config value must be a number", "a number",
                      io::detail::shown_text(j.dump()), key);
  const double v = j.get<double>();
  if (!(v >= lo && v <= hi)) {
    fail<ConfigError>("model", "config value out of range", std::to_string(lo) + ".." + std::to_string(hi), v, key);
  }
  return static_cast<float>(v);
}
}  // namespace detail

/// Range of ModelConfig::rope_base: bases in use run from 10^4 to 10^6 or so.
inline constexpr float min_rope_base = 1.0f;
inline constexpr float max_rope_base = 1e9f;

/// Checks the relations between fields. @throws ConfigError naming the field.
inline void validate(const ModelConfig& c) {
  if (c.hidden == 0 || c.num_heads() == 0 || c.hidden % c.num_heads() != 0) {
    detail::fail<ConfigError>("model", "hidden size not divisible by the number of heads",
                              "a multiple of " + std::to_string(c.num_heads()), c.hidden, "heads");
  }
  if (c.positions == PositionKind::Rotary && c.head_dim() % 2 != 0) {
    detail::fail<ConfigError>("model", "rotary positions need an even head dimension", "even", c.head_dim(), "positions");
  }
  if (c.positions == PositionKind::Rotary && !(c.rope_base >= min_rope_base && c.rope_base <= max_rope_base)) {
    detail::fail<ConfigError>("model", "rotary base out of range", "1..1e9", c.rope_base, "rope_base");
  }
  for (const auto& [layer, format] : c.formats) {
    if (format != "dense_f32" && format != "dense_i8" && format != "gsparse_f32" && format != "gsparse_i8") {
      detail::fail<ConfigError>(
          "model", "unknown weight format", "dense_f32|dense_i8|gsparse_f32|gsparse_i8",
          io::detail::shown_text(format), "formats." + io::detail::shown_text(layer));
    }
  }
}

/// The JSON form of a config.
inline nlohmann::json to_json(const ModelConfig& c) {
  nlohmann::json j;
  j["vocab"] = c.vocab;
  j["hidden"] = c.hidden;
  j["layers"] = c.layers;
  j["heads"] = c.num_heads();
  j["ffn"] = c.ffn;
  j["activation"] = nn::activation_name(c.activation);
  j["norm"] = c.norm == NormKind::LayerNorm ? "layernorm" : "rmsnorm";
  j["norm_eps"] = c.norm_eps;
  j["positions"] = c.positions == PositionKind::Learned ? "learned" : "rotary";
  j["rope_base"] = c.rope_base;
  j["max_seq_len"] = c.max_seq_len;
  j["gate"] = c.gate == GatePosition::None ? "none" : (c.gate == GatePosition::Output ? "output" : "head");
  j["gate_granularity"] = c.gate_granularity == HeadGate::Elementwise ? "elementwise" : "headwise";
  j["skip_threshold"] = c.skip_threshold;
  j["causal"] = c.causal;
  j["tied_lm_head"] = c.tied_lm_head;
  j["num_classes"] = c.num_classes;
  j["formats"] = c.formats;
  if (c.head_format != "dense_f32") j["head_format"] = c.head_format;  // older readers lack it
  return j;
}

/// Parses and validates a config; `source` names where it came from in errors.
/// Limits keep a hostile file from requesting absurd allocations: vocab <= 2^24,
/// hidden <= 65536, layers <= 1024, ffn <= 2^20, max_seq_len <= 2^20, 1 <= rope_base <= 1e9.
/// @throws ConfigError on unknown keys, wrong types, out-of-range values or bad relations;
/// FormatError if `text` is not a JSON object.
inline ModelConfig config_from_json(const std::string& text, const std::string& source = "config") {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    detail::fail<FormatError>("model", "config is not a JSON object", "a JSON object",
                              io::detail::shown_text(text, 40), source);
  }
  ModelConfig c;
  using detail::parse_enum;
  using detail::parse_float;
  using detail::parse_size;
  for (const auto& [key, v] : j.items()) {
    const char* k = key.c_str();
    if (key == "vocab") c.vocab = parse_size(v, k, 1, std::size_t{1} << 24);
    else if (key == "hidden") c.hidden = parse_size(v, k, 1, 65536);
    else if (key == "layers") c.layers = parse_size(v, k, 0, 1024);
    else if (key == "heads") c.heads = parse_size(v, k, 0, 65536);
    else if (key == "ffn") c.ffn = parse_size(v, k, 1, std::size_t{1} << 20);
    else if (key == "activation") c.activation = parse_enum<nn::Activation>(v, k, {{"gelu", nn::Activation::Gelu}, {"silu", nn::Activation::Silu}, {"relu", nn::Activation::Relu}});
    else if (key == "norm") c.norm = parse_enum<NormKind>(v, k, {{"layernorm", NormKind::LayerNorm}, {"rmsnorm", NormKind::RMSNorm}});
    else if (key == "norm_eps") c.norm_eps = parse_float(v, k, 1e-12f, 1.0f);
    else if (key == "positions") c.positions = parse_enum<PositionKind>(v, k, {{"learned", PositionKind::Learned}, {"rotary", PositionKind::Rotary}});
    else if (key == "rope_base") c.rope_base = parse_float(v, k, min_rope_base, max_rope_base);
    else if (key == "max_seq_len") c.max_seq_len = parse_size(v, k, 1, std::size_t{1} << 20);
    else if (key == "gate") c.gate = parse_enum<GatePosition>(v, k, {{"none", GatePosition::None}, {"output", GatePosition::Output}, {"head", GatePosition::Head}});
    else if (key == "gate_granularity") c.gate_granularity = parse_enum<HeadGate>(v, k, {{"elementwise", HeadGate::Elementwise}, {"headwise", HeadGate::Headwise}});
    else if (key == "skip_threshold") c.skip_threshold = parse_float(v, k, 0.0f, 1.0f);
    else if (key == "causal") {
      if (!v.is_boolean())
        detail::fail<ConfigError>("model", "config value must be true or false", "a boolean",
                                  io::detail::shown_text(v.dump()), k);
      c.causal = v.get<bool>();
    } else if (key == "tied_lm_head") {
      if (!v.is_boolean())
        detail::fail<ConfigError>("model", "config value must be true or false", "a boolean",
                                  io::detail::shown_text(v.dump()), k);
      c.tied_lm_head = v.get<bool>();
    } else if (key == "num_classes") c.num_classes = parse_size(v, k, 0, std::size_t{1} << 20);
    else if (key == "head_format") {
      if (!v.is_string() ||
          (v.get<std::string>() != "dense_f32" && v.get<std::string>() != "dense_i8"))
        detail::fail<ConfigError>("model", "unknown head format", "dense_f32 or dense_i8",
                                  io::detail::shown_text(v.dump()), k);
      c.head_format = v.get<std::string>();
    } else if (key == "formats") {
      if (!v.is_object())
        detail::fail<ConfigError>("model", "formats must map layer names to formats", "an object",
                                  io::detail::shown_text(v.dump()), k);
      for (const auto& [layer, f] : v.items()) {
        if (!f.is_string())
          detail::fail<ConfigError>("model", "format must be a string", "a string",
                                    io::detail::shown_text(f.dump()),
                                    "formats." + io::detail::shown_text(layer));
        c.formats[layer] = f.get<std::string>();
      }
    } else {
      detail::fail<ConfigError>("model", "unknown config key", "a known key",
                                io::detail::shown_text(key), source);
    }
  }
  validate(c);
  return c;
}

DYNASPARSE_NAMESPACE_END
