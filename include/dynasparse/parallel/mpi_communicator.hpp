// SPDX-License-Identifier: Apache-2.0
// MpiCommunicator: the Communicator over MPI ranks (one process per rank), for deployments
// that outgrow one machine. Part of the optional `dynasparse::mpi` CMake component; not in
// the umbrella header.
#pragma once

// First, so that a build without MPI stops here with one clear line instead of a cascade.
#if !defined(__has_include)
#error "dynasparse/parallel/mpi_communicator.hpp needs a compiler with __has_include (C++17)"
#elif !__has_include(<mpi.h>)
#error "dynasparse/parallel/mpi_communicator.hpp needs MPI: link the dynasparse::mpi target (find_package(dynasparse COMPONENTS mpi), or DYNASPARSE_WITH_MPI=ON with MPI installed: Debian's libopenmpi-dev)"
#endif

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "dynasparse/core/build_info.hpp"
#include "dynasparse/error.hpp"
#include "dynasparse/parallel/communicator.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace parallel {

/// Initializes MPI for the life of the object (MPI_Init_thread, MPI_THREAD_FUNNELED: only
/// the thread that made it calls MPI) and finalizes it on destruction, unless MPI was already
/// initialized by the application, which then keeps that duty. Make one, first thing in main().
/// Not copyable; one per process.
class MpiEnvironment {
 public:
  /// @throws CommError if MPI_Init_thread fails.
  MpiEnvironment(int* argc = nullptr, char*** argv = nullptr) {
    int done = 0;
    MPI_Initialized(&done);
    if (!done) {
      int provided = 0;
      if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        ::dynasparse::detail::fail<CommError>("parallel", "MPI_Init_thread failed", "MPI_SUCCESS", "an error",
                                              "MpiEnvironment");
      }
      owner_ = true;
    }
    // A communicator of its own for the last words of a failing job (abort_job), so that
    // they never match an operation of the application's.
    MPI_Comm_dup(MPI_COMM_WORLD, &failure_comm());
  }
  ~MpiEnvironment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (failure_comm() != MPI_COMM_NULL) MPI_Comm_free(&failure_comm());
    if (owner_) MPI_Finalize();
  }
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  /// Whether this process was started by an MPI launcher (mpirun/mpiexec of Open MPI, MPICH
  /// or a PMIx runtime), judged from the variables the launchers set. Lets a tool choose MPI
  /// without a flag and without initializing MPI when run alone.
  static bool launched_by_mpirun() noexcept {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"}) {
      if (std::getenv(v)) return true;
    }
    return false;
  }

  /// The communicator abort_job() uses (MPI_COMM_NULL without an environment).
  static MPI_Comm& failure_comm() noexcept {
    static MPI_Comm c = MPI_COMM_NULL;
    return c;
  }

 private:
  bool owner_ = false;
};

namespace detail {

// Buffers MPI may still read or write after we gave up on an operation (a timed-out
// collective cannot be cancelled): kept until the process ends, reachable, so that neither a
// late write nor a leak checker finds freed memory.
inline std::vector<std::unique_ptr<std::vector<char>>>& mpi_graveyard() {
  static std::vector<std::unique_ptr<std::vector<char>>> g;
  return g;
}
inline void mpi_bury(std::unique_ptr<std::vector<char>> b) { mpi_graveyard().push_back(std::move(b)); }
inline void mpi_bury(std::vector<char> b) { mpi_bury(std::make_unique<std::vector<char>>(std::move(b))); }

// Shared by a communicator and every communicator split from it: where abort notices and
// liveness probes travel, and whether (and why) the family is broken.
struct MpiFamily {
  MPI_Comm ctrl = MPI_COMM_NULL;  // a dup of the root communicator: notices and probes only
  std::uint64_t id = 0;           // the root communicator's id (see MpiCommunicator::id_)
  int ctrl_rank = 0, ctrl_size = 1;
  bool broken = false;
  std::string reason;
  int origin = -1;                   // ctrl rank whose failure broke the family
  std::uint64_t ping_seq = 0;        // the last probe this rank sent
  std::vector<std::uint64_t> pong;   // by ctrl rank: the last probe it answered
  ~MpiFamily() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && ctrl != MPI_COMM_NULL) MPI_Comm_free(&ctrl);
  }
};

// Operation codes of the collective handshake.
enum class MpiOp : std::uint64_t { Barrier = 1, AllReduceSum, AllGather, Broadcast, Split };
inline const char* op_name(std::uint64_t op) {
  switch (static_cast<MpiOp>(op)) {
    case MpiOp::Barrier: return "barrier";
    case MpiOp::AllReduceSum: return "all_reduce_sum";
    case MpiOp::AllGather: return "all_gather";
    case MpiOp::Broadcast: return "broadcast";
    case MpiOp::Split: return "split";
  }
  return "an unknown operation";
}

