// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/error.hpp"

#include <gtest/gtest.h>

#include <string>

#include "dynasparse/core/tensor.hpp"

namespace {

namespace ds = dynasparse;

TEST(Error, MessageFormatIsPinned) {
  EXPECT_EQ(ds::detail::make_message("nn", "embed_dim not divisible by num_heads",
                                     "a multiple of 7", 512, "layers.0.attn"),
            "dynasparse.nn: embed_dim not divisible by num_heads; expected a multiple of 7, "
            "got 512 [layers.0.attn]");
  EXPECT_EQ(ds::detail::make_message("io", "truncated file", 8, 3),
            "dynasparse.io: truncated file; expected 8, got 3");
}

TEST(Error, HierarchyLetsCallersCatchTheBase) {
  try {
    ds::detail::fail<ds::ShapeError>("core", "bad", 1, 2, "x");
    FAIL() << "no throw";
  } catch (const ds::Error& e) {
    EXPECT_NE(dynamic_cast<const ds::ShapeError*>(&e), nullptr);
    EXPECT_EQ(std::string(e.what()), "dynasparse.core: bad; expected 1, got 2 [x]");
  }
  EXPECT_THROW(DYNASPARSE_THROW(ds::FormatError("f")), ds::FormatError);
  EXPECT_THROW(DYNASPARSE_THROW(ds::ConfigError("c")), std::runtime_error);
  EXPECT_THROW(DYNASPARSE_THROW(ds::UnsupportedError("u")), ds::Error);
}

TEST(Error, ShapeCheckNamesTensorAndBothShapes) {
  float buf[8] = {};
  ds::TensorView<float> v(buf, 2, 4);
  try {
    ds::check_shape(v, 2, 3, "nn", "query");
    FAIL() << "no throw";
  } catch (const ds::ShapeError& e) {
    EXPECT_STREQ(e.what(), "dynasparse.nn: tensor shape mismatch; expected [2, 3], got [2, 4] [query]");
  }
  EXPECT_NO_THROW(ds::check_shape(v, 2, 4, "nn", "query"));
}

TEST(Error, HandlerCanBeReplacedAndRestored) {
  auto custom = [](const ds::Error&) noexcept {};
  const ds::ErrorHandler old = ds::set_error_handler(custom);
  EXPECT_EQ(ds::set_error_handler(old), static_cast<ds::ErrorHandler>(custom));
  // nullptr restores the default rather than leaving no handler.
  ds::set_error_handler(nullptr);
  EXPECT_NE(ds::set_error_handler(old), nullptr);
}

}  // namespace
