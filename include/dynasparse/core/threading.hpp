// SPDX-License-Identifier: Apache-2.0
// parallel_for over index ranges with a process-wide, settable thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <thread>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <Eigen/Core>

#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// "openmp" when the including TU is compiled with OpenMP, otherwise "serial".
constexpr const char* threading_backend() noexcept {
#if defined(_OPENMP)
  return "openmp";
#else
  return "serial";
#endif
}

namespace detail {
inline std::atomic<int>& thread_count_slot() noexcept {
  static std::atomic<int> n{0};
  return n;
}
}  // namespace detail

/// Threads a kernel may use inside one call. 0 (the initial value) means the backend's
/// default: OpenMP's `omp_get_max_threads()`. Serial builds always use 1. Also sets Eigen's
/// thread count, which the FP32 dense products use. Call it at start-up or between calls,
/// not while another thread runs inference. @throws ConfigError if n < 0.
inline void set_num_threads(int n) {
  if (n < 0) detail::fail<ConfigError>("core", "thread count must not be negative", ">= 0", n);
  detail::thread_count_slot().store(n, std::memory_order_relaxed);
  Eigen::setNbThreads(n);  // 0 restores Eigen's own default
}

/// The thread count a parallel_for started now would use (always >= 1).
inline int num_threads() noexcept {
#if defined(_OPENMP)
  const int n = detail::thread_count_slot().load(std::memory_order_relaxed);
  return n > 0 ? n : std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

/// Least work worth a thread of its own, in multiply-adds: below it, waking and joining a
/// second thread (about a microsecond with a warm team) costs more than it saves, which
/// matters most when decoding one token through small layers. INT8 multiply-adds are
/// cheaper than float ones (VNNI, sdot), hence the larger figure; at 2^18 a one-row
/// 512x2048 layer with 30% of its blocks (BM_Linear/gsparse_i8@70/1x512x2048/threads:2)
/// already runs faster on two threads than on one.
inline constexpr std::size_t parallel_min_macs_f32 = std::size_t{1} << 17;
inline constexpr std::size_t parallel_min_macs_i8 = std::size_t{1} << 18;
/// Elements of activations worth quantizing on another thread (a pass of max |x|, scale,
/// round and store: about a nanosecond each).
inline constexpr std::size_t parallel_min_quantize = std::size_t{1} << 16;

/// Calls `fn(lo, hi)` on disjoint contiguous sub-ranges covering [begin, end), at most one
/// per thread, each at least `grain` long (except possibly the last). Ranges are split
/// evenly in index order, so a given (range, thread count) always splits the same way.
/// Runs serially when the range is small, one thread is set, or the caller is already
/// inside a parallel region. If `fn` throws, the first exception is rethrown after every
/// thread has finished.
template <class Fn>
inline void parallel_for(std::size_t begin, std::size_t end, std::size_t grain, Fn&& fn) {
  if (end <= begin) return;
  const std::size_t n = end - begin;
  grain = std::max<std::size_t>(grain, 1);
  std::size_t parts = std::min<std::size_t>(static_cast<std::size_t>(num_threads()),
                                            (n + grain - 1) / grain);
#if defined(_OPENMP)
  if (omp_in_parallel()) parts = 1;
#endif
  if (parts <= 1) {
    fn(begin, end);
    return;
  }
#if defined(_OPENMP)
#if DYNASPARSE_HAS_EXCEPTIONS
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#endif
#pragma omp parallel for num_threads(static_cast<int>(parts)) schedule(static, 1)
  for (std::ptrdiff_t p = 0; p < static_cast<std::ptrdiff_t>(parts); ++p) {
    const std::size_t lo = begin + n * static_cast<std::size_t>(p) / parts;
    const std::size_t hi = begin + n * (static_cast<std::size_t>(p) + 1) / parts;
#if DYNASPARSE_HAS_EXCEPTIONS
    try {
      fn(lo, hi);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
#else
    fn(lo, hi);
#endif
  }
#if DYNASPARSE_HAS_EXCEPTIONS
  if (error) std::rethrow_exception(error);
#endif
#else
  fn(begin, end);
#endif
}

DYNASPARSE_NAMESPACE_END
