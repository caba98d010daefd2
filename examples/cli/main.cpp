// SPDX-License-Identifier: Apache-2.0
// The `dynasparse` command-line tool: inspect, run, generate with, convert, evaluate and
// benchmark models, and plan and run them across ranks. Exit status 0 on success, 2 on bad
// input (one line on stderr; under mpirun, one line per rank, then the job is aborted).
#include <CLI/CLI.hpp>
#include <dynasparse/dynasparse.hpp>
#if DYNASPARSE_CLI_WITH_MPI
#include <dynasparse/parallel/mpi_communicator.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace {

namespace ds = dynasparse;

bool stderr_is_terminal() {
#if defined(__unix__) || defined(__APPLE__)
  return isatty(2) != 0;
#else
  return false;
#endif
}

// A one-line progress bar on stderr, drawn only when stderr is a terminal and not --quiet.
class Progress {
 public:
  Progress(std::string what, std::size_t total, bool quiet)
      : what_(std::move(what)), total_(total), on_(!quiet && stderr_is_terminal()) {}
  void update(std::size_t done) {
    if (!on_ || total_ == 0) return;
    const int width = 30, filled = static_cast<int>(width * done / total_);
    std::fprintf(stderr, "\r%s [%.*s%*s] %zu/%zu", what_.c_str(), filled, "##############################",
                 width - filled, "", done, total_);
    if (done == total_) std::fprintf(stderr, "\n");
  }

 private:
  std::string what_;
  std::size_t total_;
  bool on_;
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ds::detail::fail<ds::FormatError>("cli", "cannot open text file", "a readable file", path, "--text");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// --int8-head, an app-wide flag like --allow-extra-tensors: every subcommand that runs the
// model takes it (the files written by sparsify and quantize are not affected by it). For
// `plan`, the INT8 table counts in the loaded model's bytes, which model_cost() spreads over
// the layers like every other byte.
bool int8_head_flag = false;

ds::Model load_model(const std::string& path, bool allow_extra) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = allow_extra;
  opt.int8_head = int8_head_flag;
  return ds::Model::load(path, opt);
}

void cmd_info(const std::string& path, bool allow_extra) {
  ds::Model m = load_model(path, allow_extra);
  std::printf("%s\n", ds::build_info().c_str());
  std::printf("model: %s\n", path.c_str());
  std::printf("config: %s\n", ds::to_json(m.config()).dump().c_str());
  std::printf("weights: %.3f MB\n", static_cast<double>(m.bytes()) / 1e6);
  std::map<std::string, float> alphas;
  m.for_each_linear([&](ds::nn::AnyLinear& l) { alphas[l.name()] = l.activation_alpha(); });
  for (const auto& [name, format] : m.layer_formats()) {
    const float a = alphas[name];
    if (a > 0.0f) {
      std::printf("  %-40s %s  input_alpha %.6g (static)\n", name.c_str(), format.c_str(), static_cast<double>(a));
    } else {
      std::printf("  %-40s %s\n", name.c_str(), format.c_str());
    }
  }
}

std::vector<std::int32_t> read_tokens(const std::string& tokens_path) {
  const ds::io::NpyArray a = ds::io::read_npy(tokens_path);
  std::vector<std::int32_t> tokens(a.elements());
  if (a.dtype == ds::DType::I32) {
    std::copy(a.data_as<std::int32_t>(), a.data_as<std::int32_t>() + tokens.size(), tokens.begin());
  } else if (a.dtype == ds::DType::I64) {
    const std::int64_t* p = a.data_as<std::int64_t>();
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (p[i] < 0 || p[i] > INT32_MAX) {
        ds::detail::fail<ds::ConfigError>("cli", "token id out of range", "0 <= id < 2^31", p[i], tokens_path);
      }
      tokens[i] = static_cast<std::int32_t>(p[i]);
    }
  } else {
    ds::detail::fail<ds::FormatError>("cli", "token file dtype", "int32 or int64", ds::dtype_name(a.dtype), tokens_path);
  }
  if (a.shape.size() != 1) {
    ds::detail::fail<ds::ShapeError>("cli", "token file rank", "a 1-d array", std::to_string(a.shape.size()) + "-d",
                                     tokens_path);
  }
  return tokens;
}

void cmd_run(const std::string& path, const std::string& tokens_path, const std::string& out, bool allow_extra) {
  const ds::Model m = load_model(path, allow_extra);
  const std::vector<std::int32_t> tokens = read_tokens(tokens_path);
  // Next-token logits [L, vocab], or per-token class logits [L, num_classes] of a classifier.
  const std::size_t width = m.out_dim();
  if (tokens.size() > m.config().max_seq_len) {  // before the logits are allocated
    ds::detail::fail<ds::ShapeError>("cli", "sequence longer than the model's maximum",
                                     "<= " + std::to_string(m.config().max_seq_len), tokens.size(),
                                     tokens_path);
  }
  std::vector<float> logits(tokens.size() * width);
  ds::Workspace ws;
  m.forward(tokens.data(), tokens.size(), ds::MatrixView(logits.data(), tokens.size(), width), ws);
  ds::io::write_npy(out, ds::TensorView<const float>(logits.data(), tokens.size(), width));
  std::printf("wrote %s: %s [%zu, %zu]\n", out.c_str(), m.config().num_classes ? "class logits" : "logits",
              tokens.size(), width);
}

