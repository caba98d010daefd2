// SPDX-License-Identifier: Apache-2.0
// The demo models' decoding variants, shared by model_bench.cpp (BM_ModelDecode,
// BM_ModelLinears) and decode_ab.cpp (scripts/decode-ab.sh), so that both build a variant
// from its name the same way and measure the same steps.
#pragma once

#include <cstddef>
#include <string>

namespace bench_models {

/// Every variant, in BM_ModelDecode's order: fp32_dense is the baseline; sparse70 the trained
/// 70% group-sparse model; int8 every linear layer INT8 with dynamic per-row activations;
/// _int8head the output head (tied to the embedding) INT8 too; _i8kv the KV cache in INT8.
inline constexpr const char* variants[] = {
    "fp32_dense",    "fp32_sparse70",          "int8_dense",
    "int8_sparse70", "int8_sparse70_int8head", "int8_sparse70_int8head_i8kv"};

/// Bytes of the held-out text: the prompt, prefilled and not timed, then the bytes decoded
/// one step at a time (positions 128-191, the demo's decode measure).
inline constexpr std::size_t prompt_bytes = 128, decode_bytes = 64;

/// What a variant's name asks for.
struct Variant {
  bool sparse = false;     // fortunes_sparse70.safetensors, else fortunes_dense
  bool int8 = false;       // LoadOptions::int8
  bool int8_head = false;  // LoadOptions::int8_head
  bool i8kv = false;       // sessions with KVDType::I8, else F32
  /// The model file under the models directory, with its leading '/'.
  const char* file() const noexcept {
    return sparse ? "/fortunes_sparse70.safetensors" : "/fortunes_dense.safetensors";
  }
};

inline Variant parse_variant(const std::string& name) {
  Variant v;
  v.sparse = name.find("sparse70") != std::string::npos;
  v.int8 = name.rfind("int8", 0) == 0;
  v.int8_head = name.find("_int8head") != std::string::npos;
  v.i8kv = name.find("_i8kv") != std::string::npos;
  return v;
}

}  // namespace bench_models