// Tags on the family's ctrl communicator. Every message there starts with the family id.
constexpr int mpi_abort_tag = 1;  // {id, reason...}: the sender's family is broken
constexpr int mpi_ping_tag = 2;   // {id, seq}: are you alive (polling this family)?
constexpr int mpi_pong_tag = 3;   // {id, seq}: yes
constexpr std::size_t mpi_build_chars = 256;
constexpr int mpi_header_words = 5;  // {communicator id, sequence, operation, a, b}

// A new communicator's id proposal; rank 0's is taken. Only needs to differ from the ids of
// communicators this job freed before (see MpiCommunicator::id_).
inline std::uint64_t mpi_new_id() {
  static std::uint64_t counter = 0;
  std::random_device rd;
  const std::uint64_t t = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return (static_cast<std::uint64_t>(rd()) << 32 ^ rd()) ^ (t * 0x9E3779B97F4A7C15ull) ^ ++counter;
}

inline std::uint64_t mpi_mix(std::uint64_t a, std::uint64_t b) {
  a ^= b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2);
  a *= 0xBF58476D1CE4E5B9ull;
  return a ^ (a >> 31);
}

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(len));
}

inline std::vector<std::size_t> mpi_ranks(const std::vector<int>& ranks) {
  return std::vector<std::size_t>(ranks.begin(), ranks.end());
}

}  // namespace detail