// The KV cache's storage named by --kv.
ds::nn::KVDType kv_dtype(const std::string& kv) {
  if (kv == "i8") return ds::nn::KVDType::I8;
  if (kv == "i8compact") return ds::nn::KVDType::I8Compact;
  return ds::nn::KVDType::F32;
}

void cmd_generate(const std::string& path, const std::string& prompt, std::size_t n,
                  const ds::SamplingOptions& s, const std::string& kv, bool allow_extra,
                  bool quiet) {
  const ds::Model m = load_model(path, allow_extra);
  const std::vector<std::int32_t> ids = ds::ByteTokenizer::encode(prompt);
  // The cache holds what this call can reach, not the model's whole context: it is
  // allocated up front.
  const std::size_t max_len = m.config().max_seq_len;
  ds::Session session = m.new_session(
      ids.size() >= max_len || n >= max_len - ids.size() ? max_len : ids.size() + n, kv_dtype(kv));
  ds::GenerateOptions g;
  g.max_new_tokens = n;
  g.sampling = s;
  std::string text;
  g.on_token = [&](std::int32_t t) {
    if (t >= 0 && t < 256) {
      std::fputc(t, stdout);
      std::fflush(stdout);
    }
    return true;
  };
  const auto r = m.generate(ids, g, session);
  std::printf("\n");
  if (!quiet) {
    std::fprintf(stderr, "prefill %zu tokens in %.2f ms; %zu tokens at %.1f tokens/s; %.1f%% of (query, head) pairs skipped\n",
                 prompt.size(), r.prefill_seconds * 1e3, r.tokens.size(), r.decode_tokens_per_second(),
                 100.0 * session.stats().skipped_fraction());
  }
}

// Linear layers of `m` that `--layers` selects: "ffn" (up and down) or "all".
std::vector<std::string> selected_layers(const ds::Model& m, const std::string& which) {
  std::vector<std::string> names;
  for (const auto& [name, format] : m.layer_formats()) {
    if (which == "all" || name.find(".ffn.") != std::string::npos) names.push_back(name);
  }
  return names;
}

void cmd_sparsify(const std::string& path, const std::string& out, double target, const std::string& block,
                  const std::string& which, bool int8, bool allow_extra) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = allow_extra;
  int used = 0;
  if (std::sscanf(block.c_str(), "%zux%zu%n", &opt.sparse_block.rows, &opt.sparse_block.cols,
                  &used) != 2 ||
      static_cast<std::size_t>(used) != block.size()) {
    ds::detail::fail<ds::ConfigError>("cli", "block shape", "RxC such as 16x4", block, "--block");
  }
  if (!ds::simd::spmm_supports_block_rows(opt.sparse_block.rows) || opt.sparse_block.cols == 0 ||
      opt.sparse_block.cols > 64 || (int8 && opt.sparse_block.cols != 4)) {
    ds::detail::fail<ds::ConfigError>("cli", "block shape", int8 ? "16x4, 32x4 or 64x4 with --int8" : "16xC, 32xC or 64xC",
                                      block, "--block");
  }
  for (const std::string& name : selected_layers(load_model(path, allow_extra), which)) {
    opt.formats[name] = int8 ? "gsparse_i8" : "gsparse_f32";
  }
  if (!(target < 1.0)) {  // a layer keeps at least one block
    ds::detail::fail<ds::ConfigError>("cli", "sparsify target", "0 <= target < 1", target,
                                      "--target");
  }
  opt.prune = target;
  // The layers are pruned at load and written as block-CSR, so the file holds only the
  // kept blocks (and INT8 values with --int8).
  ds::Model::load(path, opt).save(out);
  std::printf("wrote %s: %s layers pruned to %.0f%% of %s blocks%s\n", out.c_str(), which.c_str(), target * 100,
              block.c_str(), int8 ? ", int8" : "");
}

// Options of `quantize --calibrate`.
struct CalibrateOptions {
  std::string text;  // empty: no calibration (dynamic activations)
  std::string observer = "mse";
  std::size_t samples = 1000, sample_len = 32;
};

