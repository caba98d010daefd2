// SPDX-License-Identifier: Apache-2.0
// Communicator: the message-passing interface the parallel executors are written against,
// so the same executor runs on in-process threads and (later) on MPI ranks.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dynasparse/error.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

/// A communication failure: a peer did not arrive within the timeout, a peer failed (its
/// error is quoted), or a message did not match what the receiver expected. Thrown on every
/// rank that waits on the failed operation, so no rank hangs. Messages name the rank, the
/// operation and the peer, e.g. `dynasparse.parallel: recv timed out; expected a message
/// from rank 1 within 200 ms, got none [rank 0 of 2, tag 3]`.
class CommError : public Error {
 public:
  using Error::Error;
};

/// Point-to-point and collective operations among `size()` ranks, numbered 0 .. size() - 1.
///
/// Contract of every implementation (ThreadCommunicator; an MPI one behind the optional
/// `dynasparse::mpi` component):
/// - Collectives (all_reduce_sum, all_gather, broadcast, barrier, split) must be called by
///   every rank of the communicator, in the same order, with the same sizes.
/// - send() is buffered: it returns once the data is copied, never waiting for the receiver,
///   so a pipeline of sends cannot deadlock. recv() blocks until the matching message
///   (same source and tag, in send order) arrives.
/// - Every blocking call gives up after timeout() and throws CommError naming the rank, the
///   operation and the missing peer(s). After any CommError the communicator is broken: later
///   calls on any rank of it throw at once, quoting the first failure and the rank it came
///   from. Ranks are those of the communicator; a split's messages add each rank's number in
///   the communicator it was first split from (its "world": the number users launched)
///   where the two differ.
/// - Results are deterministic: all_reduce_sum adds the ranks' values in rank order, so every
///   rank gets the same bits, run after run.
/// A Communicator belongs to one thread (its rank's); different ranks' communicators are
/// used concurrently.
class Communicator {
 public:
  using Clock = std::chrono::steady_clock;

  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  /// This rank's number, 0 .. size() - 1.
  virtual std::size_t rank() const noexcept = 0;
  /// Number of ranks.
  virtual std::size_t size() const noexcept = 0;

  /// Copies n floats to `peer`'s mailbox for `tag`; does not wait for the receiver.
  /// @throws ConfigError for a peer out of range or this rank; CommError if broken.
  virtual void send(const float* data, std::size_t n, std::size_t peer, int tag = 0) = 0;
  /// Receives the oldest message from `peer` with `tag` into data[0, n).
  /// @throws CommError on timeout, on a peer failure, or if the message holds another
  /// number of floats (both counts named); ConfigError for a bad peer.
  virtual void recv(float* data, std::size_t n, std::size_t peer, int tag = 0) = 0;

  /// data[0, n) becomes the element-wise sum over all ranks, added in rank order (the same
  /// bits on every rank). @throws CommError on timeout, peer failure, or ranks passing
  /// different n.
  virtual void all_reduce_sum(float* data, std::size_t n) = 0;
  /// out[r * n, (r + 1) * n) receives rank r's in[0, n), for every r (out holds size() * n
  /// floats and must not overlap in). @throws CommError as all_reduce_sum.
  virtual void all_gather(const float* in, std::size_t n, float* out) = 0;
  /// data[0, n) on every rank becomes root's. @throws CommError as all_reduce_sum;
  /// ConfigError for a root out of range.
  virtual void broadcast(float* data, std::size_t n, std::size_t root) = 0;
  /// Returns once every rank has called it. @throws CommError naming the ranks that did not
  /// arrive within the timeout.
  virtual void barrier() = 0;

  /// Collective: a new communicator among the ranks that pass the same `color`, ranked by
  /// (key, old rank); MPI_Comm_split's meaning. The executors use it for the tensor-parallel
  /// group of a pipeline stage. The result shares this one's timeout. @throws CommError as
  /// barrier().
  virtual std::unique_ptr<Communicator> split(std::size_t color, std::size_t key) = 0;

  /// Marks the communicator (and every communicator split from the same group) broken with
  /// `reason`, waking every rank blocked in it: they throw CommError quoting the reason
  /// instead of waiting for the timeout. Executors call it when their rank fails, so the
  /// other ranks learn the cause at once. Never throws.
  virtual void abort(const std::string& reason) noexcept = 0;

  /// How long a blocking call waits for its peers.
  std::chrono::milliseconds timeout() const noexcept { return timeout_; }
  /// @throws ConfigError if t is not positive.
  void set_timeout(std::chrono::milliseconds t) {
    if (t.count() <= 0) {
      ::dynasparse::detail::fail<ConfigError>("parallel", "communicator timeout must be positive", "> 0 ms",
                                              std::to_string(t.count()) + " ms", "Communicator::set_timeout");
    }
    timeout_ = t;
  }

  /// Typed helpers for whole containers of floats.
  template <class C>
  void send_all(const C& c, std::size_t peer, int tag = 0) {
    send(c.data(), c.size(), peer, tag);
  }
  template <class C>
  void recv_all(C& c, std::size_t peer, int tag = 0) {
    recv(c.data(), c.size(), peer, tag);
  }

 protected:
  /// "rank r of n", for error messages; in a split whose r is another world rank w, with
  /// ", world rank w".
  std::string where() const {
    return "rank " + std::to_string(rank()) + " of " + std::to_string(size()) + world_suffix(rank(), ", world rank ", "");
  }
  /// "rank r", or "rank r (world rank w)" (see where()): a peer, for error messages.
  std::string peer_name(std::size_t r) const { return "rank " + std::to_string(r) + world_suffix(r, " (world rank ", ")"); }
  /// A list of peers, "1, 3" or "1 (world rank 3)"; "none" if empty.
  std::string peer_list(const std::vector<std::size_t>& ranks) const {
    std::string s;
    for (std::size_t r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r) + world_suffix(r, " (world rank ", ")");
    return s.empty() ? "none" : s;
  }
  /// A split's world rank of each of its ranks (empty for a communicator that is its own world).
  void set_world_ranks(std::vector<std::size_t> world) { world_ = std::move(world); }

 private:
  std::chrono::milliseconds timeout_{std::chrono::seconds(60)};
  std::vector<std::size_t> world_;

  std::string world_suffix(std::size_t r, const char* open, const char* close) const {
    if (r >= world_.size() || world_[r] == r || world_[r] == static_cast<std::size_t>(-1)) return {};
    return open + std::to_string(world_[r]) + close;
  }
};

}  // namespace parallel
DYNASPARSE_NAMESPACE_END
