// SPDX-License-Identifier: Apache-2.0
// parallel_for over index ranges with a process-wide, settable thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <Eigen/Core>

#include "dynasparse/detail/isa.hpp"
#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// "pool" when the including TU is compiled with OpenMP (parallel_for then runs on
/// dynasparse's own worker threads; OpenMP supplies the default thread count and Eigen's
/// threads), otherwise "serial".
constexpr const char* threading_backend() noexcept {
#if defined(_OPENMP)
  return "pool";
#else
  return "serial";
#endif
}

namespace detail {
inline std::atomic<int>& thread_count_slot() noexcept {
  static std::atomic<int> n{0};
  return n;
}

// The workers behind parallel_for: one persistent thread per extra part, each polling its
// own slot. Splitting a call over two polling threads costs about 0.25 us here, an OpenMP
// parallel region 0.7 us (BM_ParallelForOverhead): a quarter of a one-row INT8 layer's time
// on two threads. Workers poll for 200 us after their last job (a
// decoding step's next layer arrives within it) and then sleep on a condition variable, so
// an idle process costs nothing. One caller holds the pool at a time; a second caller (another
// host thread, or a nested parallel_for) is refused and runs its range itself.
class ThreadPool {
 public:
  using Task = void (*)(void* ctx, std::size_t part);

  static ThreadPool& instance() {
    static ThreadPool pool;
    return pool;
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true, std::memory_order_seq_cst);
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  // Takes the pool for up to `parts` parts; returns the parts granted: 1 (run serially) when
  // another caller holds it, or fewer than asked when threads cannot be created. A grant
  // above 1 must be followed by run() with that many parts.
  std::size_t acquire(std::size_t parts) noexcept {
    if (owner_.exchange(true, std::memory_order_acquire)) return 1;
    while (slots_.size() + 1 < parts) {
#if DYNASPARSE_HAS_EXCEPTIONS
      try {
        add_worker();
      } catch (...) {  // std::system_error or bad_alloc: use the workers there are
        break;
      }
#else
      add_worker();
#endif
    }
    const std::size_t granted = std::min(parts, slots_.size() + 1);
    if (granted <= 1) owner_.store(false, std::memory_order_release);
    return granted;
  }

  // Runs task(ctx, p) for every p in [0, parts), part 0 on the caller, and returns when all
  // are done; then releases the pool. `task` must not throw.
  void run(std::size_t parts, Task task, void* ctx) noexcept {
    remaining_.store(parts - 1, std::memory_order_relaxed);
    for (std::size_t p = 1; p < parts; ++p) {
      Slot& s = *slots_[p - 1];
      s.task = task;
      s.ctx = ctx;
      s.part = p;
      s.posted.fetch_add(1, std::memory_order_seq_cst);  // publishes the fields above
    }
    // Pairs with the worker's increment of sleepers_ before its last look at its slot: one
    // of the two sides sees the other, so no post is missed.
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      cv_.notify_all();
    }
    task(ctx, 0);
    for (unsigned spins = 0; remaining_.load(std::memory_order_acquire) != 0; ++spins) {
      // A worker preempted on a busy machine needs this core: poll briefly, then yield.
      if (spins < 4096 && spin_us_.load(std::memory_order_relaxed) > 0) {
        DYNASPARSE_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
    }
    owner_.store(false, std::memory_order_release);
  }

 private:
  // One worker's mailbox, on its own cache line: posted counts the jobs handed to it.
  struct alignas(64) Slot {
    std::atomic<std::uint64_t> posted{0};
    Task task = nullptr;
    void* ctx = nullptr;
    std::size_t part = 0;
  };

  ThreadPool() {
    // OMP_WAIT_POLICY=passive, the knob users of OpenMP already know, turns polling off.
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    if (policy != nullptr &&
        (std::strcmp(policy, "passive") == 0 || std::strcmp(policy, "PASSIVE") == 0)) {
      spin_us_.store(0, std::memory_order_relaxed);
    }
  }

  void add_worker() {
    slots_.push_back(std::make_unique<Slot>());
    Slot* slot = slots_.back().get();
    // More threads than cores: a polling worker would take a core from one with work.
    const unsigned cores = std::thread::hardware_concurrency();
    if (cores != 0 && slots_.size() + 1 > cores) spin_us_.store(0, std::memory_order_relaxed);
#if DYNASPARSE_HAS_EXCEPTIONS
    try {
      threads_.emplace_back([this, slot] { work(*slot); });
    } catch (...) {
      slots_.pop_back();
      throw;
    }
#else
    threads_.emplace_back([this, slot] { work(*slot); });
#endif
  }

