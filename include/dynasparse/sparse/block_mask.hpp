// SPDX-License-Identifier: Apache-2.0
// Block masks of group-sparse weights: which R x C blocks of a [out, in] matrix are kept,
// pruning by block L2 norm, mask import/export, and the progressive sparsity schedule.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "dynasparse/core/tensor.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace sparse {

/// A block of R output rows x C input columns. Weight matrices are [out, in] (nn.Linear).
struct BlockShape {
  std::size_t rows = 16;  ///< R, along the outputs
  std::size_t cols = 1;   ///< C, along the inputs
};

/// Largest block side any format accepts: R * C and the block counts then never overflow.
inline constexpr std::size_t max_block_side = std::size_t{1} << 16;

/// Which blocks of an [out, in] matrix are stored: `keep[br * block_cols + bc]` is 1 for a
/// stored block. Edge blocks may be partial (out or in not multiples of the block).
struct BlockMask {
  std::size_t out = 0, in = 0;
  BlockShape shape;
  std::vector<std::uint8_t> keep;

  std::size_t block_rows() const noexcept { return (out + shape.rows - 1) / shape.rows; }
  std::size_t block_cols() const noexcept { return (in + shape.cols - 1) / shape.cols; }
  std::size_t kept() const noexcept {
    return static_cast<std::size_t>(std::count(keep.begin(), keep.end(), std::uint8_t{1}));
  }
  /// Fraction of blocks removed, in [0, 1].
  double sparsity() const noexcept {
    return keep.empty() ? 0.0 : 1.0 - static_cast<double>(kept()) / static_cast<double>(keep.size());
  }
};

/// Checks that `shape` can tile an [out, in] matrix. @throws ConfigError naming `name`.
inline void check_block_shape(BlockShape shape, std::size_t out, std::size_t in, const std::string& name) {
  if (shape.rows == 0 || shape.cols == 0 || shape.rows > max_block_side ||
      shape.cols > max_block_side) {
    ::dynasparse::detail::fail<ConfigError>(
        "sparse", "block shape out of range", "1 <= R, C <= " + std::to_string(max_block_side),
        std::to_string(shape.rows) + "x" + std::to_string(shape.cols), name);
  }
  if (out == 0 || in == 0) {
    ::dynasparse::detail::fail<ConfigError>("sparse", "empty weight matrix", "out, in >= 1", shape_string(out, in), name);
  }
}

namespace detail {
// A mask of out x in in blocks of `shape`, every entry `fill`. @throws as check_block_shape.
inline BlockMask empty_mask(std::size_t out, std::size_t in, BlockShape shape, const std::string& name,
                            std::uint8_t fill) {
  check_block_shape(shape, out, in, name);
  BlockMask m;
  m.out = out;
  m.in = in;
  m.shape = shape;
  m.keep.assign(m.block_rows() * m.block_cols(), fill);
  return m;
}
}  // namespace detail

/// Pruning options. `target` is the fraction of blocks to remove, in [0, 1]. With
/// `balanced`, every block-row loses the same number of blocks (so threads splitting
/// block-rows get equal work); otherwise the globally smallest blocks go.
struct PruneOptions {
  BlockShape shape;
  double target = 0.5;
  bool balanced = false;
};

/// Keeps the blocks of largest L2 norm so that exactly round(target * blocks) blocks are
/// removed (per block-row when balanced: round(target * block_cols) each). Ties keep the
/// lower index, so the result is deterministic. @throws ConfigError on a bad block shape
/// or a target outside [0, 1]; FormatError on NaN/Inf weights.
inline BlockMask prune_by_norm(ConstMatrixView w, const PruneOptions& opt, const std::string& name = "weight") {
  BlockMask mask = detail::empty_mask(w.rows(), w.cols(), opt.shape, name, 1);
  if (!(opt.target >= 0.0 && opt.target <= 1.0)) {
    ::dynasparse::detail::fail<ConfigError>("sparse", "sparsity target out of range", "[0, 1]", opt.target, name);
  }
  const std::size_t br_n = mask.block_rows(), bc_n = mask.block_cols();
  std::vector<double> norm(br_n * bc_n, 0.0);
  for (std::size_t r = 0; r < w.rows(); ++r) {
    for (std::size_t c = 0; c < w.cols(); ++c) {
      const double v = w(r, c);
      if (!std::isfinite(v)) {
        ::dynasparse::detail::fail<FormatError>("sparse", "non-finite value in weights", "a finite value", v,
                                  name + " row " + std::to_string(r) + " col " + std::to_string(c));
      }
      norm[(r / opt.shape.rows) * bc_n + c / opt.shape.cols] += v * v;
    }
  }
  auto drop_smallest = [&](std::size_t first, std::size_t count, std::size_t drop) {
    std::vector<std::size_t> order(count);
    std::iota(order.begin(), order.end(), first);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return norm[a] < norm[b]; });
    for (std::size_t i = 0; i < drop; ++i) mask.keep[order[i]] = 0;
  };
  if (opt.balanced) {
    const auto drop = static_cast<std::size_t>(std::llround(opt.target * static_cast<double>(bc_n)));
    for (std::size_t br = 0; br < br_n; ++br) drop_smallest(br * bc_n, bc_n, drop);
  } else {
    const auto drop = static_cast<std::size_t>(std::llround(opt.target * static_cast<double>(br_n * bc_n)));
    drop_smallest(0, br_n * bc_n, drop);
  }
  return mask;
}

