// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/model/tokenizer.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

using dynasparse::ByteTokenizer;

TEST(ByteTokenizer, RoundTripsUtf8Bytes) {
  const std::string text = "Gated attention \xe2\x80\x94 gr\xc3\xbc\xc3\x9f dich \xf0\x9f\x98\x80";
  const auto ids = ByteTokenizer::encode(text);
  ASSERT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[0], 'G');
  EXPECT_EQ(ids[16], 0xe2);
  EXPECT_EQ(ByteTokenizer::decode(ids), text);
}

TEST(ByteTokenizer, DecodeSkipsSpecialIds) {
  EXPECT_EQ(ByteTokenizer::decode({'a', 256, 'b', -1, 300}), "ab");
}

}  // namespace