/// The MPI Communicator: rank `rank()` of an MPI communicator (MPI_COMM_WORLD by default),
/// meeting the Communicator contract with MPI's transport:
/// - Every blocking call is a non-blocking MPI operation polled until timeout(), so a peer
///   that dies or never arrives is a CommError naming the rank, the operation and the
///   missing peer(s), never a hang. (split() also calls MPI_Comm_split, which has no
///   non-blocking form; it runs only after every member has been seen to arrive.)
/// - At the timeout, a rank first asks the peers it waits for whether they are alive (a
///   probe every waiting rank answers; it waits P = min(timeout, 1 s) for the answers). A
///   peer that does not answer is named as dead or stalled. If all answer, they are waiting
///   for someone themselves (from outside, a rank stuck behind a dead one looks dead too):
///   the rank waits once more, 2 x timeout + P, long enough for the rank that waits for the
///   dead one to fail and for its notice, naming the dead rank, to reach everyone. So every
///   rank names a dead rank after timeout + P, or quotes the rank that did; a call gives up
///   after 3 x timeout + 2 P at most (ranks alive but waiting for each other).
/// - Collectives first exchange a small header with every peer (operation, count, sequence
///   number), so a rank that skipped or reordered a collective, or passed another size, is
///   named in the error instead of corrupting data; then they move data.
/// - all_reduce_sum reduces slice r of the buffer on rank r (all-to-all, then all-gather) and
///   adds the ranks' values in rank order, as ThreadCommunicator does: every rank gets the
///   same bits, and the bits equal the in-process run's.
/// - send() copies the message and returns (MPI_Isend on the copy); pending sends complete as
///   later calls progress MPI, and at destruction within the timeout.
/// - A failure (timeout, mismatch, abort()) breaks the family (this communicator and every
///   split of it, on every rank): the failing rank sends its reason to every peer, whose
///   blocked calls throw CommError quoting it at once instead of waiting for their timeout.
/// Construction is collective: it duplicates the MPI communicator (MPI traffic of the
/// application never matches ours) and checks that every rank runs the same dynasparse build
/// (build_info()). Needs MPI initialized (MpiEnvironment). One thread uses it at a time.
/// See examples/cli/main.cpp (`mpirun -np N dynasparse run --plan ...`).
class MpiCommunicator final : public Communicator {
 public:
  /// Collective over `comm`. @throws ConfigError if MPI is not initialized, or if the ranks
  /// run different dynasparse builds (naming the first differing rank and both build
  /// strings); CommError if a rank does not arrive within `timeout`.
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD, std::chrono::milliseconds timeout = std::chrono::seconds(60))
      : family_(std::make_shared<detail::MpiFamily>()) {
    set_timeout(timeout);
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      ::dynasparse::detail::fail<ConfigError>("parallel", "MPI is not initialized", "MPI_Init (an MpiEnvironment) first",
                                              "no MPI_Init", "MpiCommunicator");
    }
    MPI_Comm_rank(comm, &rank_);
    MPI_Comm_size(comm, &size_);
    family_->ctrl_rank = rank_;
    family_->ctrl_size = size_;
    family_->pong.assign(static_cast<std::size_t>(size_), 0);
    for (int r = 0; r < size_; ++r) to_ctrl_.push_back(r);
    family_->ctrl = dup_with_timeout(comm, "MpiCommunicator");
    data_ = dup_with_timeout(comm, "MpiCommunicator");
    hdr_ = dup_with_timeout(comm, "MpiCommunicator");
    id_ = check_builds(build_info(), detail::mpi_new_id());
    family_->id = id_;
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // Let buffered sends finish (a receiver may still be on its way); give up at the timeout.
    const auto deadline = Clock::now() + timeout();
    while (!outbox_.empty() && Clock::now() < deadline && !family_->broken) {
      int flag = 0;
      if (MPI_Test(&outbox_.front().request, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;  // never throw here
      if (flag) {
        outbox_.pop_front();
      } else {
        std::this_thread::yield();
      }
    }
    for (auto& s : outbox_) {
      MPI_Request_free(&s.request);
      detail::mpi_bury(std::move(s.bytes));
    }
    if (data_ != MPI_COMM_NULL) MPI_Comm_free(&data_);
    if (hdr_ != MPI_COMM_NULL) MPI_Comm_free(&hdr_);
  }

  std::size_t rank() const noexcept override { return static_cast<std::size_t>(rank_); }
  std::size_t size() const noexcept override { return static_cast<std::size_t>(size_); }

  /// Collective: throws ConfigError on every rank unless every rank passes the same `build`
  /// (the constructor passes build_info(): same version, SIMD path and options). The error
  /// names the first rank that differs from rank 0 and both strings.
  void require_same_build(const std::string& build) { check_builds(build, 0); }

  void send(const float* data, std::size_t n, std::size_t peer, int tag = 0) override {
    check_peer(peer, tag, "send");
    check_broken("send");
    reap();
    Pending p;
    p.bytes.resize(n * sizeof(float));
    if (n) std::memcpy(p.bytes.data(), data, n * sizeof(float));
    const int rc =
        MPI_Isend(p.bytes.data(), count_of(n, "send"), MPI_FLOAT, static_cast<int>(peer), tag, data_, &p.request);
    if (rc != MPI_SUCCESS) check(rc, "send", "send to " + peer_name(peer));
    outbox_.push_back(std::move(p));
  }

  void recv(float* data, std::size_t n, std::size_t peer, int tag = 0) override {
    check_peer(peer, tag, "recv");
    check_broken("recv");
    MPI_Message msg;
    MPI_Status status;
    int found = 0;
    const bool got = poll(
        [&] {
          check(MPI_Improbe(static_cast<int>(peer), tag, data_, &found, &msg, &status), "recv");
          return found != 0;
        },
        [&] { return std::vector<int>{static_cast<int>(peer)}; });
    if (!got) {
      check_broken("recv");
      fail("recv timed out", "a message from " + peer_name(peer) + " within " + ms(),
           "none" + why_missing({static_cast<int>(peer)}), "tag " + std::to_string(tag));
    }
    int count = 0;
    MPI_Get_count(&status, MPI_FLOAT, &count);
    if (static_cast<std::size_t>(count) != n) {
      std::vector<float> drop(static_cast<std::size_t>(count));
      MPI_Mrecv(drop.data(), count, MPI_FLOAT, &msg, MPI_STATUS_IGNORE);
      fail("received message of another size", std::to_string(n) + " floats",
           std::to_string(count) + " floats from " + peer_name(peer), "tag " + std::to_string(tag));
    }
    // The message has arrived (matched): receiving it only copies, it cannot wait on the peer.
    check(MPI_Mrecv(data, count, MPI_FLOAT, &msg, MPI_STATUS_IGNORE), "recv");
  }

  void all_reduce_sum(float* data, std::size_t n) override {
    handshake(detail::MpiOp::AllReduceSum, n);
    if (size_ == 1 || n == 0) return;
    const std::size_t p = size(), r = rank(), lo = n * r / p, mine = n * (r + 1) / p - lo;
    // All-to-all: rank q receives slice q of every rank's buffer.
    std::vector<int> scount(p), sdispl(p), rcount(p), rdispl(p);
    for (std::size_t q = 0; q < p; ++q) {
      const std::size_t qlo = n * q / p;
      scount[q] = count_of(n * (q + 1) / p - qlo, "all_reduce_sum");
      sdispl[q] = count_of(qlo, "all_reduce_sum");
      rcount[q] = count_of(mine, "all_reduce_sum");
      rdispl[q] = count_of(q * mine, "all_reduce_sum");
    }
    auto in = std::make_unique<std::vector<char>>(n * sizeof(float));
    std::memcpy(in->data(), data, n * sizeof(float));
    auto parts = std::make_unique<std::vector<char>>(p * mine * sizeof(float));
    MPI_Request req;
    check(MPI_Ialltoallv(in->data(), scount.data(), sdispl.data(), MPI_FLOAT, parts->data(), rcount.data(),
                         rdispl.data(), MPI_FLOAT, data_, &req),
          "all_reduce_sum");
    if (!wait(&req, 1, "all_reduce_sum")) {
      give_up_collective(std::move(*in), std::move(*parts));
      timed_out_in_data("all_reduce_sum");
    }
    // Rank order, as ThreadCommunicator: the same bits everywhere, run after run.
    const float* part = reinterpret_cast<const float*>(parts->data());
    float* sum = reinterpret_cast<float*>(in->data()) + lo;
    for (std::size_t i = 0; i < mine; ++i) {
      float s = part[i];
      for (std::size_t q = 1; q < p; ++q) s += part[q * mine + i];
      sum[i] = s;
    }
    std::vector<int> counts(p), displs(p);
    for (std::size_t q = 0; q < p; ++q) {
      displs[q] = count_of(n * q / p, "all_reduce_sum");
      counts[q] = count_of(n * (q + 1) / p - n * q / p, "all_reduce_sum");
    }
    check(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, in->data(), counts.data(), displs.data(), MPI_FLOAT, data_,
                          &req),
          "all_reduce_sum");
    if (!wait(&req, 1, "all_reduce_sum")) {
      give_up_collective(std::move(*in), std::move(*parts));
      timed_out_in_data("all_reduce_sum");
    }
    std::memcpy(data, in->data(), n * sizeof(float));
  }

  void all_gather(const float* in, std::size_t n, float* out) override {
    handshake(detail::MpiOp::AllGather, n);
    std::vector<char> mine(n * sizeof(float)), all(size() * n * sizeof(float));
    if (n) std::memcpy(mine.data(), in, n * sizeof(float));
    MPI_Request req;
    check(MPI_Iallgather(mine.data(), count_of(n, "all_gather"), MPI_FLOAT, all.data(), count_of(n, "all_gather"),
                         MPI_FLOAT, data_, &req),
          "all_gather");
    if (!wait(&req, 1, "all_gather")) {
      give_up_collective(std::move(mine), std::move(all));
      timed_out_in_data("all_gather");
    }
    if (!all.empty()) std::memcpy(out, all.data(), all.size());
  }

  void broadcast(float* data, std::size_t n, std::size_t root) override {
    if (root >= size()) {
      ::dynasparse::detail::fail<ConfigError>("parallel", "broadcast root out of range", "< " + std::to_string(size()),
                                              root, where());
    }
    handshake(detail::MpiOp::Broadcast, n, root);
    std::vector<char> buf(n * sizeof(float));
    if (rank() == root && n) std::memcpy(buf.data(), data, buf.size());
    MPI_Request req;
    check(MPI_Ibcast(buf.data(), count_of(n, "broadcast"), MPI_FLOAT, static_cast<int>(root), data_, &req), "broadcast");
    if (!wait(&req, 1, "broadcast")) {
      give_up_collective(std::move(buf), {});
      timed_out_in_data("broadcast");
    }
    if (rank() != root && n) std::memcpy(data, buf.data(), buf.size());
  }

  void barrier() override { handshake(detail::MpiOp::Barrier, 0); }

  std::unique_ptr<Communicator> split(std::size_t color, std::size_t key) override {
    if (color > static_cast<std::size_t>(INT32_MAX) || key > static_cast<std::size_t>(INT32_MAX)) {
      ::dynasparse::detail::fail<ConfigError>("parallel", "split color or key too large", "<= 2^31 - 1",
                                              std::to_string(color) + ", " + std::to_string(key), where());
    }
    // After the handshake every member is known to be here, so MPI_Comm_split (blocking, with
    // no non-blocking form) cannot wait on a missing rank, only on one that dies right now.
    handshake(detail::MpiOp::Split, color, key);
    MPI_Comm data = MPI_COMM_NULL;
    check(MPI_Comm_split(data_, static_cast<int>(color), static_cast<int>(key), &data), "split");
    std::unique_ptr<MpiCommunicator> child(
        new MpiCommunicator(family_, data, timeout(), detail::mpi_mix(detail::mpi_mix(id_, sequence_), color)));
    return child;
  }

  void abort(const std::string& reason) noexcept override {
    try {
      break_family(reason);
    } catch (...) {
      // nothing to report from here; the peers still time out
    }
  }

  /// The underlying MPI communicator (a duplicate of the one given), for the application's
  /// own MPI calls alongside ours.
  MPI_Comm native() const noexcept { return data_; }

 private:
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<char> bytes;
  };

  // A split: shares the family; its own data and header communicators.
  MpiCommunicator(std::shared_ptr<detail::MpiFamily> family, MPI_Comm data, std::chrono::milliseconds timeout,
                  std::uint64_t id)
      : family_(std::move(family)), data_(data), id_(id) {
    set_timeout(timeout);
    MPI_Comm_set_errhandler(data_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(data_, &rank_);
    MPI_Comm_size(data_, &size_);
    // Probes travel on the family's ctrl communicator, so they address its ranks; messages
    // name them too (the ranks the user launched).
    to_ctrl_.assign(static_cast<std::size_t>(size_), MPI_UNDEFINED);
    std::vector<int> mine(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) mine[static_cast<std::size_t>(r)] = r;
    MPI_Group g_data, g_ctrl;
    if (MPI_Comm_group(data_, &g_data) == MPI_SUCCESS) {
      if (MPI_Comm_group(family_->ctrl, &g_ctrl) == MPI_SUCCESS) {
        MPI_Group_translate_ranks(g_data, size_, mine.data(), g_ctrl, to_ctrl_.data());
        MPI_Group_free(&g_ctrl);
      }
      MPI_Group_free(&g_data);
    }
    std::vector<std::size_t> world;
    for (int w : to_ctrl_) world.push_back(w == MPI_UNDEFINED ? static_cast<std::size_t>(-1) : static_cast<std::size_t>(w));
    set_world_ranks(std::move(world));
    split_ = true;
    hdr_ = dup_with_timeout(data_, "split");
  }

  std::string ms() const { return std::to_string(timeout().count()) + " ms"; }

  // Gathers every rank's build string and id proposal; throws ConfigError if the builds
  // differ, returns rank 0's id.
  std::uint64_t check_builds(const std::string& build, std::uint64_t id) {
    const std::size_t w = detail::mpi_build_chars + sizeof(std::uint64_t);
    std::vector<char> mine(w, '\0'), all(w * size());
    std::memcpy(mine.data(), build.data(), std::min(build.size(), detail::mpi_build_chars - 1));
    std::memcpy(mine.data() + detail::mpi_build_chars, &id, sizeof(id));
    MPI_Request req;
    check(MPI_Iallgather(mine.data(), static_cast<int>(w), MPI_CHAR, all.data(), static_cast<int>(w), MPI_CHAR, hdr_, &req),
          "build check");
    if (!wait(&req, 1, "build check")) {
      give_up_collective(std::move(mine), std::move(all));
      check_broken("build check");
      fail("build check timed out", "all " + std::to_string(size_) + " ranks within " + ms(), "not all arrived",
           "collective");
    }
    auto at = [&](int r) { return std::string(all.data() + static_cast<std::size_t>(r) * w); };
    for (int r = 1; r < size_; ++r) {
      if (at(r) != at(0)) {
        ::dynasparse::detail::fail<ConfigError>("parallel", "ranks run different dynasparse builds",
                                                "\"" + at(0) + "\" (rank 0's) on every rank",
                                                "\"" + at(r) + "\" on rank " + std::to_string(r), where());
      }
    }
    std::uint64_t id0 = 0;
    std::memcpy(&id0, all.data() + detail::mpi_build_chars, sizeof(id0));
    return id0;
  }

  MPI_Comm dup_with_timeout(MPI_Comm comm, const char* op) {
    // MPI writes the handle on completion: if we give up, it must still have somewhere to go.
    auto slot = std::make_unique<std::vector<char>>(sizeof(MPI_Comm));
    MPI_Comm* out = new (slot->data()) MPI_Comm(MPI_COMM_NULL);
    MPI_Request req;
    check(MPI_Comm_idup(comm, out, &req), op);
    if (!wait(&req, 1, op)) {
      detail::mpi_bury(std::move(slot));
      check_broken(op);
      fail(std::string(op) + " timed out", "all " + std::to_string(size_) + " ranks within " + ms(), "not all arrived",
           "communicator duplication");
    }
    const MPI_Comm c = *out;
    MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
    return c;
  }

  void check(int code, const char* op, const std::string& detail_text = {}) {
    if (code != MPI_SUCCESS) {
      fail(std::string("MPI error in ") + op, "MPI_SUCCESS", detail::mpi_error_string(code),
           detail_text.empty() ? std::string(op) : detail_text);
    }
  }

  int count_of(std::size_t n, const char* op) const {
    if (n > static_cast<std::size_t>(INT32_MAX)) {
      ::dynasparse::detail::fail<ConfigError>("parallel", std::string("message too large for MPI in ") + op,
                                              "< 2^31 floats", n, where());
    }
    return static_cast<int>(n);
  }

  void check_peer(std::size_t peer, int tag, const char* op) const {
    if (peer >= size() || peer == rank()) {
      ::dynasparse::detail::fail<ConfigError>("parallel", std::string(op) + " to an invalid peer",
                                              "another rank below " + std::to_string(size()), peer, where());
    }
    if (tag < 0 || tag > 32767) {  // MPI guarantees tags up to 32767
      ::dynasparse::detail::fail<ConfigError>("parallel", std::string(op) + " tag out of range", "0 .. 32767", tag, where());
    }
  }

  void check_broken(const char* op) {
    poll_notices();
    if (family_->broken) {
      // The origin is a rank of the family's root communicator (the world of a split).
      ::dynasparse::detail::fail<CommError>("parallel", std::string(op) + " on a broken communicator",
                                            "all ranks healthy",
                                            "\"" + family_->reason + "\" from " + (split_ ? "world rank " : "rank ") +
                                                std::to_string(family_->origin),
                                            where());
    }
  }

  // Takes in what peers sent on the ctrl communicator: an abort notice marks the family
  // broken with its reason; a probe is answered; an answer is recorded. A broken rank answers
  // no probes: its own notice tells the prober more.
  void poll_notices() {
    detail::MpiFamily& f = *family_;
    while (!f.broken && f.ctrl != MPI_COMM_NULL) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, f.ctrl, &flag, &st) != MPI_SUCCESS || !flag) return;
      int len = 0;
      MPI_Get_count(&st, MPI_CHAR, &len);
      std::vector<char> msg(static_cast<std::size_t>(std::max(len, 0)));
      MPI_Recv(msg.data(), len, MPI_CHAR, st.MPI_SOURCE, st.MPI_TAG, f.ctrl, MPI_STATUS_IGNORE);
      std::uint64_t head[2] = {0, 0};
      if (msg.size() < sizeof(head[0])) continue;
      std::memcpy(head, msg.data(), std::min(msg.size(), sizeof(head)));
      // NOTE: Open MPI reuses a freed communicator's context, so a message sent to an earlier
      // family that nobody received can surface here: only our family's id counts.
      if (head[0] != f.id) continue;
      if (st.MPI_TAG == detail::mpi_abort_tag) {
        f.broken = true;
        f.reason.assign(msg.begin() + sizeof(head[0]), msg.end());
        f.origin = st.MPI_SOURCE;
      } else if (st.MPI_TAG == detail::mpi_ping_tag) {
        auto answer = std::make_unique<std::vector<char>>(sizeof(head));
        std::memcpy(answer->data(), head, sizeof(head));
        MPI_Request req;
        if (MPI_Isend(answer->data(), static_cast<int>(sizeof(head)), MPI_CHAR, st.MPI_SOURCE, detail::mpi_pong_tag,
                      f.ctrl, &req) == MPI_SUCCESS) {
          MPI_Request_free(&req);
        }
        detail::mpi_bury(std::move(answer));
      } else if (st.MPI_TAG == detail::mpi_pong_tag) {
        std::uint64_t& seen = f.pong[static_cast<std::size_t>(st.MPI_SOURCE)];
        seen = std::max(seen, head[1]);
      }
    }
  }

  // Marks the family broken and tells every peer why (non-blocking: a dead peer cannot hold
  // us up; the notice buffers stay alive for MPI).
  void break_family(const std::string& reason) {
    detail::MpiFamily& f = *family_;
    if (f.broken) return;
    f.broken = true;
    f.reason = reason;
    f.origin = f.ctrl_rank;
    if (f.ctrl == MPI_COMM_NULL) return;
    auto buf = std::make_unique<std::vector<char>>(sizeof(f.id) + reason.size());
    std::memcpy(buf->data(), &f.id, sizeof(f.id));
    std::copy(reason.begin(), reason.end(), buf->begin() + sizeof(f.id));
    for (int r = 0; r < f.ctrl_size; ++r) {
      if (r == f.ctrl_rank) continue;
      MPI_Request req;
      if (MPI_Isend(buf->data(), static_cast<int>(buf->size()), MPI_CHAR, r, detail::mpi_abort_tag, f.ctrl, &req) ==
          MPI_SUCCESS) {
        MPI_Request_free(&req);
      }
    }
    detail::mpi_bury(std::move(buf));
  }

  [[noreturn]] void fail(const std::string& what, const std::string& expected, const std::string& got,
                         const std::string& detail_text) {
    const std::string msg =
        ::dynasparse::detail::make_message("parallel", what, expected, got, where() + ", " + detail_text);
    break_family(msg);
    ::dynasparse::detail::raise(CommError(msg));
  }

  [[noreturn]] void timed_out_in_data(const char* op) {
    check_broken(op);
    std::vector<int> all;
    for (int q = 0; q < size_; ++q) {
      if (q != rank_) all.push_back(q);
    }
    std::string got = "not all of it";
    if (!silent_.empty()) {
      got += " (rank(s) " + peer_list(detail::mpi_ranks(silent_)) + " not responding: dead or stalled)";
    } else if (outwaited_) {
      got += " (every peer alive but stalled)";
    } else {
      got += " (a peer died or stalled mid-operation)";
    }
    fail(std::string(op) + " timed out", "every rank's data within " + ms(), got, "collective");
  }

  // Why ranks `missing` did not come, from the last poll's probe: "" if it did not probe.
  std::string why_missing(const std::vector<int>& missing) const {
    if (!silent_.empty()) {
      if (silent_ == missing) return " (not responding: dead or stalled)";
      return " (not responding: rank(s) " + peer_list(detail::mpi_ranks(silent_)) + ")";
    }
    return outwaited_ ? " (alive, but waiting elsewhere)" : std::string();
  }

  enum class Probe { Done, Broken, Alive, Silent };

  std::chrono::milliseconds probe_window() const {
    return std::min<std::chrono::milliseconds>(timeout(), std::chrono::seconds(1));
  }

  // Asks `suspects` (ranks of this communicator) whether they are alive, waiting up to
  // min(timeout, 1 s) for their answers while still watching `done` and the notices. Ranks
  // that do not answer go to silent_.
  template <class Done>
  Probe probe(const std::vector<int>& suspects, Done& done) {
    detail::MpiFamily& f = *family_;
    const std::uint64_t seq = ++f.ping_seq;
    auto ping = std::make_unique<std::vector<char>>(2 * sizeof(std::uint64_t));
    const std::uint64_t head[2] = {f.id, seq};
    std::memcpy(ping->data(), head, sizeof(head));
    // A rank without a ctrl rank (MPI_UNDEFINED: the translation failed) is never asked and
    // counts as silent.
    auto ctrl_of = [&](int q) { return to_ctrl_[static_cast<std::size_t>(q)]; };
    for (int q : suspects) {
      MPI_Request req;
      if (ctrl_of(q) >= 0 && MPI_Isend(ping->data(), static_cast<int>(ping->size()), MPI_CHAR, ctrl_of(q),
                                       detail::mpi_ping_tag, f.ctrl, &req) == MPI_SUCCESS) {
        MPI_Request_free(&req);
      }
    }
    detail::mpi_bury(std::move(ping));  // a dead peer's copy may never leave
    const auto deadline = Clock::now() + probe_window();
    for (;;) {
      if (done()) return Probe::Done;
      poll_notices();
      if (f.broken) return Probe::Broken;
      silent_.clear();
      for (int q : suspects) {
        if (ctrl_of(q) < 0 || f.pong[static_cast<std::size_t>(ctrl_of(q))] < seq) silent_.push_back(q);
      }
      if (silent_.empty()) return Probe::Alive;
      if (Clock::now() >= deadline) return Probe::Silent;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  // Polls `done` until it returns true (-> true), or a peer's abort notice arrives, or the
  // timeout passes (-> false; the caller releases what MPI may still touch, then throws:
  // check_broken() for a notice, its own timeout error otherwise). At the timeout the ranks
  // suspects() names are probed (see the class comment): silent ones end the wait, live
  // ones earn one more timeout. Spins briefly, then yields and finally sleeps, so waiting
  // ranks leave the cores to the ranks that compute (the tests oversubscribe them).
  template <class Done, class Suspects>
  bool poll(Done&& done, Suspects&& suspects) {
    silent_.clear();
    outwaited_ = false;
    const auto start = Clock::now();
    auto deadline = start + timeout();
    bool extended = false;
    for (std::uint64_t i = 0;; ++i) {
      if (done()) return true;
      if ((i & 63) == 0) {
        poll_notices();
        if (family_->broken) return false;
        const auto now = Clock::now();
        if (now >= deadline) {
          if (extended || family_->ctrl == MPI_COMM_NULL) {
            outwaited_ = extended;
            return false;
          }
          const std::vector<int> who = suspects();
          if (who.empty()) return false;
          switch (probe(who, done)) {
            case Probe::Done: return true;
            case Probe::Broken:
            case Probe::Silent: return false;
            case Probe::Alive: break;
          }
          // The peer this rank waits for may have started waiting (for the culprit) up to a
          // timeout + P after this rank did; its own timeout and probe follow.
          extended = true;
          deadline = Clock::now() + 2 * timeout() + probe_window();
        }
        if (now - start > std::chrono::milliseconds(20)) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (i > 256) std::this_thread::yield();
    }
  }

  // Waits for requests of an operation among all ranks (any of them may hold it up).
  bool wait(MPI_Request* reqs, int n, const char* op) {
    return poll(
        [&] {
          int flag = 0;
          check(MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE), op);
          return flag != 0;
        },
        [&] {
          std::vector<int> all;
          for (int q = 0; q < size_; ++q) {
            if (q != rank_) all.push_back(q);
          }
          return all;
        });
  }

  // A collective we stop waiting for may still touch its buffers: they are never freed.
  void give_up_collective(std::vector<char> a, std::vector<char> b) {
    detail::mpi_bury(std::move(a));
    detail::mpi_bury(std::move(b));
  }

  void reap() {
    while (!outbox_.empty()) {
      int flag = 0;
      check(MPI_Test(&outbox_.front().request, &flag, MPI_STATUS_IGNORE), "send");
      if (!flag) break;
      outbox_.pop_front();
    }
  }

  // Every rank sends {id, sequence, operation, a, b} to every peer and receives theirs; a
  // peer that does not arrive is named, and one in another operation or with another count
  // fails the call on every rank that sees it. Headers of another id are stale (an earlier
  // communicator's, whose context Open MPI reused) and dropped.
  void handshake(detail::MpiOp op, std::size_t a, std::size_t b = 0) {
    const char* name = detail::op_name(static_cast<std::uint64_t>(op));
    check_broken(name);
    reap();
    ++sequence_;
    if (size_ == 1) return;
    constexpr int words = detail::mpi_header_words;
    auto out = std::make_unique<std::vector<char>>(words * sizeof(std::uint64_t));
    const std::uint64_t mine[words] = {id_, sequence_, static_cast<std::uint64_t>(op), a, b};
    std::memcpy(out->data(), mine, sizeof(mine));
    std::vector<MPI_Request> sends;
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      MPI_Request r;
      check(MPI_Isend(out->data(), words, MPI_UINT64_T, q, 0, hdr_, &r), name);
      sends.push_back(r);
    }
    std::vector<std::uint64_t> got(static_cast<std::size_t>(size_) * words);
    std::vector<char> have(static_cast<std::size_t>(size_), 0);
    have[static_cast<std::size_t>(rank_)] = 1;
    int missing = size_ - 1;
    auto absent = [&] {
      std::vector<int> who;
      for (int q = 0; q < size_; ++q) {
        if (!have[static_cast<std::size_t>(q)]) who.push_back(q);
      }
      return who;
    };
    const bool ok = poll([&] {
      for (int q = 0; q < size_ && missing > 0; ++q) {
        if (have[static_cast<std::size_t>(q)]) continue;
        int found = 0;
        MPI_Message msg;
        check(MPI_Improbe(q, 0, hdr_, &found, &msg, MPI_STATUS_IGNORE), name);
        if (!found) continue;
        std::uint64_t* h = got.data() + static_cast<std::size_t>(q) * words;
        check(MPI_Mrecv(h, words, MPI_UINT64_T, &msg, MPI_STATUS_IGNORE), name);
        if (h[0] != id_) continue;  // stale: keep waiting for this peer's real header
        have[static_cast<std::size_t>(q)] = 1;
        --missing;
      }
      if (missing > 0) return false;
      int flag = 0;
      check(MPI_Testall(static_cast<int>(sends.size()), sends.data(), &flag, MPI_STATUSES_IGNORE), name);
      return flag != 0;
    }, absent);
    if (!ok) {
      for (auto& r : sends) {
        if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
      }
      detail::mpi_bury(std::move(out));
      check_broken(name);
      const std::vector<int> gone = absent();
      fail(std::string(name) + " timed out", "all " + std::to_string(size_) + " ranks within " + ms(),
           gone.empty() ? std::string("unfinished sends")
                        : "no arrival from rank(s) " + peer_list(detail::mpi_ranks(gone)) + why_missing(gone),
           "collective");
    }
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      const std::uint64_t* h = got.data() + static_cast<std::size_t>(q) * words;
      if (h[1] != sequence_ || h[2] != mine[2]) {
        fail("ranks are in different collectives",
             std::string(name) + " (collective #" + std::to_string(sequence_) + ") on every rank",
             std::string(detail::op_name(h[2])) + " (collective #" + std::to_string(h[1]) + ") on " +
                 peer_name(static_cast<std::size_t>(q)),
             "collective");
      }
      if (op != detail::MpiOp::Split && (h[3] != a || h[4] != b)) {
        const bool root = op == detail::MpiOp::Broadcast && h[4] != b;
        fail(std::string("ranks passed different ") + (root ? "roots" : "sizes") + " to " + name,
             root ? "root " + std::to_string(b) + " on every rank" : std::to_string(a) + " floats on every rank",
             (root ? "root " + std::to_string(h[4]) : std::to_string(h[3])) + " on " +
                 peer_name(static_cast<std::size_t>(q)),
             "collective");
      }
    }
  }

  std::shared_ptr<detail::MpiFamily> family_;
  MPI_Comm data_ = MPI_COMM_NULL;  // point-to-point and collective data
  MPI_Comm hdr_ = MPI_COMM_NULL;   // collective handshakes and the build check
  int rank_ = 0, size_ = 1;
  // Tells this communicator's messages from those of a freed one whose context Open MPI
  // reused: the same on every rank (rank 0's proposal; a split derives its own).
  std::uint64_t id_ = 0;
  std::uint64_t sequence_ = 0;
  std::deque<Pending> outbox_;
  std::vector<int> to_ctrl_;  // family ctrl rank of each rank
  bool split_ = false;
  // What the last poll's probe found: ranks that did not answer, or that all answered and
  // still did not arrive within the extra timeout.
  std::vector<int> silent_;
  bool outwaited_ = false;
};

