// SPDX-License-Identifier: Apache-2.0
// The demo: the shipped byte-level models (examples/models, trained by
// examples/python/train.py on the fortune databases) run in every weight format, with the
// accuracy each keeps and the speed each gains, then a sample of generated text.
//
//   dynasparse_demo [models_dir] [--quick]
//
// Every figure comes from this run on this machine: bits per byte on the held-out text (the
// same windows as `dynasparse eval`), weight bytes as loaded, linear-layer FLOPs per token,
// prefill and decode speed (the median of ten rounds that time every variant in turn), and
// the fraction of (query, head) pairs the head gates skip at the model's tau.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <dynasparse/dynasparse.hpp>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define DYNASPARSE_DEMO_TTY isatty(fileno(stderr))
#else
#define DYNASPARSE_DEMO_TTY false
#endif

#ifndef DYNASPARSE_DEMO_MODELS
#define DYNASPARSE_DEMO_MODELS "examples/models"
#endif

namespace {

namespace ds = dynasparse;
using clock_type = std::chrono::steady_clock;

// A progress bar on stderr, drawn only on a terminal (logs stay clean).
struct Progress {
  const char* what;
  std::size_t total;
  void operator()(std::size_t done) const {
    static const bool tty = DYNASPARSE_DEMO_TTY;
    if (!tty) return;
    const int width = 30, filled = static_cast<int>(width * done / std::max<std::size_t>(total, 1));
    std::fprintf(stderr, "\r  %-34s [%.*s%*s] %zu/%zu", what, filled, "##############################", width - filled,
                 "", done, total);
    if (done == total) std::fprintf(stderr, "\r%*s\r", 80, "");
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ds::detail::fail<ds::FormatError>("demo", "cannot open file", "a readable file", path, "models_dir");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct Eval {
  double bits_per_byte = 0;
  double skipped = 0;
};

// Bits per byte over `ids` in windows of max_seq_len overlapping by one token, the method of
// `dynasparse eval`, with the attention statistics of the whole pass. With a quantized KV
// cache, each window runs through a session holding one (a prefill attends to the cache's
// stored K and V), so the figure includes the cache's rounding.
Eval evaluate(const ds::Model& m, const std::vector<std::int32_t>& ids, const char* what,
              ds::nn::KVDType kv = ds::nn::KVDType::F32) {
  const std::size_t window = m.config().max_seq_len, v = m.vocab();
  std::vector<float> logits(window * v);
  ds::Workspace ws;
  ds::Session session = m.new_session(window, kv);
  ds::nn::AttentionStats stats;
  double bits = 0;
  std::size_t scored = 0;
  const Progress bar{what, ids.size()};
  for (std::size_t start = 0; start + 1 < ids.size(); start += window - 1) {
    const std::size_t n = std::min(window, ids.size() - start);
    if (kv == ds::nn::KVDType::F32) {
      stats += m.forward(ids.data() + start, n, ds::MatrixView(logits.data(), n, v), ws);
    } else {
      session.reset();
      m.decode(ids.data() + start, n, session, ds::MatrixView(logits.data(), n, v));
      stats += session.stats();
    }
    for (std::size_t i = 0; i + 1 < n; ++i) {
      const float* l = logits.data() + i * v;
      const float mx = *std::max_element(l, l + v);
      double z = 0;
      for (std::size_t j = 0; j < v; ++j) z += std::exp(static_cast<double>(l[j] - mx));
      bits += (std::log(z) - (l[ids[start + i + 1]] - mx)) / std::log(2.0);
      ++scored;
    }
    bar(std::min(ids.size(), start + n));
  }
  return {bits / static_cast<double>(scored), stats.skipped_fraction()};
}

// One timed prefill of `prefill` tokens into session `s`, and `decode` single-token steps into
// session `d` after an untimed prompt of half the context (both reset first, as a server reuses
// its sessions): {prefill seconds, decode seconds}.
std::pair<double, double> time_once(const ds::Model& m, const std::vector<std::int32_t>& ids,
                                    std::size_t prefill, std::size_t decode, ds::Session& s,
                                    ds::Session& d, std::vector<float>& logits) {
  const std::size_t v = m.vocab(), prompt = m.config().max_seq_len / 2;
  s.reset();
  auto t0 = clock_type::now();
  m.decode(ids.data(), prefill, s, ds::MatrixView(logits.data(), prefill, v));
  const double p = seconds_since(t0);
  d.reset();
  m.decode(ids.data(), prompt, d, ds::MatrixView(logits.data(), prompt, v));
  t0 = clock_type::now();
  for (std::size_t i = 0; i < decode; ++i) {
    m.decode(ids.data() + prompt + i, 1, d, ds::MatrixView(logits.data(), 1, v));
  }
  return {p, seconds_since(t0)};
}

// The lower middle of `v` (a median that is one of the runs).
double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];
}

// Multiply-adds of the linear layers per token, x2: what sparsity removes.
double linear_mflops_per_token(ds::Model& m) {
  double flops = 0;
  m.for_each_linear([&](ds::nn::AnyLinear& l) {
    flops += 2.0 * static_cast<double>(l.in_features() * l.out_features()) * l.density();
  });
  return flops / 1e6;
}

struct Variant {
  std::string name;
  std::string file;
  ds::LoadOptions options;
  std::string observer;  // "" for float, "dynamic", or an observer name
  ds::nn::KVDType kv = ds::nn::KVDType::F32;  // the sessions' KV cache
};

}  // namespace

