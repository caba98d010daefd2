// SPDX-License-Identifier: Apache-2.0
// Block-CSR storage of group-sparse weights, its validation and conversions.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/sparse/block_mask.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace sparse {

/// Block-CSR of an [out, in] weight matrix with blocks of `shape` (rows = 16 outputs for the
/// kernels here): block-row br owns blocks row_ptr[br] .. row_ptr[br + 1] - 1, block b sits
/// at block-column col_idx[b] (strictly increasing within a block-row), and its values are
/// values[b * R * C ...]. Value layout per block: T = float stores [C][R] (R outputs
/// contiguous per input); T = int8 stores [R][C] (C inputs contiguous per output, the VNNI
/// quad layout when C = 4). Entries past `out` or `in` in edge blocks are zero.
template <class T>
struct BlockCsr {
  std::size_t out = 0, in = 0;
  BlockShape shape;
  std::vector<std::uint32_t> row_ptr;
  std::vector<std::uint32_t> col_idx;
  AlignedBuffer<T> values;

  std::size_t block_rows() const noexcept { return (out + shape.rows - 1) / shape.rows; }
  std::size_t block_cols() const noexcept { return (in + shape.cols - 1) / shape.cols; }
  std::size_t stored_blocks() const noexcept { return col_idx.size(); }
  double density() const noexcept {
    const double total = static_cast<double>(block_rows()) * static_cast<double>(block_cols());
    return total > 0 ? static_cast<double>(stored_blocks()) / total : 0.0;
  }
  std::size_t bytes() const noexcept {
    return values.bytes() + (row_ptr.size() + col_idx.size()) * sizeof(std::uint32_t);
  }

  /// Offset of element (i = output within block, c = input within block) in a block.
  static std::size_t offset(BlockShape s, std::size_t i, std::size_t c) noexcept {
    return std::is_same_v<T, float> ? c * s.rows + i : i * s.cols + c;
  }

  /// Checks every invariant a kernel relies on, before any use: shape fits, row_ptr has
  /// block_rows + 1 entries starting at 0, is non-decreasing and ends at the block count;
  /// column indices are in range and strictly increasing per block-row; the value count is
  /// blocks * R * C. @throws FormatError naming `name` and the first violation.
  void validate(const std::string& name) const {
    if (shape.rows == 0 || shape.cols == 0 || out == 0 || in == 0 || shape.rows > max_block_side ||
        shape.cols > max_block_side) {
      ::dynasparse::detail::fail<FormatError>(
          "sparse", "block shape or matrix size out of range",
          "positive sizes, blocks at most " + std::to_string(max_block_side),
          std::to_string(shape.rows) + "x" + std::to_string(shape.cols) + " blocks of " +
              shape_string(out, in),
          name);
    }
    if (row_ptr.size() != block_rows() + 1) {
      ::dynasparse::detail::fail<FormatError>("sparse", "row pointer length", block_rows() + 1, row_ptr.size(), name);
    }
    if (row_ptr.front() != 0 || row_ptr.back() != col_idx.size()) {
      ::dynasparse::detail::fail<FormatError>("sparse", "row pointer does not span the blocks",
                                "0 .. " + std::to_string(col_idx.size()),
                                std::to_string(row_ptr.front()) + " .. " + std::to_string(row_ptr.back()), name);
    }
    for (std::size_t br = 0; br < block_rows(); ++br) {
      // Checked before the blocks are visited: a pointer past the end in a middle row would
      // otherwise read col_idx out of bounds before the final entry is reached.
      if (row_ptr[br + 1] < row_ptr[br] || row_ptr[br + 1] > col_idx.size()) {
        ::dynasparse::detail::fail<FormatError>("sparse", "row pointer not monotone within the blocks",
                                  std::to_string(row_ptr[br]) + " .. " + std::to_string(col_idx.size()),
                                  row_ptr[br + 1], name + " block-row " + std::to_string(br));
      }
      for (std::uint32_t b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
        if (col_idx[b] >= block_cols()) {
          ::dynasparse::detail::fail<FormatError>("sparse", "block column index out of range", "< " + std::to_string(block_cols()),
                                    col_idx[b], name + " block " + std::to_string(b));
        }
        if (b > row_ptr[br] && col_idx[b] <= col_idx[b - 1]) {
          ::dynasparse::detail::fail<FormatError>("sparse", "block column indices not increasing",
                                    "> " + std::to_string(col_idx[b - 1]), col_idx[b], name + " block " + std::to_string(b));
        }
      }
    }
    const std::size_t per_block = shape.rows * shape.cols;
    if (col_idx.size() > std::numeric_limits<std::size_t>::max() / per_block ||
        values.size() != col_idx.size() * per_block) {
      ::dynasparse::detail::fail<FormatError>("sparse", "value count", col_idx.size() * per_block, values.size(), name);
    }
  }

