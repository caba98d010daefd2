// SPDX-License-Identifier: Apache-2.0
// The `dynasparse` command-line tool: inspect, run, generate with, convert, evaluate and
// benchmark models. Exit status 0 on success, 2 on bad input (one line on stderr).
#include <CLI/CLI.hpp>
#include <dynasparse/dynasparse.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

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

ds::Model load_model(const std::string& path, bool allow_extra) {
  ds::LoadOptions opt;
  opt.allow_extra_tensors = allow_extra;
  return ds::Model::load(path, opt);
}

// Copies every tensor of `in` to a writer, letting `edit` replace any float matrix (an
// edited F16/BF16 matrix is written as F32), and adds the one-element tensors of `extra`.
template <class Edit>
void rewrite(const ds::io::SafetensorsFile& in, const ds::ModelConfig& cfg, const std::string& out, Edit edit,
             const std::map<std::string, float>& extra = {}) {
  ds::io::SafetensorsWriter w;
  std::vector<std::vector<float>> keep;  // replaced tensors must outlive write()
  for (const std::string& name : in.names()) {
    const auto& info = in.info(name);
    if (extra.count(name)) continue;  // replaced below
    const bool floating = info.dtype == ds::DType::F32 || info.dtype == ds::DType::F16 || info.dtype == ds::DType::BF16;
    if (floating && info.shape.size() == 2) {
      std::vector<float> values;
      if (edit(name, in, values)) {
        keep.push_back(std::move(values));
        w.add(name, ds::DType::F32, info.shape, keep.back().data(), keep.back().size() * sizeof(float));
        continue;
      }
    }
    const auto bytes = in.bytes(name);
    w.add(name, info.dtype, info.shape, bytes.data, bytes.size);
  }
  for (const auto& [name, value] : extra) w.add(name, ds::DType::F32, {1}, &value, sizeof(float));
  for (const auto& [k, v] : in.metadata()) w.set_metadata(k, v);
  w.set_metadata("dynasparse.config", ds::to_json(cfg).dump());
  w.write(out);
}

bool is_linear(const std::string& name, const std::string& which) {
  const bool ffn = name.find(".ffn.up.weight") != std::string::npos || name.find(".ffn.down.weight") != std::string::npos;
  const bool attn = name.find(".attn.") != std::string::npos && name.find("weight") != std::string::npos;
  return which == "all" ? (ffn || attn) : ffn;
}

// "layers.0.ffn.up.weight" -> "layers.0.ffn.up" (the linear's name in the config).
std::string linear_name(const std::string& tensor) { return tensor.substr(0, tensor.size() - std::string(".weight").size()); }

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

void cmd_run(const std::string& path, const std::string& tokens_path, const std::string& out, bool allow_extra) {
  const ds::Model m = load_model(path, allow_extra);
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
  std::vector<float> logits(tokens.size() * m.vocab());
  ds::Workspace ws;
  m.forward(tokens.data(), tokens.size(), ds::MatrixView(logits.data(), tokens.size(), m.vocab()), ws);
  ds::io::write_npy(out, ds::TensorView<const float>(logits.data(), tokens.size(), m.vocab()));
  std::printf("wrote %s: logits [%zu, %zu]\n", out.c_str(), tokens.size(), m.vocab());
}

void cmd_generate(const std::string& path, const std::string& prompt, std::size_t n, const ds::SamplingOptions& s,
                  bool allow_extra, bool quiet) {
  const ds::Model m = load_model(path, allow_extra);
  ds::Session session = m.new_session();
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
  const auto r = m.generate(ds::ByteTokenizer::encode(prompt), g, session);
  std::printf("\n");
  if (!quiet) {
    std::fprintf(stderr, "prefill %zu tokens in %.2f ms; %zu tokens at %.1f tokens/s; %.1f%% of (query, head) pairs skipped\n",
                 prompt.size(), r.prefill_seconds * 1e3, r.tokens.size(), r.decode_tokens_per_second(),
                 100.0 * session.stats().skipped_fraction());
  }
}

