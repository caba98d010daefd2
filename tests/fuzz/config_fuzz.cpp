// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: any text handed to the model config parser is either a valid config
// (which must survive a JSON round trip) or rejected with a dynasparse::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dynasparse/model/model_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const dynasparse::ModelConfig c = dynasparse::config_from_json(text, "fuzz");
    const dynasparse::ModelConfig again = dynasparse::config_from_json(dynasparse::to_json(c).dump(), "fuzz");
    if (dynasparse::to_json(again) != dynasparse::to_json(c)) __builtin_trap();
  } catch (const dynasparse::Error&) {
  }
  return 0;
}