void cmd_quantize(const std::string& path, const std::string& out, const std::string& which,
                  bool allow_extra, const CalibrateOptions& cal, bool head, bool quiet) {
  ds::Model fp = load_model(path, allow_extra);
  ds::LoadOptions opt;
  opt.allow_extra_tensors = allow_extra;
  opt.int8_head = head || int8_head_flag;  // recorded in the written config
  const std::vector<std::string> layers = selected_layers(fp, which);
  for (const auto& [name, format] : fp.layer_formats()) {
    if (std::find(layers.begin(), layers.end(), name) == layers.end()) continue;
    opt.formats[name] = format.rfind("gsparse", 0) == 0 ? "gsparse_i8" : "dense_i8";
  }
  ds::Model q = ds::Model::load(path, opt);
  if (!cal.text.empty()) {
    // Samples spread evenly over the text, each run through the float model.
    const auto ids = ds::ByteTokenizer::encode(read_text(cal.text));
    if (ids.size() < cal.sample_len + 1) {
      ds::detail::fail<ds::ConfigError>("cli", "calibration text too short", ">= " + std::to_string(cal.sample_len + 1) + " bytes",
                                        ids.size(), cal.text);
    }
    std::vector<std::vector<std::int32_t>> samples;
    for (std::size_t i = 0; i < cal.samples; ++i) {
      const auto at = ids.begin() + static_cast<std::ptrdiff_t>(i * (ids.size() - cal.sample_len) / cal.samples);
      samples.emplace_back(at, at + static_cast<std::ptrdiff_t>(cal.sample_len));
    }
    ds::quant::CalibratorOptions copt;
    copt.observer.kind = cal.observer == "maxabs"       ? ds::quant::ObserverKind::MaxAbs
                         : cal.observer == "percentile" ? ds::quant::ObserverKind::Percentile
                         : cal.observer == "entropy"    ? ds::quant::ObserverKind::Entropy
                                                        : ds::quant::ObserverKind::Mse;
    Progress bar("calibrate", samples.size(), quiet);
    copt.progress = [&](std::size_t done, std::size_t) { bar.update(done); };
    copt.warn = [&](const std::string& w) {
      if (!quiet) std::fprintf(stderr, "%s\n", w.c_str());
    };
    std::map<std::string, float> alphas;
    for (const auto& [layer, alpha] : fp.calibrate(samples, copt)) {
      if (std::find(layers.begin(), layers.end(), layer) != layers.end()) alphas[layer] = alpha;
    }
    q.set_activation_alphas(alphas);
  }
  // INT8 layers are written as their int8 values and alphas (a quarter of the float bytes).
  q.save(out);
  if (cal.text.empty()) {
    std::printf(
        "wrote %s: %s linear layers in INT8 (per-channel max-abs weights, dynamic activations)%s\n",
        out.c_str(), which.c_str(), opt.int8_head ? "; INT8 output head" : "");
  } else {
    std::printf(
        "wrote %s: %s linear layers in INT8 (per-channel max-abs weights, static activations: %s "
        "observer, "
        "%zu samples of %zu bytes from %s)%s\n",
        out.c_str(), which.c_str(), cal.observer.c_str(), cal.samples, cal.sample_len,
        cal.text.c_str(), opt.int8_head ? "; INT8 output head" : "");
  }
}

void cmd_eval(const std::string& path, const std::string& text_path, std::size_t max_bytes,
              const std::string& kv, bool allow_extra, bool quiet) {
  const ds::Model m = load_model(path, allow_extra);
  if (!m.config().causal) {
    ds::detail::fail<ds::UnsupportedError>("cli", "bits per byte of an encoder", "a causal model", "causal = false", path);
  }
  if (m.config().num_classes != 0) {
    ds::detail::fail<ds::UnsupportedError>("cli", "bits per byte of a classifier (no next-token logits)",
                                           "num_classes = 0", m.config().num_classes, path);
  }
  std::string text = read_text(text_path);
  if (max_bytes && text.size() > max_bytes) text.resize(max_bytes);
  const auto ids = ds::ByteTokenizer::encode(text);
  // Windows overlap by one token, so each predicts from the one before it: they need two.
  if (m.config().max_seq_len < 2) {
    ds::detail::fail<ds::UnsupportedError>("cli", "bits per byte with a context under 2 tokens",
                                           ">= 2", m.config().max_seq_len, path + ": max_seq_len");
  }
  const std::size_t window = std::min(m.config().max_seq_len, std::max<std::size_t>(ids.size(), 2)),
                    v = m.vocab();
  double bits = 0;
  std::size_t scored = 0;
  std::vector<float> logits(window * v);
  ds::Workspace ws;
  // With --kv, each window is a prefill through a KV cache of that storage, whose attention
  // reads K and V back from the cache: the bits then include the cache's rounding.
  std::optional<ds::Session> session;
  if (!kv.empty()) session.emplace(m.new_session(window, kv_dtype(kv)));
  Progress bar("eval", ids.size(), quiet);
  for (std::size_t start = 0; start + 1 < ids.size(); start += window - 1) {
    const std::size_t n = std::min(window, ids.size() - start);
    if (session) {
      session->reset();
      m.decode(ids.data() + start, n, *session, ds::MatrixView(logits.data(), n, v));
    } else {
      m.forward(ids.data() + start, n, ds::MatrixView(logits.data(), n, v), ws);
    }
    for (std::size_t i = 0; i + 1 < n; ++i) {
      const float* l = logits.data() + i * v;
      const float mx = *std::max_element(l, l + v);
      double z = 0;
      for (std::size_t j = 0; j < v; ++j) z += std::exp(static_cast<double>(l[j] - mx));
      bits += (std::log(z) - (l[ids[start + i + 1]] - mx)) / std::log(2.0);
      ++scored;
    }
    bar.update(std::min(ids.size(), start + n));
  }
  std::printf("%s: %.4f bits per byte over %zu bytes (perplexity per byte %.3f)\n", text_path.c_str(),
              scored ? bits / scored : 0.0, scored, scored ? std::exp2(bits / scored) : 0.0);
}

