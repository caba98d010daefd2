// SPDX-License-Identifier: Apache-2.0
// Loading ~100 MB of FP32 weights: wall time and this process's resident-memory growth.
//   BM_LoadSafetensors/map/views/<cache>   SafetensorsFile (mmap) + header validation + a
//                                          load<float> view of each of the 100 tensors
//   BM_LoadSafetensors/map/touch/<cache>   the same, then every element read (all pages fault in)
//   BM_LoadSafetensors/read/views/<cache>  FileAccess::Read: the file copied into a buffer
//   BM_LoadModel/<fp32|int8>/<cache>       Model::load of a ~100 MB model, which converts every
//                                          weight into its own packed format (a copy by design)
// <cache>: warm (the file sits in the page cache, as right after writing it) or cold (its
// pages are evicted with posix_fadvise before each iteration, so they come from the disk).
// Counters: load_ms (mean); rss_growth and peak_rss_growth, the largest growth over any
// iteration of RSS (/proc/self/statm) at the end of the load and of its high-water mark
// (VmHWM, reset through /proc/self/clear_refs) during it, as fractions of the file size;
// trimmed_rss_growth, the growth once malloc_trim has returned the pages that malloc keeps
// after the load freed its temporaries (what the loaded object itself holds).
// Page-cache pages count only once this process maps them, so a zero-copy open stays small.
// The files go to $DYNASPARSE_BENCH_DIR, else the system temp directory (which must not be
// tmpfs for the cold runs: tmpfs pages cannot be evicted), and are removed at exit.
// Linux only: the figures come from /proc/self and posix_fadvise.
#include <benchmark/benchmark.h>

#if defined(__linux__)

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "dynasparse/core/build_info.hpp"
#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/model/model.hpp"

namespace {

namespace ds = dynasparse;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// 100 tensors of 256 x 1024 floats: 100 MiB of data.
constexpr std::size_t kTensors = 100, kRows = 256, kCols = 1024;

std::size_t page_size() { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }

// Resident bytes of this process: anonymous memory plus the file pages it has mapped in.
std::size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t total = 0, resident = 0;
  statm >> total >> resident;
  return resident * page_size();
}

// Resets the high-water mark to the current RSS (Linux 4.0+); false where that is refused.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

std::size_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "VmHWM:") {
      std::size_t kb = 0;
      status >> kb;
      return kb * 1024;
    }
    status.ignore(1 << 20, '\n');
  }
  return 0;
}

// A file written once per process, flushed to disk so that its clean pages can be evicted.
class BenchFile {
 public:
  explicit BenchFile(const std::string& stem, const ds::io::SafetensorsWriter& writer) {
    const char* dir = std::getenv("DYNASPARSE_BENCH_DIR");
    path_ = (fs::path(dir != nullptr && *dir != '\0' ? dir : fs::temp_directory_path().string()) /
             (stem + "." + std::to_string(::getpid()) + ".safetensors"))
                .string();
    writer.write(path_);
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("io_bench: cannot reopen " + path_);
    ::fsync(fd);
    ::close(fd);
    bytes_ = static_cast<std::size_t>(fs::file_size(path_));
  }
  BenchFile(const BenchFile&) = delete;
  BenchFile& operator=(const BenchFile&) = delete;
  ~BenchFile() {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }

  const std::string& path() const noexcept { return path_; }
  std::size_t bytes() const noexcept { return bytes_; }

  // Drops the file's pages from the page cache (they are clean after the fsync).
  void evict() const {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  // Brings every page back into the page cache.
  void warm() const {
    std::ifstream f(path_, std::ios::binary);
    std::vector<char> chunk(std::size_t{1} << 20);
    while (f.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || f.gcount() > 0) {
    }
  }

 private:
  std::string path_;
  std::size_t bytes_ = 0;
};

const BenchFile& tensors_file() {
  static const BenchFile file = [] {
    // One buffer, referenced by every tensor: contents do not matter to loading.
    static std::vector<float> values(kRows * kCols);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& v : values) v = dist(rng);
    ds::io::SafetensorsWriter w;
    for (std::size_t i = 0; i < kTensors; ++i) {
      w.add_borrowed("t" + std::to_string(i), ds::DType::F32, {kRows, kCols}, values.data(),
                     values.size() * sizeof(float));
    }
    return BenchFile("dynasparse_io_bench_tensors", w);
  }();
  return file;
}

