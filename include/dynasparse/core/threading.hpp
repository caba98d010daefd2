// SPDX-License-Identifier: Apache-2.0
// parallel_for over index ranges with a process-wide, settable thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

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
// own slot. Splitting a call over two polling threads cost about 0.25 us on the machine this
// was first measured on, an OpenMP parallel region 0.7 us (BM_ParallelForOverhead): a
// quarter of a one-row INT8 layer's time on two threads. On a Zen 5 virtual machine since,
// the same split costs about 1.1 us (OpenMP 3 us): the cost is cache lines crossing cores,
// which depends on where the two vCPUs sit. After a job, workers (and a caller waiting for
// them) poll for 200 us, so a decoding step's next layer starts without a wake-up, and then
// sleep on a condition variable, so an idle process costs nothing. No polling when a call
// has more parts than the process has CPUs, or with OMP_WAIT_POLICY=passive. One caller
// holds the pool at a time; a second caller (another host thread, or a parallel_for inside
// a part) is refused and runs its range itself. The pool is never destroyed (a static
// object's destructor may still call parallel_for at exit), and a child process after
// fork() runs serially.
class ThreadPool {
 public:
  using Task = void (*)(void* ctx, std::size_t part);

  static ThreadPool& instance() {
    static ThreadPool* pool = new ThreadPool();  // NOLINT: outlives every static
    return *pool;
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Takes the pool for up to `parts` parts; returns the parts granted: 1 (run serially) when
  // another caller holds it or in a forked child; fewer than asked when a thread cannot be
  // created (with exceptions disabled, that failure aborts instead). A grant above 1 must be
  // followed by run() with that many parts.
  std::size_t acquire(std::size_t parts) noexcept {
    if (forked_flag().load(std::memory_order_relaxed)) return 1;
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
    const bool poll = !passive_ && parts <= cpus_;
    poll_.store(poll, std::memory_order_relaxed);
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
      work_cv_.notify_all();
    }
    task(ctx, 0);
    if (!(poll && poll_until([&] { return remaining_.load(std::memory_order_acquire) == 0; }))) {
      std::unique_lock<std::mutex> lock(mutex_);
      // Pairs with the last worker's decrement and its look at caller_waiting_.
      caller_waiting_.store(true, std::memory_order_seq_cst);
      done_cv_.wait(lock, [&] { return remaining_.load(std::memory_order_seq_cst) == 0; });
      caller_waiting_.store(false, std::memory_order_relaxed);
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
    if (const char* policy = std::getenv("OMP_WAIT_POLICY")) {
      std::string v(policy);
      for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      passive_ = v == "passive";
    }
    const unsigned hw = std::thread::hardware_concurrency();
    cpus_ = hw == 0 ? 1 : hw;
#if defined(__linux__)
    // The CPUs this process may run on (taskset, containers), not the machine's.
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
      cpus_ = static_cast<std::size_t>(CPU_COUNT(&set));
    }
#endif
#if defined(__unix__) || defined(__APPLE__)
    // The child of a fork() has none of the workers: it must not wait for them.
    pthread_atfork(nullptr, nullptr, [] { forked_flag().store(true, std::memory_order_relaxed); });
#endif
  }

  static std::atomic<bool>& forked_flag() noexcept {
    static std::atomic<bool> forked{false};
    return forked;
  }

  void add_worker() {
    slots_.push_back(std::make_unique<Slot>());
    Slot* slot = slots_.back().get();
#if DYNASPARSE_HAS_EXCEPTIONS
    try {
      std::thread([this, slot] { work(*slot); }).detach();
    } catch (...) {
      slots_.pop_back();
      throw;
    }
#else
    std::thread([this, slot] { work(*slot); }).detach();
#endif
  }

  // Polls `done` for up to 200 us; false if it never held. The first 20 us spin on the
  // core; after that each poll yields it, so that on a machine with more runnable threads
  // than cores the thread being waited for gets to run instead of this one's time slice
  // being spent spinning.
  template <class Done>
  static bool poll_until(Done&& done) {
    const auto start = std::chrono::steady_clock::now();
    const auto spin_until = start + std::chrono::microseconds(20),
               until = start + std::chrono::microseconds(200);
    bool spinning = true;
    for (unsigned i = 1;; ++i) {
      if (done()) return true;
      if (spinning) {
        DYNASPARSE_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
      if (i % 64 == 0) {
        const auto now = std::chrono::steady_clock::now();
        if (now > until) return false;
        spinning = now < spin_until;
      }
    }
  }

  [[noreturn]] void work(Slot& s) {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t now = s.posted.load(std::memory_order_acquire);
      if (now == seen && !(poll_.load(std::memory_order_relaxed) && poll_until([&] {
                             return (now = s.posted.load(std::memory_order_acquire)) != seen;
                           }))) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        work_cv_.wait(lock,
                      [&] { return (now = s.posted.load(std::memory_order_seq_cst)) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = now;
      s.task(s.ctx, s.part);
      // The task's context lives on the caller's stack: nothing of it is touched after this.
      if (remaining_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
          caller_waiting_.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_cv_.notify_one();
      }
    }
  }

  // Written only by the caller holding the pool.
  std::vector<std::unique_ptr<Slot>> slots_;
  bool passive_ = false;
  std::size_t cpus_ = 1;
  std::atomic<bool> owner_{false};
  // Whether the current call's threads poll before sleeping.
  std::atomic<bool> poll_{true};
  alignas(64) std::atomic<std::size_t> remaining_{0};
  std::atomic<bool> caller_waiting_{false};
  std::atomic<int> sleepers_{0};
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
};
}  // namespace detail

namespace detail {
// Eigen's products (a model's output head) kept on one thread, once per process unless the
// application sets Eigen's thread count itself afterwards: Eigen's OpenMP threads poll for
// milliseconds after each product, and after a prefill they took the cores the pool's
// workers needed (two-thread decoding of the demo model went from 0.05 to 0.14 ms/token).
inline void keep_eigen_single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] { Eigen::setNbThreads(1); });
}
}  // namespace detail

/// Threads a kernel may use inside one call. 0 (the initial value) means the backend's
/// default: OpenMP's `omp_get_max_threads()` (so `OMP_NUM_THREADS` applies). Serial builds
/// always use 1. Host threads running inference at once share one worker pool: one call at
/// a time splits over it and the others run on their own thread, so the cores are not
/// oversubscribed. Also sets Eigen to one thread: Eigen's products (a model's output head)
/// would otherwise run on OpenMP threads that poll for milliseconds after each product and
/// take the cores the pool's workers need (this halved two-thread decoding speed after a
/// prefill); call Eigen::setNbThreads afterwards if your own Eigen code wants threads. Call
/// it at start-up or between calls, not while another thread runs inference. @throws
/// ConfigError if n < 0.
inline void set_num_threads(int n) {
  if (n < 0) detail::fail<ConfigError>("core", "thread count must not be negative", ">= 0", n);
  detail::thread_count_slot().store(n, std::memory_order_relaxed);
  Eigen::setNbThreads(1);
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
