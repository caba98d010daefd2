// SPDX-License-Identifier: Apache-2.0
// Scratch memory for forward passes: a bump allocator that stops allocating once warm.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// A bump allocator of aligned scratch memory. `allocate<T>(n)` hands out `n` elements
/// (uninitialized contents, 64-byte aligned) that stay valid until `reset()` or until a
/// `Workspace::Scope` opened before them closes. When the current block is full it adds
/// another, so earlier pointers stay valid; `reset()` then merges everything into one
/// block of the high-water size, so a steady-state loop (reset, allocate the same
/// amounts) stops touching the heap after its first iteration.
/// Not thread-safe: give each thread (each Session) its own.
class Workspace {
 public:
  Workspace() = default;
  /// Starts with one block of `bytes` bytes.
  explicit Workspace(std::size_t bytes) { reserve(bytes); }

  /// Moves leave `other` empty, counters included.
  Workspace(Workspace&& other) noexcept
      : blocks_(std::move(other.blocks_)),
        high_water_(std::exchange(other.high_water_, 0)),
        live_(std::exchange(other.live_, 0)),
        scopes_(std::exchange(other.scopes_, 0)) {
    other.blocks_.clear();
  }
  Workspace& operator=(Workspace&& other) noexcept {
    if (this != &other) {
      blocks_ = std::move(other.blocks_);
      other.blocks_.clear();
      high_water_ = std::exchange(other.high_water_, 0);
      live_ = std::exchange(other.live_, 0);
      scopes_ = std::exchange(other.scopes_, 0);
    }
    return *this;
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() = default;

  /// Makes sure at least `bytes` bytes are available without further heap allocation.
  /// Must be called with nothing allocated (after construction or reset()) and no Scope
  /// open.
  void reserve(std::size_t bytes) {
    DYNASPARSE_ASSERT(live_ == 0 && scopes_ == 0, "Workspace::reserve with live allocations");
    if (blocks_.size() == 1 && blocks_[0].buffer.size() >= bytes) return;
    blocks_.clear();
    if (bytes != 0) blocks_.push_back(Block{AlignedBuffer<std::byte>(round_up(bytes)), 0});
  }

  /// `n` elements of T, aligned to buffer_alignment. @throws ConfigError on size overflow.
  template <class T>
  T* allocate(std::size_t n) {
    static_assert(std::is_trivially_copyable_v<T>, "workspace memory is raw storage");
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T) - buffer_alignment) {
      detail::fail<ConfigError>("core", "workspace request overflows size_t",
                                "a representable size", n, "Workspace");
    }
    const std::size_t bytes = round_up(n * sizeof(T));
    if (blocks_.empty() || blocks_.back().buffer.size() - blocks_.back().used < bytes) {
      const std::size_t grow = std::max(bytes, capacity());
      blocks_.push_back(Block{AlignedBuffer<std::byte>(grow), 0});
    }
    Block& b = blocks_.back();
    T* p = reinterpret_cast<T*>(b.buffer.data() + b.used);
    b.used += bytes;
    live_ += bytes;
    high_water_ = std::max(high_water_, live_);
    return p;
  }

  /// Releases every allocation; merges blocks so the next round fits in one. Must not be
  /// called while a Scope is open (its end would restore state of the old blocks).
  void reset() {
    DYNASPARSE_ASSERT(scopes_ == 0, "Workspace::reset inside a Scope");
    for (Block& b : blocks_) b.used = 0;
    live_ = 0;
    if (blocks_.size() > 1) {
      const std::size_t want = round_up(high_water_);
      blocks_.clear();
      blocks_.push_back(Block{AlignedBuffer<std::byte>(want), 0});
    }
  }

  /// Bytes held (all blocks).
  std::size_t capacity() const noexcept {
    std::size_t c = 0;
    for (const Block& b : blocks_) c += b.buffer.size();
    return c;
  }
  /// Largest number of bytes live at once since construction.
  std::size_t high_water() const noexcept { return high_water_; }
  /// Number of blocks; 1 in steady state.
  std::size_t blocks() const noexcept { return blocks_.size(); }

  /// Restores the workspace to its state at construction of the scope when it ends, so a
  /// layer can borrow scratch and give it back. Scopes must nest.
  class Scope {
   public:
    explicit Scope(Workspace& ws) noexcept
        : ws_(ws),
          live_(ws.live_),
          block_count_(ws.blocks_.size()),
          used_(ws.blocks_.empty() ? 0 : ws.blocks_.back().used) {
      ++ws.scopes_;
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    ~Scope() {
      // Blocks added inside the scope stay (reset() merges them); they are just emptied.
      for (std::size_t i = block_count_; i < ws_.blocks_.size(); ++i) ws_.blocks_[i].used = 0;
      if (block_count_ != 0) ws_.blocks_[block_count_ - 1].used = used_;
      ws_.live_ = live_;
      --ws_.scopes_;
    }

   private:
    Workspace& ws_;
    std::size_t live_;
    std::size_t block_count_;
    std::size_t used_;
  };

 private:
  struct Block {
    AlignedBuffer<std::byte> buffer;
    std::size_t used;
  };

  static std::size_t round_up(std::size_t bytes) noexcept {
    return (bytes + buffer_alignment - 1) / buffer_alignment * buffer_alignment;
  }

  std::vector<Block> blocks_;
  std::size_t high_water_ = 0;
  // Bytes allocated and not yet released, all blocks: a count, so that allocate() does not
  // walk the blocks (a workspace grown by a long prompt may hold many).
  std::size_t live_ = 0;
  std::size_t scopes_ = 0;  // Scopes open, for the asserts of reset() and reserve()
};

DYNASPARSE_NAMESPACE_END