// hidden 1024 (128 heads), FFN 4096, 2 layers, head gates, vocab 256, 512 positions:
// 2 x 48.5 MiB of blocks plus 3 MiB of embeddings.
ds::ModelConfig model_config() {
  ds::ModelConfig c;
  c.vocab = 256;
  c.hidden = 1024;
  c.layers = 2;
  c.ffn = 4096;
  c.max_seq_len = 512;
  c.gate = ds::GatePosition::Head;
  return c;
}

const BenchFile& model_file() {
  static const BenchFile file = [] {
    const ds::ModelConfig c = model_config();
    const std::size_t e = c.hidden, f = c.ffn;
    // Every tensor borrows the start of one buffer as large as the largest (FFN) weight;
    // the values are small enough for any layer and finite, as Model::load checks.
    static std::vector<float> values(f * e);
    std::mt19937 rng(2);
    std::uniform_real_distribution<float> dist(-1.0f / 32, 1.0f / 32);
    for (float& v : values) v = dist(rng);
    ds::io::SafetensorsWriter w;
    auto add = [&](const std::string& name, std::vector<std::size_t> shape) {
      std::size_t n = 1;
      for (std::size_t d : shape) n *= d;
      w.add_borrowed(name, ds::DType::F32, std::move(shape), values.data(), n * sizeof(float));
    };
    add("embed.weight", {c.vocab, e});
    add("pos_embed.weight", {c.max_seq_len, e});
    for (std::size_t l = 0; l < c.layers; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      for (const char* norm : {"norm1", "norm2"}) {
        add(p + norm + ".weight", {e});
        add(p + norm + ".bias", {e});
      }
      add(p + "attn.attention.in_proj_weight", {3 * e, e});
      add(p + "attn.attention.in_proj_bias", {3 * e});
      add(p + "attn.attention.out_proj.weight", {e, e});
      add(p + "attn.attention.out_proj.bias", {e});
      add(p + "attn.gate.0.weight", {c.num_heads(), e});
      add(p + "attn.gate.0.bias", {c.num_heads()});
      add(p + "ffn.up.weight", {f, e});
      add(p + "ffn.up.bias", {f});
      add(p + "ffn.down.weight", {e, f});
      add(p + "ffn.down.bias", {e});
    }
    add("norm_f.weight", {e});
    add("norm_f.bias", {e});
    w.set_metadata("dynasparse.config", ds::to_json(c).dump());
    return BenchFile("dynasparse_io_bench_model", w);
  }();
  return file;
}

// Runs `load` (which returns what must stay alive while RSS is read) once per iteration,
// timing only the load: the release of the mapping or model afterwards is not counted.
template <class Load>
void measure(benchmark::State& state, const BenchFile& file, bool cold, Load&& load) {
  if (!cold) file.warm();
  double seconds = 0.0, growth = 0.0, peak_growth = 0.0, trimmed_growth = 0.0;
  bool peak_known = true;
  for (auto _ : state) {
    if (cold) file.evict();
    // Memory freed by earlier iterations and benchmarks stays resident in malloc's arenas
    // and would be reused unseen: hand it back so that the growth counts every new page.
#if defined(__GLIBC__)
    ::malloc_trim(0);
#endif
    peak_known = reset_peak_rss() && peak_known;
    const std::size_t before = rss_bytes();
    const auto t0 = Clock::now();
    auto kept = load();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    const std::size_t after = rss_bytes();
    const std::size_t peak = peak_rss_bytes();
#if defined(__GLIBC__)
    ::malloc_trim(0);
#endif
    const std::size_t trimmed = rss_bytes();
    benchmark::DoNotOptimize(kept);
    state.SetIterationTime(s);
    seconds += s;
    growth = std::max(growth, (static_cast<double>(after) - static_cast<double>(before)) / file.bytes());
    peak_growth = std::max(peak_growth, (static_cast<double>(peak) - static_cast<double>(before)) / file.bytes());
    trimmed_growth =
        std::max(trimmed_growth, (static_cast<double>(trimmed) - static_cast<double>(before)) / file.bytes());
  }
  state.counters["load_ms"] = seconds * 1e3 / static_cast<double>(state.iterations());
  state.counters["rss_growth"] = growth;
  if (peak_known) state.counters["peak_rss_growth"] = peak_growth;
  state.counters["trimmed_rss_growth"] = trimmed_growth;
  state.counters["file_MiB"] = static_cast<double>(file.bytes()) / (1 << 20);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(file.bytes()));
}

