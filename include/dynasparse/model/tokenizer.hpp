// SPDX-License-Identifier: Apache-2.0
// The built-in byte-level tokenizer: one token per UTF-8 byte, so text works with no
// tokenizer file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// Byte-level tokenizer: token t in [0, 256) is the byte t. Models with a larger vocabulary
/// may use ids >= 256 for special tokens (e.g. end of text); decode() skips them.
class ByteTokenizer {
 public:
  static constexpr std::int32_t vocab_size = 256;

  /// The UTF-8 bytes of `text`, one token each.
  static std::vector<std::int32_t> encode(std::string_view text) {
    std::vector<std::int32_t> ids;
    ids.reserve(text.size());
    for (unsigned char c : text) ids.push_back(static_cast<std::int32_t>(c));
    return ids;
  }

  /// The bytes of the tokens < 256, in order (ids outside [0, 256) are skipped). The result
  /// may end in the middle of a UTF-8 sequence when generation stops there.
  static std::string decode(const std::vector<std::int32_t>& ids) {
    std::string s;
    s.reserve(ids.size());
    for (std::int32_t t : ids) {
      if (t >= 0 && t < vocab_size) s.push_back(static_cast<char>(static_cast<unsigned char>(t)));
    }
    return s;
  }
};

DYNASPARSE_NAMESPACE_END