// Median of a few timings (the middle one; the faster of the two middle ones for an even count).
double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];
}

void cmd_bench(const std::string& path, std::size_t prefill, std::size_t decode, int threads,
               int repeat, bool json, const std::string& kv, bool allow_extra) {
  ds::set_num_threads(threads);
  const ds::Model m = load_model(path, allow_extra);
  // Both are cut to fit the context (the counts run are reported).
  decode = std::min(decode, m.config().max_seq_len - 1);
  prefill = std::min(prefill, m.config().max_seq_len - decode);
  std::vector<std::int32_t> tokens(prefill);
  for (std::size_t i = 0; i < prefill; ++i) tokens[i] = static_cast<std::int32_t>((i * 37 + 11) % std::min<std::size_t>(256, m.vocab()));
  const std::size_t width = m.out_dim();  // a causal classifier decodes class logits
  std::vector<float> logits(std::max<std::size_t>(prefill, 1) * width);
  using clock = std::chrono::steady_clock;
  // Each repetition is a prefill, then `decode` steps after it, in one session reset between
  // them, as a server reuses its sessions (a fresh one per repetition would time the page
  // faults of its new scratch memory: at two threads, 3.5-6 ms for a prefill that takes 2.2
  // ms in a reused one). The median is the figure to compare (one slow repetition on a
  // shared machine does not move it); the best shows what a quiet machine gives. One
  // untimed repetition first: the first pass faults in the mapped weights.
  std::vector<double> prefill_s, decode_s;
  ds::Session s = m.new_session(prefill + decode, kv_dtype(kv));
  for (int rep = -1; rep < repeat; ++rep) {
    s.reset();
    auto t0 = clock::now();
    m.decode(tokens.data(), prefill, s, ds::MatrixView(logits.data(), prefill, width));
    const double p = std::chrono::duration<double>(clock::now() - t0).count();
    t0 = clock::now();
    std::int32_t tok = 1;
    for (std::size_t i = 0; i < decode; ++i) m.decode(&tok, 1, s, ds::MatrixView(logits.data(), 1, width));
    if (rep < 0) continue;  // the warm-up
    prefill_s.push_back(p);
    decode_s.push_back(std::chrono::duration<double>(clock::now() - t0).count());
  }
  const double per_token = decode ? 1e3 / static_cast<double>(decode) : 0.0;
  const double prefill_tps = prefill / median_of(prefill_s), decode_ms = median_of(decode_s) * per_token;
  const double prefill_best = prefill / *std::min_element(prefill_s.begin(), prefill_s.end());
  const double decode_best = *std::min_element(decode_s.begin(), decode_s.end()) * per_token;
  if (json) {
    nlohmann::json j = {{"model", path},
                        {"build", ds::build_info()},
                        {"threads", ds::num_threads()},
                        {"repeat", repeat},
                        {"prefill_tokens", prefill},
                        {"prefill_tokens_per_s", prefill_tps},
                        {"prefill_tokens_per_s_best", prefill_best},
                        {"decode_tokens", decode},
                        {"decode_ms_per_token", decode_ms},
                        {"decode_ms_per_token_best", decode_best},
                        {"kv", kv.empty() ? "f32" : kv},
                        {"kv_bytes_per_token", s.kv_bytes_per_token()},
                        {"int8_head", int8_head_flag}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "%s\nprefill %zu tokens: %.1f tokens/s (best %.1f); decode %zu tokens: %.3f ms/token (best "
        "%.3f); "
        "median of %d, %d threads; %s KV cache, %zu bytes per token; %s output head\n",
        ds::build_info().c_str(), prefill, prefill_tps, prefill_best, decode, decode_ms,
        decode_best, repeat, ds::num_threads(), kv.empty() ? "f32" : kv.c_str(),
        s.kv_bytes_per_token(), int8_head_flag ? "INT8" : "float");
  }
}

// ---------------------------------------------------------------------------------------
// Parallel plans: `dynasparse plan` and `dynasparse run --plan`.

// The devices file's schema; also the tail of `dynasparse plan --help`.
constexpr const char* kDevicesHelp = R"(Devices file (JSON):
  {"devices": [{"memory_bytes": 8e9, "flops": 5e10, "memory_bandwidth": 2e10, "count": 2, "node": 0}, ...],
   "devices_per_node": 2, "node_memory_bandwidth": 3e10,
   "links": {"intra_node": {"bandwidth": 1e10, "latency": 2e-6},
             "inter_node": {"bandwidth": 1.25e9, "latency": 2e-5}}}
  devices           required, non-empty. memory_bytes: bytes; flops: sustained FLOP/s on
                    this model's kernels; memory_bandwidth: optional, bytes/s the device
                    reads weights and KV cache at alone (bounds decoding);
                    count: repeats the entry (default 1); node: optional, else device i is
                    on node i / devices_per_node (default node 0)
  node_memory_bandwidth  optional, bytes/s a node's devices read at together (shared
                    equally by the devices busy at once)
  links             bandwidth in bytes/s, latency in seconds; intra_node required,
                    inter_node required when the devices span several nodes
  comment           free text, at the top level and in a device entry
  Unknown fields are errors. Example: examples/plans/two_cores.json
)";

