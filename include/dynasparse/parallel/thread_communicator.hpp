// SPDX-License-Identifier: Apache-2.0
// ThreadGroup and ThreadCommunicator: the in-process Communicator, one rank per thread,
// exchanging data through shared memory. The embedded default, and how tests run.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "dynasparse/error.hpp"
#include "dynasparse/parallel/communicator.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

namespace detail {

// What every communicator of one ThreadGroup shares, splits included: one lock, one
// condition variable, and the broken state. One lock for the family keeps abort() simple
// (one notify wakes every waiter); the ranks meet a few times per layer, so it is not hot.
struct ThreadFamily {
  std::mutex m;
  std::condition_variable cv;
  bool broken = false;
  std::string reason;
  std::size_t origin = static_cast<std::size_t>(-1);  // group rank that broke it first
};

// One communicator's shared state (the group's, or a split's).
struct ThreadHub {
  ThreadHub(std::shared_ptr<ThreadFamily> f, std::size_t n, std::vector<std::size_t> world)
      : family(std::move(f)), size(n), world_rank(std::move(world)), arrived_flag(n, 0), ptr(n, nullptr),
        cptr(n, nullptr), count(n, 0), color(n, 0), key(n, 0) {}
  std::shared_ptr<ThreadFamily> family;
  std::size_t size;
  std::vector<std::size_t> world_rank;  // group rank of each member (for abort's origin)
  bool split = false;                   // made by split(): messages add the world ranks
  // Barrier: generation counting.
  std::size_t arrived = 0;
  std::uint64_t generation = 0;
  std::vector<char> arrived_flag;
  // Collective arguments, published before the first barrier of an operation.
  std::vector<float*> ptr;
  std::vector<const float*> cptr;
  std::vector<std::size_t> count;
  std::vector<std::size_t> color, key;
  std::map<std::pair<std::uint64_t, std::size_t>, std::shared_ptr<ThreadHub>> splits;  // (split #, color)
  // Mailboxes by (source, destination, tag).
  std::map<std::tuple<std::size_t, std::size_t, int>, std::deque<std::vector<float>>> mail;
};

}  // namespace detail