  /// The blocks of `mask` taken from `w` [out, in]. @throws ShapeError if shapes differ.
  static BlockCsr from_dense(TensorView<const float> w, const BlockMask& mask, const std::string& name) {
    if (w.rows() != mask.out || w.cols() != mask.in) {
      ::dynasparse::detail::fail<ShapeError>("sparse", "mask shape differs from the weight", shape_string(w.rows(), w.cols()),
                               shape_string(mask.out, mask.in), name);
    }
    check_block_shape(mask.shape, w.rows(), w.cols(), name);
    BlockCsr csr;
    csr.out = w.rows();
    csr.in = w.cols();
    csr.shape = mask.shape;
    const std::size_t bc_n = csr.block_cols(), per_block = mask.shape.rows * mask.shape.cols;
    csr.row_ptr.push_back(0);
    for (std::size_t br = 0; br < csr.block_rows(); ++br) {
      for (std::size_t bc = 0; bc < bc_n; ++bc) {
        if (mask.keep[br * bc_n + bc]) csr.col_idx.push_back(static_cast<std::uint32_t>(bc));
      }
      csr.row_ptr.push_back(static_cast<std::uint32_t>(csr.col_idx.size()));
    }
    csr.values.resize_discard(csr.col_idx.size() * per_block);
    for (std::size_t br = 0; br < csr.block_rows(); ++br) {
      for (std::uint32_t b = csr.row_ptr[br]; b < csr.row_ptr[br + 1]; ++b) {
        const std::size_t bc = csr.col_idx[b];
        for (std::size_t i = 0; i < mask.shape.rows; ++i) {
          for (std::size_t c = 0; c < mask.shape.cols; ++c) {
            const std::size_t r = br * mask.shape.rows + i, k = bc * mask.shape.cols + c;
            if (r < csr.out && k < csr.in) {
              csr.values[b * per_block + offset(mask.shape, i, c)] = static_cast<T>(w(r, k));
            }
          }
        }
      }
    }
    return csr;
  }

  /// Calls fn(br0, br1) on disjoint block-row ranges covering [0, block_rows()), in parallel
  /// (parallel_for), cut so that each range holds about the same number of stored blocks —
  /// pruning leaves block-rows uneven, and tall blocks leave few of them — with at least
  /// `min_blocks` blocks per range.
  template <class Fn>
  void parallel_block_rows(std::size_t min_blocks, Fn&& fn) const {
    const std::size_t blocks = stored_blocks();
    if (blocks == 0) {
      fn(std::size_t{0}, block_rows());  // empty rows still write their bias
      return;
    }
    // A range of blocks [lo, hi) becomes the block-rows from the first one starting at or
    // after lo; the last range also takes any empty block-rows at the end.
    auto first_row_at = [&](std::size_t b) {
      return static_cast<std::size_t>(std::lower_bound(row_ptr.begin(), row_ptr.end() - 1, b) - row_ptr.begin());
    };
    parallel_for(0, blocks, min_blocks, [&](std::size_t lo, std::size_t hi) {
      const std::size_t br0 = lo == 0 ? 0 : first_row_at(lo);
      const std::size_t br1 = hi == blocks ? block_rows() : first_row_at(hi);
      if (br0 < br1) fn(br0, br1);
    });
  }