  void work(Slot& s) {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t now = s.posted.load(std::memory_order_acquire);
      if (now == seen) {
        now = wait(s, seen);
        if (now == seen) return;  // stopped
      }
      seen = now;
      s.task(s.ctx, s.part);
      remaining_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  // Returns the slot's new post count, or `seen` once the pool stops.
  std::uint64_t wait(Slot& s, std::uint64_t seen) {
    const long budget_us = spin_us_.load(std::memory_order_relaxed);
    if (budget_us > 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(budget_us);
      for (unsigned i = 1;; ++i) {
        const std::uint64_t now = s.posted.load(std::memory_order_acquire);
        if (now != seen) return now;
        if (stop_.load(std::memory_order_relaxed)) return seen;
        DYNASPARSE_CPU_RELAX();
        if (i % 256 == 0 && std::chrono::steady_clock::now() > until) break;
      }
    }
    std::unique_lock<std::mutex> lock(mutex_);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    std::uint64_t now = seen;
    cv_.wait(lock, [&] {
      now = s.posted.load(std::memory_order_seq_cst);
      return now != seen || stop_.load(std::memory_order_seq_cst);
    });
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return now;
  }

  // Written only by the caller holding the pool (and the destructor).
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::thread> threads_;
  // How long an idle worker polls before it sleeps, in microseconds; 0 when polling would
  // steal a core (more threads than cores, or OMP_WAIT_POLICY=passive).
  std::atomic<long> spin_us_{200};
  std::atomic<bool> owner_{false};
  alignas(64) std::atomic<std::size_t> remaining_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
};
}  // namespace detail

/// Threads a kernel may use inside one call. 0 (the initial value) means the backend's
/// default: OpenMP's `omp_get_max_threads()` (so `OMP_NUM_THREADS` applies). Serial builds
/// always use 1. Also sets Eigen's thread count, which the FP32 baseline products use. Call
/// it at start-up or between calls, not while another thread runs inference. @throws
/// ConfigError if n < 0.
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

/// Least work worth a thread of its own, in multiply-adds: below it, handing a part to a
/// second thread and waiting for it costs more than it saves, which matters most when
/// decoding one token through small layers. INT8 multiply-adds are cheaper than float ones
/// (VNNI, sdot), hence the larger figure; at 2^18 a one-row 512x2048 layer with 30% of its
/// blocks (BM_Linear/gsparse_i8@70/1x512x2048/threads:2) already runs faster on two threads
/// than on one.
inline constexpr std::size_t parallel_min_macs_f32 = std::size_t{1} << 17;
inline constexpr std::size_t parallel_min_macs_i8 = std::size_t{1} << 18;
/// Elements of activations worth quantizing on another thread (a pass of max |x|, scale,
/// round and store: about a nanosecond each).
inline constexpr std::size_t parallel_min_quantize = std::size_t{1} << 16;

/// Calls `fn(lo, hi)` on disjoint contiguous sub-ranges covering [begin, end), at most one
/// per thread, each at least `grain` long (except possibly the last). Ranges are split
/// evenly in index order, so a given (range, part count) always splits the same way. The
/// parts run on the calling thread and on a persistent pool of workers
/// (OMP_WAIT_POLICY=passive makes idle workers sleep at once instead of polling for 200 us).
/// Runs the whole range on the calling thread when it is small, one thread is set, the
/// caller is inside an OpenMP parallel region, or the pool is busy with another caller
/// (another host thread, or a parallel_for inside `fn`). If `fn` throws, the first
/// exception is rethrown after every part has finished.
template <class Fn>
inline void parallel_for(std::size_t begin, std::size_t end, std::size_t grain, Fn&& fn) {
  if (end <= begin) return;
  const std::size_t n = end - begin;
  grain = std::max<std::size_t>(grain, 1);
  std::size_t parts =
      std::min<std::size_t>(static_cast<std::size_t>(num_threads()), (n + grain - 1) / grain);
#if defined(_OPENMP)
  if (omp_in_parallel()) parts = 1;
#endif
  if (parts > 1) parts = detail::ThreadPool::instance().acquire(parts);
  if (parts <= 1) {
    fn(begin, end);
    return;
  }
  struct Job {
    Job(Fn& f, std::size_t b, std::size_t count, std::size_t p)
        : fn(f), begin(b), n(count), parts(p) {}
    Fn& fn;
    std::size_t begin, n, parts;
#if DYNASPARSE_HAS_EXCEPTIONS
    std::exception_ptr error;
    std::atomic<bool> failed{false};
#endif
    static void call(void* ctx, std::size_t p) noexcept {
      Job& job = *static_cast<Job*>(ctx);
      const std::size_t lo = job.begin + job.n * p / job.parts;
      const std::size_t hi = job.begin + job.n * (p + 1) / job.parts;
#if DYNASPARSE_HAS_EXCEPTIONS
      try {
        job.fn(lo, hi);
      } catch (...) {
        if (!job.failed.exchange(true)) job.error = std::current_exception();
      }
#else
      job.fn(lo, hi);
#endif
    }
  };
  Job job(fn, begin, n, parts);
  detail::ThreadPool::instance().run(parts, &Job::call, &job);
#if DYNASPARSE_HAS_EXCEPTIONS
  if (job.error) std::rethrow_exception(job.error);
#endif
}

DYNASPARSE_NAMESPACE_END
