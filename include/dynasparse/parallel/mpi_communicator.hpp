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

// Shared by a communicator and every communicator split from it: where abort notices
// travel, and whether (and why) the family is broken.
struct MpiFamily {
  MPI_Comm ctrl = MPI_COMM_NULL;  // a dup of the root communicator: abort notices only
  std::uint64_t id = 0;           // the root communicator's id (see MpiCommunicator::id_)
  int ctrl_rank = 0, ctrl_size = 1;
  bool broken = false;
  std::string reason;
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

constexpr int mpi_abort_tag = 1;
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

inline std::string mpi_rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s.empty() ? "none" : s;
}

}  // namespace detail

/// The MPI Communicator: rank `rank()` of an MPI communicator (MPI_COMM_WORLD by default),
/// meeting the Communicator contract with MPI's transport:
/// - Every blocking call is a non-blocking MPI operation polled until timeout(), so a peer
///   that dies or never arrives is a CommError naming the rank, the operation and the
///   missing peer(s), never a hang. (split() also calls MPI_Comm_split, which has no
///   non-blocking form; it runs only after every member has been seen to arrive.)
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
    check(MPI_Isend(p.bytes.data(), count_of(n, "send"), MPI_FLOAT, static_cast<int>(peer), tag, data_, &p.request), "send");
    outbox_.push_back(std::move(p));
  }

  void recv(float* data, std::size_t n, std::size_t peer, int tag = 0) override {
    check_peer(peer, tag, "recv");
    check_broken("recv");
    MPI_Message msg;
    MPI_Status status;
    int found = 0;
    const bool got = poll([&] {
      check(MPI_Improbe(static_cast<int>(peer), tag, data_, &found, &msg, &status), "recv");
      return found != 0;
    });
    if (!got) {
      check_broken("recv");
      fail("recv timed out", "a message from rank " + std::to_string(peer) + " within " + ms(), "none",
           "tag " + std::to_string(tag));
    }
    int count = 0;
    MPI_Get_count(&status, MPI_FLOAT, &count);
    if (static_cast<std::size_t>(count) != n) {
      std::vector<float> drop(static_cast<std::size_t>(count));
      MPI_Mrecv(drop.data(), count, MPI_FLOAT, &msg, MPI_STATUS_IGNORE);
      fail("received message of another size", std::to_string(n) + " floats",
           std::to_string(count) + " floats from rank " + std::to_string(peer), "tag " + std::to_string(tag));
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

  void check(int code, const char* op) {
    if (code != MPI_SUCCESS) fail(std::string("MPI error in ") + op, "MPI_SUCCESS", detail::mpi_error_string(code), op);
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
      ::dynasparse::detail::fail<CommError>("parallel", std::string(op) + " on a broken communicator",
                                            "all ranks healthy", "\"" + family_->reason + "\"", where());
    }
  }

  // Takes in any abort notice a peer sent; marks the family broken with its reason.
  void poll_notices() {
    detail::MpiFamily& f = *family_;
    if (f.broken || f.ctrl == MPI_COMM_NULL) return;
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, detail::mpi_abort_tag, f.ctrl, &flag, &st) != MPI_SUCCESS || !flag) return;
    int len = 0;
    MPI_Get_count(&st, MPI_CHAR, &len);
    std::vector<char> msg(static_cast<std::size_t>(std::max(len, 0)));
    MPI_Recv(msg.data(), len, MPI_CHAR, st.MPI_SOURCE, detail::mpi_abort_tag, f.ctrl, MPI_STATUS_IGNORE);
    std::uint64_t id = 0;
    if (msg.size() < sizeof(id)) return;
    std::memcpy(&id, msg.data(), sizeof(id));
    // NOTE: Open MPI reuses a freed communicator's context, so a notice sent to an earlier
    // family that nobody received can surface here: only our family's id counts.
    if (id != f.id) return;
    f.broken = true;
    f.reason.assign(msg.begin() + sizeof(id), msg.end());
  }

  // Marks the family broken and tells every peer why (non-blocking: a dead peer cannot hold
  // us up; the notice buffers stay alive for MPI).
  void break_family(const std::string& reason) {
    detail::MpiFamily& f = *family_;
    if (f.broken) return;
    f.broken = true;
    f.reason = reason;
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
    fail(std::string(op) + " timed out", "every rank's data within " + ms(),
         "not all of it (a peer died or stalled mid-operation)", "collective");
  }

  // Polls `done` until it returns true (-> true), or the timeout passes or a peer's abort
  // notice arrives (-> false; the caller releases what MPI may still touch, then throws:
  // check_broken() for a notice, its own timeout error otherwise). Spins briefly, then
  // yields and finally sleeps, so waiting ranks leave the cores to the ranks that compute
  // (the tests oversubscribe them).
  template <class Done>
  bool poll(Done&& done) {
    const auto start = Clock::now(), deadline = start + timeout();
    for (std::uint64_t i = 0;; ++i) {
      if (done()) return true;
      if ((i & 63) == 0) {
        poll_notices();
        if (family_->broken) return false;
        const auto now = Clock::now();
        if (now >= deadline) return false;
        if (now - start > std::chrono::milliseconds(20)) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (i > 256) std::this_thread::yield();
    }
  }

  bool wait(MPI_Request* reqs, int n, const char* op) {
    return poll([&] {
      int flag = 0;
      check(MPI_Testall(n, reqs, &flag, MPI_STATUSES_IGNORE), op);
      return flag != 0;
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
    });
    if (!ok) {
      for (auto& r : sends) {
        if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
      }
      detail::mpi_bury(std::move(out));
      check_broken(name);
      std::vector<int> absent;
      for (int q = 0; q < size_; ++q) {
        if (!have[static_cast<std::size_t>(q)]) absent.push_back(q);
      }
      fail(std::string(name) + " timed out", "all " + std::to_string(size_) + " ranks within " + ms(),
           absent.empty() ? std::string("unfinished sends") : "no arrival from rank(s) " + detail::mpi_rank_list(absent),
           "collective");
    }
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      const std::uint64_t* h = got.data() + static_cast<std::size_t>(q) * words;
      if (h[1] != sequence_ || h[2] != mine[2]) {
        fail("ranks are in different collectives",
             std::string(name) + " (collective #" + std::to_string(sequence_) + ") on every rank",
             std::string(detail::op_name(h[2])) + " (collective #" + std::to_string(h[1]) + ") on rank " +
                 std::to_string(q),
             "collective");
      }
      if (op != detail::MpiOp::Split && (h[3] != a || h[4] != b)) {
        const bool root = op == detail::MpiOp::Broadcast && h[4] != b;
        fail(std::string("ranks passed different ") + (root ? "roots" : "sizes") + " to " + name,
             root ? "root " + std::to_string(b) + " on every rank" : std::to_string(a) + " floats on every rank",
             (root ? "root " + std::to_string(h[4]) : std::to_string(h[3])) + " on rank " + std::to_string(q),
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