int main(int argc, char** argv) try {
  std::string dir = DYNASPARSE_DEMO_MODELS;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      dir = argv[i];
    }
  }
  const auto t_start = clock_type::now();
  std::printf("%s\n\n", ds::build_info().c_str());
  const std::string dense_file = dir + "/fortunes_dense.safetensors";
  const std::string sparse_file = dir + "/fortunes_sparse70.safetensors";
  const std::string text = read_file(dir + "/fortunes_heldout.txt");
  const std::vector<std::int32_t> all = ds::ByteTokenizer::encode(text);
  // Evaluation on the first bytes of the held-out text, calibration on the bytes after them
  // (so no calibration byte is scored).
  const std::size_t eval_bytes = std::min<std::size_t>(quick ? 2048 : 49152, all.size() / 2);
  const std::vector<std::int32_t> eval_ids(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(eval_bytes));
  const std::size_t samples = quick ? 50 : 1000, sample_len = 32;
  const int reps = quick ? 1 : 10;
  std::vector<std::vector<std::int32_t>> calibration;
  const std::size_t span = all.size() - eval_bytes - sample_len;
  for (std::size_t i = 0; i < samples; ++i) {
    const auto at = all.begin() + static_cast<std::ptrdiff_t>(eval_bytes + i * span / samples);
    calibration.emplace_back(at, at + sample_len);
  }

  // Static INT8 needs activation ranges: calibrate the FP32 dense model once per observer.
  ds::LoadOptions fp32;
  std::map<std::string, std::map<std::string, float>> alphas;
  {
    ds::Model dense = ds::Model::load(dense_file, fp32);
    for (auto kind : {ds::quant::ObserverKind::MaxAbs, ds::quant::ObserverKind::Percentile,
                      ds::quant::ObserverKind::Entropy, ds::quant::ObserverKind::Mse}) {
      ds::quant::CalibratorOptions c;
      c.observer.kind = kind;
      c.min_samples = samples;
      const std::string label = std::string("calibrating (") + ds::quant::observer_name(kind) + ")";
      const Progress bar{label.c_str(), samples};
      c.progress = [&](std::size_t done, std::size_t) { bar(done); };
      alphas[ds::quant::observer_name(kind)] = dense.calibrate(calibration, c);
    }
  }

  // The dense model pruned without retraining, in the layers the trained sparse model holds
  // group-sparse (its config's formats), so that the two differ only in the training.
  const auto sparse_formats = ds::Model::load(sparse_file).config().formats;
  auto pruned = [&](double prune) {
    ds::LoadOptions o;
    o.formats = sparse_formats;
    o.prune = prune;
    return o;
  };
  ds::LoadOptions int8;
  int8.int8 = true;
  ds::LoadOptions int8_head = int8;  // the output head (the tied embedding) in INT8 too
  int8_head.int8_head = true;
  std::vector<Variant> variants = {
      {"FP32 dense (baseline)", dense_file, fp32, ""},
      {"FP32 dense pruned to 50%, no retraining", dense_file, pruned(0.5), ""},
      {"FP32 dense pruned to 70%, no retraining", dense_file, pruned(0.7), ""},
      {"FP32 group-sparse 70% (trained)", sparse_file, fp32, ""},
      {"INT8 dynamic per-row activations", dense_file, int8, "dynamic"},
      {"INT8 static, maxabs observer", dense_file, int8, "maxabs"},
      {"INT8 static, percentile observer", dense_file, int8, "percentile"},
      {"INT8 static, entropy observer", dense_file, int8, "entropy"},
      {"INT8 static, mse observer", dense_file, int8, "mse"},
      {"INT8 + group-sparse 70% (trained)", sparse_file, int8, "dynamic"},
      {"INT8 + group-sparse 70%, INT8 head", sparse_file, int8_head, "dynamic"},
      {"INT8 + group-sparse 70%, INT8 head and KV cache", sparse_file, int8_head, "dynamic",
       ds::nn::KVDType::I8},
  };
  const std::size_t prefill = 256, decode = quick ? 8 : 64;
  std::printf(
      "Held-out text: %zu bytes of %s; calibration: %zu samples of %zu bytes; %d threads; speeds: "
      "the "
      "median of %d rounds, each timing every variant in turn.\n\n",
      eval_bytes, (dir + "/fortunes_heldout.txt").c_str(), samples, sample_len, ds::num_threads(),
      reps);
  std::printf("| variant | bits/byte | vs FP32 | weights MB | linear MFLOP/token | prefill tok/s (L=%zu) | decode ms/token | "
              "pairs skipped |\n|---|---|---|---|---|---|---|---|\n",
              prefill);
  // Accuracy first, variant by variant; then the speeds in rounds that time every variant once
  // each, in an order rotated per round, so that a burst of load from other processes falls
  // on all of them alike. Each figure is the median round (best-of figures compared the
  // quietest moment each variant happened to get: on a shared machine one variant's best
  // could be 1.7x another's for the same arithmetic).
  struct Row {
    const Variant* variant;
    ds::Model model;
    Eval eval;
    std::vector<double> prefill_s, decode_s;
  };
  std::vector<Row> rows;
  for (const Variant& v : variants) {
    ds::Model m = ds::Model::load(v.file, v.options);
    if (!v.observer.empty() && v.observer != "dynamic") m.set_activation_alphas(alphas.at(v.observer));
    const Eval e = evaluate(m, eval_ids, v.name.c_str(), v.kv);
    rows.push_back(Row{&v, std::move(m), e, {}, {}});
  }
  {
    std::vector<ds::Session> prefill_sessions, decode_sessions;
    for (const Row& r : rows) {
      prefill_sessions.push_back(r.model.new_session(0, r.variant->kv));
      decode_sessions.push_back(r.model.new_session(0, r.variant->kv));
    }
    std::vector<float> logits(prefill * rows.front().model.vocab());
    const Progress bar{"timing (rounds x variants)",
                       static_cast<std::size_t>(reps + 1) * rows.size()};
    std::size_t done = 0;
    // Round -1 is a warm-up (first-use page faults of each session's scratch), not recorded.
    for (int rep = -1; rep < reps; ++rep) {
      for (std::size_t k = 0; k < rows.size(); ++k) {
        const std::size_t i = (k + static_cast<std::size_t>(rep + 1)) % rows.size();
        Row& r = rows[i];
        const auto [p, d] = time_once(r.model, all, prefill, decode, prefill_sessions[i],
                                      decode_sessions[i], logits);
        if (rep >= 0) {
          r.prefill_s.push_back(p);
          r.decode_s.push_back(d);
        }
        bar(++done);
      }
    }
  }
  const double base_bpb = rows.front().eval.bits_per_byte;
  const double base_prefill = static_cast<double>(prefill) / median_of(rows.front().prefill_s);
  const double base_decode = median_of(rows.front().decode_s) * 1e3 / static_cast<double>(decode);
  for (Row& r : rows) {
    const double prefill_tps = static_cast<double>(prefill) / median_of(r.prefill_s);
    const double decode_ms = median_of(r.decode_s) * 1e3 / static_cast<double>(decode);
    std::printf("| %s | %.4f | %+.2f%% | %.2f | %.2f | %.0f (%.2fx) | %.3f (%.2fx) | %.1f%% |\n",
                r.variant->name.c_str(), r.eval.bits_per_byte,
                100.0 * (r.eval.bits_per_byte / base_bpb - 1.0),
                static_cast<double>(r.model.bytes()) / 1e6, linear_mflops_per_token(r.model),
                prefill_tps, prefill_tps / base_prefill, decode_ms, base_decode / decode_ms,
                100.0 * r.eval.skipped);
  }
  std::fflush(stdout);
  rows.clear();

  // The head-skip curve: how much a larger tau skips, costs and gains (FP32 dense model).
  const float tau0 = ds::Model::load(dense_file).config().skip_threshold;
  std::printf("\nHead skipping on the FP32 dense model (the file's tau is %.2f):\n\n", static_cast<double>(tau0));
  std::printf("| tau | pairs skipped | bits/byte | vs tau = 0 | prefill tok/s (L=%zu) |\n|---|---|---|---|---|\n",
              prefill);
  const std::vector<std::int32_t> curve_ids(eval_ids.begin(),
                                            eval_ids.begin() + static_cast<std::ptrdiff_t>(eval_ids.size() / 3));
  ds::Model dense = ds::Model::load(dense_file);
  const std::vector<float> taus = quick ? std::vector<float>{0.0f, 0.1f}
                                        : std::vector<float>{0.0f, 0.02f, 0.05f, 0.1f, 0.15f, 0.2f, 0.3f};
  std::vector<Eval> evals;
  for (float tau : taus) {
    dense.set_skip_threshold(tau);
    evals.push_back(evaluate(dense, curve_ids, "tau curve"));
  }
  // Timed like the variants: rounds over every tau in a rotated order, the median round each.
  std::vector<std::vector<double>> tau_prefill_s(taus.size());
  {
    ds::Session s = dense.new_session(), d = dense.new_session();
    std::vector<float> logits(prefill * dense.vocab());
    for (int rep = -1; rep < reps; ++rep) {
      for (std::size_t k = 0; k < taus.size(); ++k) {
        const std::size_t i = (k + static_cast<std::size_t>(rep + 1)) % taus.size();
        dense.set_skip_threshold(taus[i]);
        const double p = time_once(dense, all, prefill, 1, s, d, logits).first;
        if (rep >= 0) tau_prefill_s[i].push_back(p);
      }
    }
  }
  for (std::size_t i = 0; i < taus.size(); ++i) {
    std::printf("| %.2f | %.1f%% | %.4f | %+.2f%% | %.0f |\n", static_cast<double>(taus[i]),
                100.0 * evals[i].skipped, evals[i].bits_per_byte,
                100.0 * (evals[i].bits_per_byte / evals[0].bits_per_byte - 1.0),
                static_cast<double>(prefill) / median_of(tau_prefill_s[i]));
  }
  std::fflush(stdout);

  // A sample from the smallest, fastest variant.
  const ds::Model small = ds::Model::load(sparse_file, int8);
  ds::GenerateOptions g;
  g.max_new_tokens = quick ? 40 : 200;
  g.sampling.temperature = 0.8f;
  g.sampling.top_k = 40;
  g.sampling.seed = 7;
  ds::Session s = small.new_session();
  const std::string prompt = "The ";
  const auto r = small.generate(ds::ByteTokenizer::encode(prompt), g, s);
  std::printf("\nSample (INT8 + group-sparse 70%%, temperature 0.8, top-k 40, seed 7):\n\n%s%s\n\n", prompt.c_str(),
              ds::ByteTokenizer::decode(r.tokens).c_str());
  std::printf("Done in %.0f s.\n", seconds_since(t_start));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "dynasparse_demo: %s\n", e.what());
  return 1;
}