/// The in-process Communicator: rank `rank()` of a ThreadGroup (or of a split of one).
/// Collectives work in place on the ranks' own buffers: all_reduce_sum has rank r add up
/// slice r of every rank's buffer (in rank order) and write the sum back into all of them,
/// so it moves (N - 1) / N of the data per rank, like a ring, with no staging copy.
/// Made by ThreadGroup (or split()); used by one thread at a time.
class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(std::shared_ptr<detail::ThreadHub> hub, std::size_t rank, std::chrono::milliseconds timeout)
      : hub_(std::move(hub)), rank_(rank) {
    set_timeout(timeout);
    if (hub_->split) set_world_ranks(hub_->world_rank);
  }

  std::size_t rank() const noexcept override { return rank_; }
  std::size_t size() const noexcept override { return hub_->size; }

  void send(const float* data, std::size_t n, std::size_t peer, int tag = 0) override {
    check_peer(peer, "send");
    std::vector<float> msg(data, data + n);
    std::unique_lock<std::mutex> lock(fam().m);
    check_broken(lock, "send");
    hub_->mail[{rank_, peer, tag}].push_back(std::move(msg));
    fam().cv.notify_all();
  }

  void recv(float* data, std::size_t n, std::size_t peer, int tag = 0) override {
    check_peer(peer, "recv");
    std::unique_lock<std::mutex> lock(fam().m);
    check_broken(lock, "recv");
    auto& box = hub_->mail[{peer, rank_, tag}];
    const auto deadline = Clock::now() + timeout();
    const bool got = fam().cv.wait_until(lock, deadline, [&] { return !box.empty() || fam().broken; });
    check_broken(lock, "recv");
    if (!got) {
      fail_locked(lock, "recv timed out",
                  "a message from " + peer_name(peer) + " within " + ms(), "none",
                  "tag " + std::to_string(tag));
    }
    std::vector<float> msg = std::move(box.front());
    box.pop_front();
    if (msg.size() != n) {
      fail_locked(lock, "received message of another size", std::to_string(n) + " floats",
                  std::to_string(msg.size()) + " floats from " + peer_name(peer),
                  "tag " + std::to_string(tag));
    }
    lock.unlock();
    if (n) std::memcpy(data, msg.data(), n * sizeof(float));
  }

  void all_reduce_sum(float* data, std::size_t n) override {
    std::unique_lock<std::mutex> lock(fam().m);
    publish(lock, "all_reduce_sum", data, nullptr, n);
    lock.unlock();
    // Slice rank_ of every buffer: only this thread touches these indices until the barrier.
    const std::size_t p = hub_->size, lo = n * rank_ / p, hi = n * (rank_ + 1) / p;
    const std::vector<float*>& ptr = hub_->ptr;
    for (std::size_t i = lo; i < hi; ++i) {
      float s = ptr[0][i];
      for (std::size_t r = 1; r < p; ++r) s += ptr[r][i];
      for (std::size_t r = 0; r < p; ++r) ptr[r][i] = s;
    }
    lock.lock();
    finish_locked(lock, "all_reduce_sum");
  }

  void all_gather(const float* in, std::size_t n, float* out) override {
    std::unique_lock<std::mutex> lock(fam().m);
    publish(lock, "all_gather", nullptr, in, n);
    lock.unlock();
    for (std::size_t r = 0; r < hub_->size; ++r) {
      if (n) std::memcpy(out + r * n, hub_->cptr[r], n * sizeof(float));
    }
    lock.lock();
    finish_locked(lock, "all_gather");  // the inputs stay untouched until every rank has read them
  }

  void broadcast(float* data, std::size_t n, std::size_t root) override {
    if (root >= size()) {
      ::dynasparse::detail::fail<ConfigError>("parallel", "broadcast root out of range", "< " + std::to_string(size()),
                                              root, where());
    }
    std::unique_lock<std::mutex> lock(fam().m);
    publish(lock, "broadcast", data, nullptr, n);
    lock.unlock();
    if (rank_ != root && n) std::memcpy(data, hub_->ptr[root], n * sizeof(float));
    lock.lock();
    finish_locked(lock, "broadcast");
  }

  void barrier() override {
    std::unique_lock<std::mutex> lock(fam().m);
    check_broken(lock, "barrier");
    barrier_locked(lock, "barrier");
  }

  std::unique_ptr<Communicator> split(std::size_t color, std::size_t key) override {
    std::unique_lock<std::mutex> lock(fam().m);
    check_broken(lock, "split");
    hub_->color[rank_] = color;
    hub_->key[rank_] = key;
    barrier_locked(lock, "split");
    std::vector<std::size_t> members;
    for (std::size_t r = 0; r < hub_->size; ++r) {
      if (hub_->color[r] == color) members.push_back(r);
    }
    std::stable_sort(members.begin(), members.end(),
                     [&](std::size_t a, std::size_t b) { return hub_->key[a] < hub_->key[b]; });
    const std::size_t new_rank =
        static_cast<std::size_t>(std::find(members.begin(), members.end(), rank_) - members.begin());
    // Every rank counts its splits alike (collectives run in the same order), so (split #,
    // color) names this split's hub; the first member to get here makes it.
    auto& slot = hub_->splits[{splits_made_, color}];
    if (!slot) {
      std::vector<std::size_t> world;
      for (std::size_t r : members) world.push_back(hub_->world_rank[r]);
      slot = std::make_shared<detail::ThreadHub>(hub_->family, members.size(), std::move(world));
      slot->split = true;
    }
    ++splits_made_;
    auto child = std::make_unique<ThreadCommunicator>(slot, new_rank, timeout());
    // Read the colors and keys before anyone may start another split.
    barrier_locked(lock, "split");
    return child;
  }

  void abort(const std::string& reason) noexcept override {
#if DYNASPARSE_HAS_EXCEPTIONS
    try {
      std::lock_guard<std::mutex> lock(fam().m);
      break_locked(reason);
    } catch (...) {
      // lock failures cannot be reported from here; the peers still time out
    }
#else
    std::lock_guard<std::mutex> lock(fam().m);
    break_locked(reason);
#endif
  }

 private:
  detail::ThreadFamily& fam() const noexcept { return *hub_->family; }
  std::string ms() const { return std::to_string(timeout().count()) + " ms"; }

  void check_peer(std::size_t peer, const char* op) const {
    if (peer >= size() || peer == rank_) {
      ::dynasparse::detail::fail<ConfigError>("parallel", std::string(op) + " to an invalid peer",
                                              "another rank below " + std::to_string(size()), peer, where());
    }
  }

  void break_locked(const std::string& reason) {
    detail::ThreadFamily& f = fam();
    if (!f.broken) {
      f.broken = true;
      f.reason = reason;
      f.origin = hub_->world_rank[rank_];
    }
    f.cv.notify_all();
  }

  void check_broken(std::unique_lock<std::mutex>&, const char* op) const {
    if (fam().broken) {
      // The origin is a world rank: the rank whose failure (or timeout) broke the family.
      ::dynasparse::detail::fail<CommError>("parallel", std::string(op) + " on a broken communicator",
                                            "all ranks healthy",
                                            "\"" + fam().reason + "\" from " + (hub_->split ? "world rank " : "rank ") +
                                                std::to_string(fam().origin),
                                            where());
    }
  }

  // Breaks the family (so the peers fail at once, not at their own timeout), then throws.
  [[noreturn]] void fail_locked(std::unique_lock<std::mutex>& lock, const std::string& what, const std::string& expected,
                                const std::string& got, const std::string& detail_text) {
    const std::string msg = ::dynasparse::detail::make_message("parallel", what, expected, got,
                                                               where() + ", " + detail_text);
    break_locked(msg);
    lock.unlock();
    ::dynasparse::detail::raise(CommError(msg));
  }

  // Publishes this rank's arguments, waits for all ranks, checks that the sizes agree.
  void publish(std::unique_lock<std::mutex>& lock, const char* op, float* p, const float* cp, std::size_t n) {
    check_broken(lock, op);
    hub_->ptr[rank_] = p;
    hub_->cptr[rank_] = cp;
    hub_->count[rank_] = n;
    barrier_locked(lock, op);
    for (std::size_t r = 0; r < hub_->size; ++r) {
      if (hub_->count[r] != n) {
        fail_locked(lock, std::string("ranks passed different sizes to ") + op, std::to_string(n) + " floats on every rank",
                    std::to_string(hub_->count[r]) + " on " + peer_name(r), "collective");
      }
    }
  }

  // The closing barrier of a collective: once every rank has published, peers read and
  // write this rank's buffer, so no rank may leave (and free it) before all are done — not
  // even when another rank broke the family meanwhile. They all get here (the work between
  // is local); the timeout only guards against a thread that never returns.
  void finish_locked(std::unique_lock<std::mutex>& lock, const char* op) {
    barrier_locked(lock, op, /*finishing=*/true);
    check_broken(lock, op);
  }

  void barrier_locked(std::unique_lock<std::mutex>& lock, const char* op, bool finishing = false) {
    detail::ThreadHub& h = *hub_;
    const std::uint64_t gen = h.generation;
    h.arrived_flag[rank_] = 1;
    if (++h.arrived == h.size) {
      h.arrived = 0;
      std::fill(h.arrived_flag.begin(), h.arrived_flag.end(), 0);
      ++h.generation;
      fam().cv.notify_all();
      return;
    }
    const auto deadline = Clock::now() + timeout();
    const bool done =
        fam().cv.wait_until(lock, deadline, [&] { return h.generation != gen || (!finishing && fam().broken); });
    if (h.generation != gen) return;
    if (!finishing) check_broken(lock, op);
    if (!done) {
      std::vector<std::size_t> missing;
      for (std::size_t r = 0; r < h.size; ++r) {
        if (!h.arrived_flag[r]) missing.push_back(r);
      }
      fail_locked(lock, std::string(op) + " timed out", "all " + std::to_string(h.size) + " ranks within " + ms(),
                  "no arrival from rank(s) " + peer_list(missing), "collective");
    }
  }

  std::shared_ptr<detail::ThreadHub> hub_;
  std::size_t rank_;
  std::uint64_t splits_made_ = 0;
};

