// SPDX-License-Identifier: Apache-2.0
// Owning, cache-line-aligned storage for trivially copyable elements.
#pragma once

#include <cstddef>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// Alignment of every buffer the library allocates: one cache line, and enough for a
/// 512-bit vector load.
inline constexpr std::size_t buffer_alignment = 64;

/// A move-only array of `size()` elements of T, aligned to `buffer_alignment` bytes.
/// Elements start zeroed. T must be trivially copyable (weights, activations, indices).
/// @throws ConfigError if the byte size overflows std::size_t; std::bad_alloc as operator new.
template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>,
                "AlignedBuffer holds raw numeric data; use std::vector for other types");

 public:
  AlignedBuffer() noexcept = default;
  explicit AlignedBuffer(std::size_t n) { resize_discard(n); }
  AlignedBuffer(const AlignedBuffer& other) : AlignedBuffer(other.size_) {
    if (size_ != 0) std::memcpy(data_, other.data_, size_ * sizeof(T));
  }
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer other) noexcept {
    swap(other);
    return *this;
  }
  ~AlignedBuffer() { release(); }

  void swap(AlignedBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }

  /// Replaces the contents with `n` zeroed elements (old contents are not kept).
  void resize_discard(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) {
      detail::fail<ConfigError>("core", "buffer size overflows size_t", "a representable size",
                                n, "AlignedBuffer");
    }
    release();
    if (n == 0) return;
    data_ = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{buffer_alignment}));
    std::memset(static_cast<void*>(data_), 0, n * sizeof(T));
    size_ = n;
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::size_t bytes() const noexcept { return size_ * sizeof(T); }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }
  T* begin() noexcept { return data_; }
  T* end() noexcept { return data_ + size_; }
  const T* begin() const noexcept { return data_; }
  const T* end() const noexcept { return data_ + size_; }

 private:
  void release() noexcept {
    if (data_ != nullptr) ::operator delete(data_, std::align_val_t{buffer_alignment});
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
};

DYNASPARSE_NAMESPACE_END