nlohmann::json read_json_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ds::detail::fail<ds::FormatError>("cli", std::string("cannot open ") + what, "a readable file", path, what);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    ds::detail::fail<ds::FormatError>("cli", std::string("malformed JSON in ") + what, "valid JSON", e.what(), path);
  }
}

ds::ModelConfig config_of(const ds::io::SafetensorsFile& f) {
  const auto meta = f.metadata().find("dynasparse.config");
  if (meta == f.metadata().end()) {
    ds::detail::fail<ds::FormatError>("cli", "missing model config", "metadata key dynasparse.config", "none", f.name());
  }
  return ds::config_from_json(meta->second, f.name() + " metadata");
}

// The partitioner's model costs, with the weight bytes of the file's formats: the FP32 cost
// model scaled to the loaded model's size (INT8 and sparse layers make it smaller).
ds::parallel::ModelCost model_cost(const ds::Model& m, const std::string& path, double context) {
  ds::parallel::ModelCost c = ds::parallel::costs_from_config(m.config(), 4.0, context);
  double fp32 = c.embedding_bytes;
  for (const auto& l : c.layers) fp32 += l.param_bytes;
  const double scale = fp32 > 0 ? static_cast<double>(m.bytes()) / fp32 : 1.0;
  for (auto& l : c.layers) l.param_bytes *= scale;
  c.embedding_bytes *= scale;
  c.name = path;
  return c;
}

std::string mb(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f MB", bytes / 1e6);
  return b;
}

struct PlanArgs {
  std::string devices, out;
  ds::parallel::Workload work;
  std::string objective = "throughput";
};

void cmd_plan(const std::string& path, const PlanArgs& a, bool allow_extra) {
  namespace par = ds::parallel;
  const ds::Model m = load_model(path, allow_extra);
  const par::Cluster cluster = par::cluster_from_json(read_json_file(a.devices, "devices file"), a.devices);
  par::Workload work = a.work;
  work.objective = a.objective == "latency" ? par::Objective::Latency : par::Objective::Throughput;
  if (work.micro_batches > work.batch) {
    ds::detail::fail<ds::ConfigError>("cli", "more micro-batches than sequences", "<= batch = " + std::to_string(work.batch),
                                      work.micro_batches, "--micro-batches");
  }
  const par::ModelCost cost = model_cost(m, path, static_cast<double>(work.prompt_len + work.decode_len));
  const par::Partition part = par::partition(cost, cluster, work);
  const par::Plan& best = part.best;
  std::size_t nodes = 0;
  for (const auto& d : cluster.devices) nodes = std::max(nodes, d.node + 1);
  std::printf("model: %s (%zu layers, %zu heads, %s of weights)\n", path.c_str(), m.config().layers,
              m.config().num_heads(), mb(static_cast<double>(m.bytes())).c_str());
  std::printf("devices: %zu on %zu node(s), from %s\n", cluster.devices.size(), nodes, a.devices.c_str());
  std::printf("workload: batch %zu, prompt %zu, decode %zu, %zu micro-batch(es); objective %s\n", work.batch,
              work.prompt_len, work.decode_len, work.micro_batches, a.objective.c_str());
  std::printf("chosen: %s (bound: %s)\n", best.shape().c_str(), best.bound.c_str());
  std::printf("  predicted %.4g ms per token, %.4g tokens/s, at most %s per rank\n", best.time_per_token * 1e3,
              best.tokens_per_second, mb(best.max_memory_bytes).c_str());
  for (std::size_t s = 0; s < best.pp; ++s) {
    std::printf("  stage %zu: layers [%zu, %zu)\n", s, best.stage_first_layer[s], best.stage_first_layer[s + 1]);
  }
  for (const auto& r : best.ranks) {
    std::printf("  rank %zu: replica %zu, stage %zu, tp index %zu, layers [%zu, %zu), heads [%zu, %zu), %s\n", r.rank,
                r.dp, r.stage, r.tp, r.first_layer, r.last_layer, r.first_head, r.first_head + r.head_count,
                mb(r.memory_bytes).c_str());
  }
  std::printf("candidates:\n  %-20s %12s %12s %14s  %s\n", "shape", "ms/token", "tokens/s", "max/rank", "bound or reason");
  nlohmann::json cands = nlohmann::json::array();
  for (const par::Plan& c : part.candidates) {
    const bool data_parallel = c.tp == 1 && c.pp == 1;
    const std::string label = c.shape() + (data_parallel ? " (DP)" : "");
    if (c.feasible) {
      std::printf("  %-20s %12.4g %12.4g %14s  %s%s\n", label.c_str(), c.time_per_token * 1e3, c.tokens_per_second,
                  mb(c.max_memory_bytes).c_str(), c.bound.c_str(), c.shape() == best.shape() ? "  <- chosen" : "");
    } else {
      std::printf("  %-20s %12s %12s %14s  infeasible: %s\n", label.c_str(), "-", "-",
                  c.max_memory_bytes > 0 ? mb(c.max_memory_bytes).c_str() : "-", c.reason.c_str());
    }
    nlohmann::json cj = {{"tp", c.tp}, {"pp", c.pp}, {"dp", c.dp}, {"data_parallel", data_parallel},
                         {"feasible", c.feasible}, {"time_per_token_s", c.time_per_token},
                         {"tokens_per_second", c.tokens_per_second}, {"max_memory_bytes", c.max_memory_bytes},
                         {"bound", c.bound}};
    if (!c.feasible) cj["reason"] = c.reason;
    cands.push_back(cj);
  }
  if (!a.out.empty()) {
    nlohmann::json j = ds::parallel::to_json(best);
    j["model"] = {{"file", path}, {"layers", m.config().layers}, {"heads", m.config().num_heads()}};
    j["workload"] = {{"batch", work.batch},
                     {"prompt", work.prompt_len},
                     {"decode", work.decode_len},
                     {"micro_batches", work.micro_batches},
                     {"objective", a.objective}};
    j["devices_file"] = a.devices;
    j["candidates"] = cands;
    std::ofstream out(a.out);
    out << j.dump(2) << "\n";
    if (!out) ds::detail::fail<ds::FormatError>("cli", "cannot write the plan", "a writable file", a.out, "-o");
    std::printf("wrote %s\n", a.out.c_str());
  }
}