/// A group of `size` in-process ranks: makes one ThreadCommunicator per rank and runs a
/// function on one thread per rank. Ranks exchange data through shared memory; nothing is
/// serialized. The group outlives its communicators' use.
class ThreadGroup {
 public:
  /// @throws ConfigError if size is 0 or timeout is not positive.
  explicit ThreadGroup(std::size_t size, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    if (size == 0) {
      ::dynasparse::detail::fail<ConfigError>("parallel", "a thread group needs ranks", ">= 1 rank", size, "ThreadGroup");
    }
    std::vector<std::size_t> world(size);
    for (std::size_t r = 0; r < size; ++r) world[r] = r;
    family_ = std::make_shared<detail::ThreadFamily>();
    auto hub = std::make_shared<detail::ThreadHub>(family_, size, std::move(world));
    for (std::size_t r = 0; r < size; ++r) comms_.push_back(std::make_unique<ThreadCommunicator>(hub, r, timeout));
  }

  std::size_t size() const noexcept { return comms_.size(); }
  /// Rank r's communicator, to be used by one thread. @throws ConfigError if r >= size().
  Communicator& communicator(std::size_t r) {
    if (r >= comms_.size()) {
      ::dynasparse::detail::fail<ConfigError>("parallel", "rank out of range", "< " + std::to_string(comms_.size()), r,
                                              "ThreadGroup");
    }
    return *comms_[r];
  }
  /// Whether a rank failed or timed out, and why (empty when healthy).
  std::string failure() const {
    std::lock_guard<std::mutex> lock(family_->m);
    return family_->broken ? family_->reason : std::string();
  }