/// The blocks of `w` holding any non-zero weight: the mask of a matrix pruned elsewhere
/// (e.g. trained group-sparse in PyTorch and saved with exact zeros).
/// @throws ConfigError on a bad block shape.
inline BlockMask nonzero_blocks(ConstMatrixView w, BlockShape shape, const std::string& name = "weight") {
  BlockMask m = detail::empty_mask(w.rows(), w.cols(), shape, name, 0);
  const std::size_t bc_n = m.block_cols();
  for (std::size_t r = 0; r < w.rows(); ++r) {
    for (std::size_t c = 0; c < w.cols(); ++c) {
      if (w(r, c) != 0.0f) m.keep[(r / shape.rows) * bc_n + c / shape.cols] = 1;
    }
  }
  return m;
}

/// Element mask [out, in] of a block mask (1 where the weight is kept), e.g. to train with
/// it in PyTorch (`weight * mask`).
inline std::vector<float> to_element_mask(const BlockMask& m) {
  std::vector<float> e(m.out * m.in, 0.0f);
  const std::size_t bc_n = m.block_cols();
  for (std::size_t r = 0; r < m.out; ++r) {
    for (std::size_t c = 0; c < m.in; ++c) e[r * m.in + c] = m.keep[(r / m.shape.rows) * bc_n + c / m.shape.cols];
  }
  return e;
}

/// Block mask of an element mask [out, in] (non-zero = kept), such as a pruning mask trained
/// in PyTorch. Every block must be all kept or all removed. @throws FormatError naming the
/// first mixed block; ConfigError on a bad block shape.
inline BlockMask from_element_mask(ConstMatrixView e, BlockShape shape, const std::string& name = "mask") {
  BlockMask m = detail::empty_mask(e.rows(), e.cols(), shape, name, 2);  // 2: not seen yet
  const std::size_t bc_n = m.block_cols();
  for (std::size_t r = 0; r < e.rows(); ++r) {
    for (std::size_t c = 0; c < e.cols(); ++c) {
      const std::uint8_t v = e(r, c) != 0.0f ? 1 : 0;
      std::uint8_t& k = m.keep[(r / shape.rows) * bc_n + c / shape.cols];
      if (k == 2) {
        k = v;
      } else if (k != v) {
        ::dynasparse::detail::fail<FormatError>("sparse", "mask is not block-structured",
                                  "uniform " + std::to_string(shape.rows) + "x" + std::to_string(shape.cols) + " blocks",
                                  "a mixed block at row " + std::to_string(r) + " col " + std::to_string(c), name);
      }
    }
  }
  return m;
}

/// The seed's progressive schedule: sparsity start, start + step, ... up to target (the last
/// round lands exactly on target). Defaults: 30%, +10% per round. Documented use for
/// training: the first 10% of steps dense (warm-up); then, each round, raise a group-L1
/// penalty and prune to the next value; finally fine-tune with the mask fixed.
/// @throws ConfigError unless 0 <= start, 0 < step and target <= 1.
inline std::vector<double> progressive_schedule(double target, double start = 0.3, double step = 0.1) {
  if (!(start >= 0.0 && step > 0.0 && target <= 1.0 && target >= 0.0)) {
    ::dynasparse::detail::fail<ConfigError>("sparse", "invalid schedule", "0 <= start, 0 < step, 0 <= target <= 1",
                              "start " + std::to_string(start) + " step " + std::to_string(step) +
                                  " target " + std::to_string(target));
  }
  std::vector<double> rounds;
  for (double s = start; s < target - 1e-9; s += step) rounds.push_back(s);
  rounds.push_back(target);
  return rounds;
}

}  // namespace sparse
DYNASPARSE_NAMESPACE_END