/// Ends the whole MPI job after an error on this rank: prints `message` on stderr, waits up
/// to `grace` for the other ranks to print theirs (those that fail too, for instance on the
/// same bad plan, or on the abort notice a failing MpiCommunicator sends), then calls
/// MPI_Abort(code), so every rank exits non-zero and none hangs. Needs an MpiEnvironment for
/// the grace period (without one it aborts at once).
[[noreturn]] inline void abort_job(const std::string& message, int code = 2,
                                   std::chrono::milliseconds grace = std::chrono::seconds(2)) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  MPI_Comm c = MpiEnvironment::failure_comm();
  if (c != MPI_COMM_NULL) {
    MPI_Request req;
    if (MPI_Ibarrier(c, &req) == MPI_SUCCESS) {
      const auto deadline = std::chrono::steady_clock::now() + grace;
      int flag = 0;
      while (!flag && std::chrono::steady_clock::now() < deadline) {
        MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
        if (!flag) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

/// Runs fn() on this rank; if it throws, tells the peers of `comm` (abort(), so they stop at
/// once and report the cause) and ends the job with abort_job("rank r of n: <what>", code).
/// Returns normally only when fn() does.
template <class Fn>
void run_or_abort(Communicator& comm, Fn&& fn, int code = 2) {
#if DYNASPARSE_HAS_EXCEPTIONS
  std::string message;
  try {
    fn();
    return;
  } catch (const std::exception& e) {
    message = e.what();
  } catch (...) {
    message = "a non-standard exception";
  }
  comm.abort(message);
  abort_job("rank " + std::to_string(comm.rank()) + " of " + std::to_string(comm.size()) + ": " + message, code);
#else
  (void)comm;
  (void)code;
  fn();
#endif
}

}  // namespace parallel
DYNASPARSE_NAMESPACE_END