  /// Calls fn(Communicator&) for every rank, each on its own thread, and joins them. A rank
  /// that throws aborts the group, so the others stop at their next communication instead
  /// of at the timeout; then the first failure (the cause, not its echoes on the other
  /// ranks) is rethrown here. Not reentrant.
  template <class Fn>
  void run(Fn&& fn) {
    const std::size_t n = comms_.size();
    std::vector<std::exception_ptr> errors(n);
    auto body = [&](std::size_t r) {
#if DYNASPARSE_HAS_EXCEPTIONS
      try {
        fn(*comms_[r]);
      } catch (const std::exception& e) {
        errors[r] = std::current_exception();
        comms_[r]->abort(e.what());
      } catch (...) {
        errors[r] = std::current_exception();
        comms_[r]->abort("rank " + std::to_string(r) + " failed with a non-standard exception");
      }
#else
      fn(*comms_[r]);
#endif
    };
    std::vector<std::thread> threads;
    threads.reserve(n > 0 ? n - 1 : 0);
    for (std::size_t r = 1; r < n; ++r) threads.emplace_back(body, r);
    body(0);  // rank 0 on the caller's thread: one thread fewer to start
    for (auto& t : threads) t.join();
    std::size_t origin = n;
    {
      std::lock_guard<std::mutex> lock(family_->m);
      if (family_->broken) origin = family_->origin;
    }
#if DYNASPARSE_HAS_EXCEPTIONS
    if (origin < n && errors[origin]) std::rethrow_exception(errors[origin]);
    for (const auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
#else
    (void)origin;  // without exceptions a failing rank has already called the error handler
#endif
  }

 private:
  std::shared_ptr<detail::ThreadFamily> family_;
  std::vector<std::unique_ptr<ThreadCommunicator>> comms_;
};

}  // namespace parallel
DYNASPARSE_NAMESPACE_END
