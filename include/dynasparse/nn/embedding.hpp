// SPDX-License-Identifier: Apache-2.0
// Token embedding lookup (`nn.Embedding`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/tensor.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// `nn.Embedding(vocab, E)`: row t of the table for token t (state_dict `<name>.weight`,
/// [vocab, E]). Immutable; safe to share across threads.
class Embedding {
 public:
  /// Copies `table` [vocab, E].
  explicit Embedding(ConstMatrixView table, std::string name = "embed")
      : name_(std::move(name)), vocab_(table.rows()), dim_(table.cols()), table_(vocab_ * dim_) {
    for (std::size_t r = 0; r < vocab_; ++r) std::memcpy(table_.data() + r * dim_, table.row(r), dim_ * sizeof(float));
  }
  std::size_t vocab() const noexcept { return vocab_; }
  std::size_t dim() const noexcept { return dim_; }
  std::size_t bytes() const noexcept { return table_.bytes(); }
  /// The table [vocab, E] (also the tied LM head's weight).
  ConstMatrixView table() const noexcept { return ConstMatrixView(table_.data(), vocab_, dim_); }

  /// y [n, E] = rows of the table for tokens[0..n). @throws ShapeError on y's shape;
  /// ConfigError naming the position for a token id outside [0, vocab).
  void forward(const std::int32_t* tokens, std::size_t n, MatrixView y) const {
    check_shape(y, n, dim_, "nn", name_, " output");
    for (std::size_t i = 0; i < n; ++i) {
      if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab_) {
        ::dynasparse::detail::fail<ConfigError>("nn", "token id outside the vocabulary", "0 <= id < " + std::to_string(vocab_),
                                  tokens[i], name_ + " position " + std::to_string(i));
      }
      std::memcpy(y.row(i), table_.data() + static_cast<std::size_t>(tokens[i]) * dim_, dim_ * sizeof(float));
    }
  }

 private:
  std::string name_;
  std::size_t vocab_, dim_;
  AlignedBuffer<float> table_;
};

}  // namespace nn
DYNASPARSE_NAMESPACE_END