void cmd_sparsify(const std::string& path, const std::string& out, double target, const std::string& block,
                  const std::string& which, bool int8, bool allow_extra) {
  const ds::io::SafetensorsFile in(path);
  ds::ModelConfig cfg = load_model(path, allow_extra).config();
  ds::sparse::BlockShape shape{16, 4};
  if (std::sscanf(block.c_str(), "%zux%zu", &shape.rows, &shape.cols) != 2) {
    ds::detail::fail<ds::ConfigError>("cli", "block shape", "RxC such as 16x4", block, "--block");
  }
  if (shape.rows != 16) {
    ds::detail::fail<ds::ConfigError>("cli", "block height", "16 (the model loader's block height)", shape.rows, "--block");
  }
  rewrite(in, cfg, out, [&](const std::string& name, const ds::io::SafetensorsFile& f, std::vector<float>& values) {
    if (!is_linear(name, which)) return false;
    const auto w = f.load<float>(name);
    const auto mask = ds::sparse::prune_by_norm(w.view(), {shape, target, false}, name);
    const auto e = ds::sparse::to_element_mask(mask);
    values.assign(w.data(), w.data() + w.size());
    for (std::size_t i = 0; i < values.size(); ++i) values[i] *= e[i];
    cfg.formats[linear_name(name)] = int8 ? "gsparse_i8" : "gsparse_f32";
    return true;
  });
  // The config names the formats: write it again now that every layer is known.
  rewrite(ds::io::SafetensorsFile(out), cfg, out + ".tmp", [](auto&, auto&, auto&) { return false; });
  std::rename((out + ".tmp").c_str(), out.c_str());
  std::printf("wrote %s: %s layers pruned to %.0f%% of %s blocks%s\n", out.c_str(), which.c_str(), target * 100,
              block.c_str(), int8 ? ", int8" : "");
}

// Options of `quantize --calibrate`.
struct CalibrateOptions {
  std::string text;  // empty: no calibration (dynamic activations)
  std::string observer = "mse";
  std::size_t samples = 1000, sample_len = 32;
};

void cmd_quantize(const std::string& path, const std::string& out, const std::string& which, bool allow_extra,
                  const CalibrateOptions& cal, bool quiet) {
  const ds::io::SafetensorsFile in(path);
  ds::ModelConfig cfg = load_model(path, allow_extra).config();
  std::map<std::string, float> extra;
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
    ds::Model fp = load_model(path, allow_extra);
    for (const auto& [layer, alpha] : fp.calibrate(samples, copt)) {
      const bool ffn = layer.find(".ffn.") != std::string::npos;
      if (which == "all" || ffn) extra[layer + ".input_alpha"] = alpha;
    }
  }
  for (const std::string& name : in.names()) {
    if (!is_linear(name, which)) continue;
    const std::string lin = linear_name(name);
    if (name.find("in_proj_weight") != std::string::npos) {
      const std::string base = name.substr(0, name.size() - std::string("in_proj_weight").size());
      for (const char* p : {"q_proj", "k_proj", "v_proj"}) cfg.formats[base.substr(0, base.size() - 1) + "." + p] = "dense_i8";
      continue;
    }
    const auto it = cfg.formats.find(lin);
    cfg.formats[lin] = (it != cfg.formats.end() && it->second.rfind("gsparse", 0) == 0) ? "gsparse_i8" : "dense_i8";
  }
  rewrite(in, cfg, out, [](auto&, auto&, auto&) { return false; }, extra);
  if (cal.text.empty()) {
    std::printf("wrote %s: %s linear layers in INT8 (per-channel max-abs weights, dynamic activations)\n", out.c_str(),
                which.c_str());
  } else {
    std::printf("wrote %s: %s linear layers in INT8 (per-channel max-abs weights, static activations: %s observer, "
                "%zu samples of %zu bytes from %s)\n",
                out.c_str(), which.c_str(), cal.observer.c_str(), cal.samples, cal.sample_len, cal.text.c_str());
  }
}