// The file opened and validated, with a view of every tensor (and, when touched, a sum of
// their bits: integer, so the compiler vectorizes it and the page faults dominate).
struct Opened {
  ds::io::SafetensorsFile file;
  std::vector<ds::io::TensorData<float>> tensors;
  std::uint32_t sum = 0;
  bool borrowed = true;
};

void load_safetensors(benchmark::State& state, ds::io::FileAccess access, bool touch, bool cold) {
  const BenchFile& f = tensors_file();
  bool borrowed = true;
  measure(state, f, cold, [&] {
    auto o = std::make_unique<Opened>(Opened{ds::io::SafetensorsFile(f.path(), {}, access), {}, 0, true});
    o->tensors.reserve(o->file.size());
    for (const std::string& name : o->file.names()) {
      o->tensors.push_back(o->file.load<float>(name));
      o->borrowed = o->borrowed && o->tensors.back().borrowed();
    }
    if (touch) {
      for (const auto& t : o->tensors) {
        const auto* p = reinterpret_cast<const unsigned char*>(t.data());
        std::uint32_t s = 0;
        for (std::size_t i = 0; i < t.size(); ++i) {
          std::uint32_t bits;
          std::memcpy(&bits, p + i * sizeof(float), sizeof bits);
          s += bits;
        }
        o->sum += s;
      }
    }
    borrowed = borrowed && o->borrowed;
    return o;
  });
  // Zero-copy means the views point into the mapping; a copied tensor would void the figures.
  if (access == ds::io::FileAccess::Map && !borrowed) {
    state.SkipWithError("a tensor was copied instead of viewed in place");
  }
  state.SetLabel(std::to_string(kTensors) + " tensors of " + std::to_string(kRows) + "x" + std::to_string(kCols) +
                 " F32");
}

void load_model(benchmark::State& state, bool int8, bool cold) {
  const BenchFile& f = model_file();
  ds::LoadOptions opt;
  opt.int8 = int8;
  std::size_t packed = 0;
  measure(state, f, cold, [&] {
    auto m = std::make_unique<ds::Model>(ds::Model::load(f.path(), opt));
    packed = m->bytes();
    return m;
  });
  state.counters["packed_fraction"] = static_cast<double>(packed) / static_cast<double>(f.bytes());
  state.SetLabel("hidden 1024, FFN 4096, 2 layers; " + ds::build_info());
}

[[maybe_unused]] const bool io_registered = [] {
  for (const char* cache : {"warm", "cold"}) {
    const bool cold = std::string(cache) == "cold";
    struct Case {
      const char* name;
      ds::io::FileAccess access;
      bool touch;
    };
    for (const Case& c : {Case{"map/views", ds::io::FileAccess::Map, false},
                          Case{"map/touch", ds::io::FileAccess::Map, true},
                          Case{"read/views", ds::io::FileAccess::Read, false}}) {
      benchmark::RegisterBenchmark(("BM_LoadSafetensors/" + std::string(c.name) + "/" + cache).c_str(),
                                   [c, cold](benchmark::State& s) { load_safetensors(s, c.access, c.touch, cold); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
    for (const char* format : {"fp32", "int8"}) {
      const bool int8 = std::string(format) == "int8";
      benchmark::RegisterBenchmark(("BM_LoadModel/" + std::string(format) + "/" + cache).c_str(),
                                   [int8, cold](benchmark::State& s) { load_model(s, int8, cold); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}();

}  // namespace
#endif  // __linux__