struct RunPlanArgs {
  std::string plan;
  std::size_t micro_batches = 1;
  std::size_t repeat = 0;   // --time: timed forward passes after the first
  int timeout_ms = 60000;
  bool mpi = false;
};

// Reads the plan and checks it against the model and the world size (every rank does the
// same, so every rank reports a mismatch).
ds::parallel::Plan read_plan(const std::string& path, const ds::ModelConfig& cfg, std::size_t world) {
  const nlohmann::json j = read_json_file(path, "plan file");
  ds::parallel::Plan plan = ds::parallel::plan_from_json(j, path);
  ds::parallel::place_of(plan, cfg, 0, world);
  return plan;
}

// One rank's part of `run --plan`: loads its shard, runs the forward pass (and the timed
// repeats, between barriers), and fills `logits` on the replica-0 rank that reports.
void run_rank(ds::parallel::Communicator& comm, const ds::io::SafetensorsFile& file, const ds::parallel::Plan& plan,
              const std::vector<std::int32_t>& tokens, const RunPlanArgs& a, bool allow_extra, std::vector<float>& logits,
              std::vector<double>& seconds) {
  namespace par = ds::parallel;
  ds::LoadOptions opt;
  opt.allow_extra_tensors = allow_extra;
  opt.int8_head = int8_head_flag;
  const par::ModelShard shard = par::ModelShard::load(file, plan, comm.rank(), opt);
  par::Executor ex(shard, comm);
  par::ExecutorOptions eo;
  eo.micro_batches = a.micro_batches;
  const std::size_t n = tokens.size(), v = shard.config().vocab;
  const bool reporter = comm.rank() == (plan.pp - 1) * plan.tp;
  std::vector<float> mine(ex.writes_logits(eo) ? n * v : 0);
  ds::MatrixView view = mine.empty() ? ds::MatrixView() : ds::MatrixView(mine.data(), n, v);
  ds::Workspace ws;
  for (std::size_t rep = 0; rep <= a.repeat; ++rep) {
    comm.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    ex.forward(tokens.data(), n, view, ws, eo);
    comm.barrier();
    if (rep > 0 && reporter) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (reporter) logits = std::move(mine);
}

void report_run(const std::string& out, const std::vector<float>& logits, std::size_t n, std::size_t v,
                const std::vector<double>& seconds, const ds::parallel::Plan& plan, const char* transport) {
  ds::io::write_npy(out, ds::TensorView<const float>(logits.data(), n, v));
  std::printf("wrote %s: logits [%zu, %zu] (%s on %zu %s)\n", out.c_str(), n, v, plan.shape().c_str(), plan.world(),
              transport);
  if (!seconds.empty()) {
    const double best = *std::min_element(seconds.begin(), seconds.end());
    double mean = 0;
    for (double s : seconds) mean += s / static_cast<double>(seconds.size());
    std::printf("forward of %zu tokens: best %.3f ms, mean %.3f ms over %zu runs (%.1f tokens/s)\n", n, best * 1e3,
                mean * 1e3, seconds.size(), static_cast<double>(n) / best);
  }
}

void cmd_run_plan_threads(const std::string& path, const std::string& tokens_path, const std::string& out,
                          const RunPlanArgs& a, bool allow_extra) {
  const ds::io::SafetensorsFile file(path);
  const ds::ModelConfig cfg = config_of(file);
  const std::vector<std::int32_t> tokens = read_tokens(tokens_path);
  const ds::parallel::Plan plan = read_plan(a.plan, cfg, 0);
  ds::parallel::ThreadGroup group(plan.world(), std::chrono::milliseconds(a.timeout_ms));
  std::vector<float> logits;
  std::vector<double> seconds;
  group.run([&](ds::parallel::Communicator& comm) {
    run_rank(comm, file, plan, tokens, a, allow_extra, logits, seconds);
  });
  report_run(out, logits, tokens.size(), cfg.vocab, seconds, plan, "threads");
}

#if DYNASPARSE_CLI_WITH_MPI
// Under mpirun: every rank reads the files and checks the plan, then runs its shard. Any
// error is printed by the rank that has it (and by the peers it tells), and the job ends
// through MPI_Abort with status 2 on every rank.
int cmd_run_plan_mpi(int* argc, char*** argv, const std::string& path, const std::string& tokens_path,
                     const std::string& out, const RunPlanArgs& a, bool allow_extra) {
  namespace par = ds::parallel;
  par::MpiEnvironment env(argc, argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const std::string who = "rank " + std::to_string(rank) + " of " + std::to_string(size) + ": ";
  std::unique_ptr<ds::io::SafetensorsFile> file;
  std::vector<std::int32_t> tokens;
  par::Plan plan;
  std::unique_ptr<par::MpiCommunicator> comm;
  try {
    file = std::make_unique<ds::io::SafetensorsFile>(path);
    tokens = read_tokens(tokens_path);
    plan = read_plan(a.plan, config_of(*file), static_cast<std::size_t>(size));
    comm = std::make_unique<par::MpiCommunicator>(MPI_COMM_WORLD, std::chrono::milliseconds(a.timeout_ms));
  } catch (const std::exception& e) {
    par::abort_job(who + e.what(), 2);
  }
  std::vector<float> logits;
  std::vector<double> seconds;
  par::run_or_abort(*comm, [&] {
    run_rank(*comm, *file, plan, tokens, a, allow_extra, logits, seconds);
    if (!logits.empty()) report_run(out, logits, tokens.size(), config_of(*file).vocab, seconds, plan, "MPI ranks");
    comm->barrier();  // nobody finalizes while a peer may still fail
  });
  comm.reset();
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dynasparse: run gated, group-sparse, INT8 transformer models"};
  app.require_subcommand(1);
  bool allow_extra = false, quiet = false;
  app.add_flag("--allow-extra-tensors", allow_extra, "accept tensors the model does not use");
  app.add_flag("-q,--quiet", quiet, "no progress or timing lines on stderr");
  app.add_flag("--int8-head", int8_head_flag,
               "run the output head (tied embedding, lm_head or classifier) in INT8 as well");
  std::string model;

  auto* info = app.add_subcommand("info", "print the config, layer formats and sizes");
  info->add_option("model", model, "safetensors file")->required();

  std::string tokens_path, out;
  auto* run = app.add_subcommand("run", "tokens .npy (int32/int64, 1-d) -> logits .npy");
  run->add_option("model", model)->required();
  run->add_option("--tokens", tokens_path, "input token ids")->required();
  run->add_option("-o,--out", out, "output logits")->required();
  RunPlanArgs rp;
  run->add_option("--plan", rp.plan,
                  "run a plan (from `dynasparse plan -o`) on in-process threads, or on MPI ranks under mpirun");
  run->add_option("--micro-batches", rp.micro_batches, "pipeline micro-batches (token chunks; causal models)")
      ->check(CLI::Range(1, 1 << 20));
  run->add_option("--time", rp.repeat, "with --plan: time this many forward passes after the first")
      ->check(CLI::Range(0, 100000));
  run->add_option("--timeout-ms", rp.timeout_ms, "with --plan: how long a rank waits for a peer")
      ->check(CLI::Range(1, 86400000));
#if DYNASPARSE_CLI_WITH_MPI
  run->add_flag("--mpi", rp.mpi, "with --plan: run on MPI ranks (the default when started by mpirun)");
#endif

  PlanArgs pa;
  auto* plan = app.add_subcommand("plan", "choose tensor/pipeline/data parallelism for a model on a set of devices");
  plan->add_option("model", model)->required();
  plan->add_option("--devices", pa.devices, "devices file (JSON; see below)")->required();
  plan->add_option("--batch", pa.work.batch, "sequences served together")->check(CLI::Range(1, 1 << 20));
  plan->add_option("--prompt", pa.work.prompt_len, "prompt tokens")->check(CLI::Range(0, 1 << 24));
  plan->add_option("--decode", pa.work.decode_len, "generated tokens")->check(CLI::Range(0, 1 << 24));
  plan->add_option("--micro-batches", pa.work.micro_batches, "pipeline micro-batches (<= batch)")
      ->check(CLI::Range(1, 1 << 20));
  plan->add_option("--objective", pa.objective, "latency or throughput")->check(CLI::IsMember({"latency", "throughput"}));
  plan->add_option("-o,--out", pa.out, "write the chosen plan (with the candidates) as JSON");
  plan->footer(kDevicesHelp);

  std::string prompt;
  std::size_t n_new = 64;
  ds::SamplingOptions sampling;
  auto* gen = app.add_subcommand("generate", "continue a prompt (byte-level tokens)");
  gen->add_option("model", model)->required();
  gen->add_option("-p,--prompt", prompt)->required();
  gen->add_option("-n,--tokens", n_new, "new tokens");
  gen->add_option("--temperature", sampling.temperature);
  gen->add_option("--top-k", sampling.top_k);
  gen->add_option("--top-p", sampling.top_p);
  gen->add_option("--seed", sampling.seed);
  // Shared by generate, eval and bench: the KV cache's storage.
  std::string kv;
  const auto add_kv = [&](CLI::App* sub, const char* what) {
    sub->add_option("--kv", kv, what)->check(CLI::IsMember({"f32", "i8", "i8compact"}));
  };
  add_kv(gen,
         "KV cache: f32 (default), i8 (a float scale per token and head) or i8compact (a float per "
         "token, "
         "4 bits per head: 27% of f32's bytes at head_dim 8)");

  double target = 0.5;
  std::string block = std::to_string(ds::nn::recommended_block_shape.rows) + "x" +
                      std::to_string(ds::nn::recommended_block_shape.cols),
              which = "ffn";
  bool int8 = false;
  auto* sp = app.add_subcommand("sparsify", "prune linear layers to a block sparsity; write a new file");
  sp->add_option("model", model)->required();
  sp->add_option("-o,--out", out)->required();
  sp->add_option("--target", target, "fraction of blocks removed")->check(CLI::Range(0.0, 1.0));
  sp->add_option("--block", block, "block shape RxC (64x4: fastest; 16x4: finer pruning)");
  sp->add_option("--layers", which, "ffn or all")->check(CLI::IsMember({"ffn", "all"}));
  sp->add_flag("--int8", int8, "store the sparse layers as INT8");

  auto* qz = app.add_subcommand("quantize", "mark linear layers INT8; write a new file");
  qz->add_option("model", model)->required();
  qz->add_option("-o,--out", out)->required();
  qz->add_option("--layers", which, "ffn or all")->check(CLI::IsMember({"ffn", "all"}));
  bool quantize_head = false;
  qz->add_flag(
      "--head", quantize_head,
      "the output head in INT8 too (recorded in the config; made from the float table at load)");
  CalibrateOptions cal;
  qz->add_option("--calibrate", cal.text, "text whose activations set static INT8 scales (default: dynamic)");
  qz->add_option("--observer", cal.observer, "how a scale is chosen from what calibration saw")
      ->check(CLI::IsMember({"maxabs", "percentile", "entropy", "mse"}));
  qz->add_option("--samples", cal.samples, "calibration samples (the seed uses 1000)")->check(CLI::Range(1, 1000000));
  qz->add_option("--sample-bytes", cal.sample_len, "bytes per calibration sample")->check(CLI::Range(2, 65536));

  std::string text_path;
  std::size_t max_bytes = 0;
  auto* ev = app.add_subcommand("eval", "bits per byte on a text file");
  ev->add_option("model", model)->required();
  ev->add_option("--text", text_path)->required();
  ev->add_option("--max-bytes", max_bytes, "evaluate at most this many bytes");
  add_kv(ev,
         "evaluate through a KV cache of this storage (f32, i8, i8compact) instead of a cache-free "
         "forward");

  std::size_t prefill = 128, decode = 32;
  int threads = 1;
  bool json = false;
  auto* bench = app.add_subcommand("bench", "prefill and decode timing");
  bench->add_option("model", model)->required();
  bench->add_option("--prefill", prefill);
  bench->add_option("--decode", decode);
  bench->add_option("--threads", threads)->check(CLI::Range(1, 1024));
  int repeat = 5;
  bench->add_option("--repeat", repeat,
                    "timed repetitions (prefill, then decode) after one untimed; the median is reported")
      ->check(CLI::Range(1, 1000));
  bench->add_flag("--json", json);
  add_kv(bench, "KV cache: f32 (default), i8 or i8compact");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "dynasparse: %s\n", e.what());
    return 2;
  }
  try {
    if (*info) cmd_info(model, allow_extra);
    if (*run && rp.plan.empty()) cmd_run(model, tokens_path, out, allow_extra);
    if (*run && !rp.plan.empty()) {
#if DYNASPARSE_CLI_WITH_MPI
      if (rp.mpi || ds::parallel::MpiEnvironment::launched_by_mpirun()) {
        return cmd_run_plan_mpi(&argc, &argv, model, tokens_path, out, rp, allow_extra);
      }
#endif
      cmd_run_plan_threads(model, tokens_path, out, rp, allow_extra);
    }
    if (*plan) cmd_plan(model, pa, allow_extra);
    if (*gen) cmd_generate(model, prompt, n_new, sampling, kv, allow_extra, quiet);
    if (*sp) cmd_sparsify(model, out, target, block, which, int8, allow_extra);
    if (*qz) cmd_quantize(model, out, which, allow_extra, cal, quantize_head, quiet);
    if (*ev) cmd_eval(model, text_path, max_bytes, kv, allow_extra, quiet);
    if (*bench) cmd_bench(model, prefill, decode, threads, repeat, json, kv, allow_extra);
  } catch (const ds::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dynasparse: %s\n", e.what());
    return 2;
  }
  return 0;
}