void cmd_eval(const std::string& path, const std::string& text_path, std::size_t max_bytes, bool allow_extra, bool quiet) {
  const ds::Model m = load_model(path, allow_extra);
  if (!m.config().causal) {
    ds::detail::fail<ds::UnsupportedError>("cli", "bits per byte of an encoder", "a causal model", "causal = false", path);
  }
  std::string text = read_text(text_path);
  if (max_bytes && text.size() > max_bytes) text.resize(max_bytes);
  const auto ids = ds::ByteTokenizer::encode(text);
  const std::size_t window = m.config().max_seq_len, v = m.vocab();
  double bits = 0;
  std::size_t scored = 0;
  std::vector<float> logits(window * v);
  ds::Workspace ws;
  Progress bar("eval", ids.size(), quiet);
  for (std::size_t start = 0; start + 1 < ids.size(); start += window - 1) {
    const std::size_t n = std::min(window, ids.size() - start);
    m.forward(ids.data() + start, n, ds::MatrixView(logits.data(), n, v), ws);
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

void cmd_bench(const std::string& path, std::size_t prefill, std::size_t decode, int threads, bool json, bool allow_extra) {
  ds::set_num_threads(threads);
  const ds::Model m = load_model(path, allow_extra);
  prefill = std::min(prefill, m.config().max_seq_len - std::min(decode, m.config().max_seq_len - 1));
  std::vector<std::int32_t> tokens(prefill);
  for (std::size_t i = 0; i < prefill; ++i) tokens[i] = static_cast<std::int32_t>((i * 37 + 11) % std::min<std::size_t>(256, m.vocab()));
  std::vector<float> logits(std::max<std::size_t>(prefill, 1) * m.vocab());
  using clock = std::chrono::steady_clock;
  double best_prefill = 1e300, best_decode = 1e300;
  for (int rep = 0; rep < 3; ++rep) {
    ds::Session s = m.new_session(prefill + decode);
    auto t0 = clock::now();
    m.decode(tokens.data(), prefill, s, ds::MatrixView(logits.data(), prefill, m.vocab()));
    best_prefill = std::min(best_prefill, std::chrono::duration<double>(clock::now() - t0).count());
    t0 = clock::now();
    std::int32_t tok = 1;
    for (std::size_t i = 0; i < decode; ++i) m.decode(&tok, 1, s, ds::MatrixView(logits.data(), 1, m.vocab()));
    best_decode = std::min(best_decode, std::chrono::duration<double>(clock::now() - t0).count());
  }
  const double prefill_tps = prefill / best_prefill, decode_ms = decode ? best_decode * 1e3 / decode : 0.0;
  if (json) {
    nlohmann::json j = {{"model", path},       {"build", ds::build_info()}, {"threads", ds::num_threads()},
                        {"prefill_tokens", prefill}, {"prefill_tokens_per_s", prefill_tps},
                        {"decode_tokens", decode},   {"decode_ms_per_token", decode_ms}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s\nprefill %zu tokens: %.1f tokens/s; decode %zu tokens: %.3f ms/token (best of 3, %d threads)\n",
                ds::build_info().c_str(), prefill, prefill_tps, decode, decode_ms, ds::num_threads());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dynasparse: run gated, group-sparse, INT8 transformer models"};
  app.require_subcommand(1);
  bool allow_extra = false, quiet = false;
  app.add_flag("--allow-extra-tensors", allow_extra, "accept tensors the model does not use");
  app.add_flag("-q,--quiet", quiet, "no progress or timing lines on stderr");
  std::string model;

  auto* info = app.add_subcommand("info", "print the config, layer formats and sizes");
  info->add_option("model", model, "safetensors file")->required();

  std::string tokens_path, out;
  auto* run = app.add_subcommand("run", "tokens .npy (int32/int64, 1-d) -> logits .npy");
  run->add_option("model", model)->required();
  run->add_option("--tokens", tokens_path, "input token ids")->required();
  run->add_option("-o,--out", out, "output logits")->required();

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

  double target = 0.5;
  std::string block = "16x4", which = "ffn";
  bool int8 = false;
  auto* sp = app.add_subcommand("sparsify", "prune linear layers to a block sparsity; write a new file");
  sp->add_option("model", model)->required();
  sp->add_option("-o,--out", out)->required();
  sp->add_option("--target", target, "fraction of blocks removed")->check(CLI::Range(0.0, 1.0));
  sp->add_option("--block", block, "block shape RxC");
  sp->add_option("--layers", which, "ffn or all")->check(CLI::IsMember({"ffn", "all"}));
  sp->add_flag("--int8", int8, "store the sparse layers as INT8");

  auto* qz = app.add_subcommand("quantize", "mark linear layers INT8; write a new file");
  qz->add_option("model", model)->required();
  qz->add_option("-o,--out", out)->required();
  qz->add_option("--layers", which, "ffn or all")->check(CLI::IsMember({"ffn", "all"}));
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

  std::size_t prefill = 128, decode = 32;
  int threads = 1;
  bool json = false;
  auto* bench = app.add_subcommand("bench", "prefill and decode timing");
  bench->add_option("model", model)->required();
  bench->add_option("--prefill", prefill);
  bench->add_option("--decode", decode);
  bench->add_option("--threads", threads)->check(CLI::Range(1, 1024));
  bench->add_flag("--json", json);

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
    if (*run) cmd_run(model, tokens_path, out, allow_extra);
    if (*gen) cmd_generate(model, prompt, n_new, sampling, allow_extra, quiet);
    if (*sp) cmd_sparsify(model, out, target, block, which, int8, allow_extra);
    if (*qz) cmd_quantize(model, out, which, allow_extra, cal, quiet);
    if (*ev) cmd_eval(model, text_path, max_bytes, allow_extra, quiet);
    if (*bench) cmd_bench(model, prefill, decode, threads, json, allow_extra);
  } catch (const ds::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dynasparse: %s\n", e.what());
    return 2;
  }
  return 0;
}