  /// Splits a product with m rows of input across threads for `fn(r0, r1, br0, br1)`: by
  /// rows of the input, in multiples of `tile_rows`, when there are enough of them (every row
  /// costs the same, whatever the pattern of stored blocks, where a split by block-rows can
  /// only cut between block-rows and leaves a few uneven ones); else by block-rows
  /// (parallel_block_rows). Each part does at least `min_macs` multiply-adds.
  template <class Fn>
  void parallel_rows_or_block_rows(std::size_t m, std::size_t tile_rows, std::size_t min_macs, Fn&& fn) const {
    const std::size_t per_block = shape.rows * shape.cols;
    const std::size_t tiles = (m + tile_rows - 1) / tile_rows;
    const std::size_t threads = static_cast<std::size_t>(num_threads());
    if (threads > 1 && tiles >= 4 * threads && stored_blocks() > 0) {
      const std::size_t per_tile = std::max<std::size_t>(1, stored_blocks() * per_block * tile_rows);
      parallel_for(0, tiles, std::max<std::size_t>(1, min_macs / per_tile), [&](std::size_t t0, std::size_t t1) {
        fn(t0 * tile_rows, std::min(m, t1 * tile_rows), std::size_t{0}, block_rows());
      });
      return;
    }
    parallel_block_rows(std::max<std::size_t>(1, min_macs / std::max<std::size_t>(1, per_block * m)),
                        [&](std::size_t br0, std::size_t br1) { fn(std::size_t{0}, m, br0, br1); });
  }

  /// The block-rows holding the outputs of the listed groups of `group` outputs (a
  /// forward_output_groups), in runs of consecutive block-rows: calls fn(br0, br1) for each,
  /// in parallel (parallel_for) with at least `min_macs` multiply-adds of m input rows per
  /// part. `rows` has room for block_rows() entries; the groups must have passed
  /// check_feature_groups against `out`.
  template <class Fn>
  void parallel_group_block_rows(std::size_t group, const std::uint32_t* groups, std::size_t count,
                                 std::size_t m, std::size_t min_macs, std::uint32_t* rows,
                                 Fn&& fn) const {
    const std::size_t n = spans_of_groups(group, groups, count, shape.rows, block_rows(), rows);
    const std::size_t per_row =
        std::max<std::size_t>(1, stored_blocks() / std::max<std::size_t>(1, block_rows())) *
        shape.rows * shape.cols * m;
    parallel_for(0, n, std::max<std::size_t>(1, min_macs / per_row),
                 [&](std::size_t i0, std::size_t i1) {
                   // Consecutive block-rows in one call (the INT8 decoding kernel takes up to 384
                   // outputs at once).
                   for (std::size_t i = i0; i < i1;) {
                     std::size_t j = i + 1;
                     while (j < i1 && rows[j] == rows[j - 1] + 1) ++j;
                     fn(std::size_t{rows[i]}, std::size_t{rows[j - 1]} + 1);
                     i = j;
                   }
                 });
  }

  /// The block mask of the stored blocks.
  BlockMask mask() const {
    BlockMask m;
    m.out = out;
    m.in = in;
    m.shape = shape;
    m.keep.assign(block_rows() * block_cols(), 0);
    for (std::size_t br = 0; br < block_rows(); ++br) {
      for (std::uint32_t b = row_ptr[br]; b < row_ptr[br + 1]; ++b) m.keep[br * block_cols() + col_idx[b]] = 1;
    }
    return m;
  }

  /// The dense [out, in] matrix (absent blocks are zero), values converted to float.
  std::vector<float> to_dense() const {
    std::vector<float> d(out * in, 0.0f);
    const std::size_t per_block = shape.rows * shape.cols;
    for (std::size_t br = 0; br < block_rows(); ++br) {
      for (std::uint32_t b = row_ptr[br]; b < row_ptr[br + 1]; ++b) {
        for (std::size_t i = 0; i < shape.rows; ++i) {
          for (std::size_t c = 0; c < shape.cols; ++c) {
            const std::size_t r = br * shape.rows + i, k = col_idx[b] * shape.cols + c;
            if (r < out && k < in) d[r * in + k] = static_cast<float>(values[b * per_block + offset(shape, i, c)]);
          }
        }
      }
    }
    return d;
  }
};

}  // namespace sparse
DYNASPARSE_NAMESPACE_END
