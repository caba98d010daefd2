// SPDX-License-Identifier: Apache-2.0
// Decoding speed of two revisions of the headers in one process, for scripts/decode-ab.sh.
//
// Built twice, once per revision, each time with the identifier `dynasparse` defined as a
// macro naming a namespace of its own (-Ddynasparse=dynasparse_a and DECODE_AB_SIDE=side_a,
// then _b), so that both revisions' inline functions link into one program without
// colliding; a third build with DECODE_AB_MAIN gives the main(). Each side measures what
// BM_ModelDecode measures: a 128-byte prompt of the held-out text prefilled (not timed), then
// 64 one-token steps (timed). main() runs the two sides in pairs, alternating which goes
// first, and reports the median of the per-pair ratios: a burst of load on a shared machine
// then falls on both sides of a pair, where two separate benchmark runs minutes apart
// differ by more than the changes they are meant to compare.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <string>
#include <vector>

#include "model_variants.hpp"

#ifndef DECODE_AB_MAIN
#include <fstream>
#include <memory>

#include "dynasparse/dynasparse.hpp"

#ifndef DECODE_AB_SIDE
#error "DECODE_AB_SIDE must name this side's entry point (side_a or side_b)"
#endif

namespace {

constexpr std::size_t kPrompt = bench_models::prompt_bytes, kSteps = bench_models::decode_bytes;
constexpr int kCopies = 4;  // see DECODE_AB_SIDE

struct Decoder {
  dynasparse::Model model;
  dynasparse::Session session;
  std::vector<std::int32_t> ids;
  std::vector<float> logits;
};

std::unique_ptr<Decoder> load(const std::string& models, const std::string& variant) {
  const bench_models::Variant var = bench_models::parse_variant(variant);
  dynasparse::LoadOptions o;
  o.int8 = var.int8;
  o.int8_head = var.int8_head;
  auto m = dynasparse::Model::load(models + var.file(), o);
  std::ifstream in(models + "/fortunes_heldout.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() < kPrompt + kSteps) {
    std::fprintf(stderr, "decode_ab: %s/fortunes_heldout.txt holds fewer than %zu bytes\n",
                 models.c_str(), kPrompt + kSteps);
    std::exit(2);
  }
  if (m.vocab() != 256) {
    std::fprintf(stderr, "decode_ab: %s is not a byte-level model (vocabulary %zu)\n",
                 models.c_str(), m.vocab());
    std::exit(2);
  }
  auto ids = dynasparse::ByteTokenizer::encode(text.substr(0, kPrompt + kSteps));
  auto s = m.new_session(kPrompt + kSteps,
                         var.i8kv ? dynasparse::nn::KVDType::I8 : dynasparse::nn::KVDType::F32);
  std::vector<float> logits(kPrompt * m.vocab());
  return std::make_unique<Decoder>(
      Decoder{std::move(m), std::move(s), std::move(ids), std::move(logits)});
}

}  // namespace

// Microseconds per token of one timed run of kSteps steps after a fresh prompt; the last
// step's logits go to `logits` (the vocabulary's 256 floats).
double DECODE_AB_SIDE(const char* models, const char* variant, int threads, float* logits) {
  // Where the allocator puts a model's weights, caches and buffers moves its step by up to
  // 6% (two builds of the same headers measured 1.06 apart with one model each), so each
  // side cycles through several copies.
  static std::vector<std::unique_ptr<Decoder>> copies = [&] {
    std::vector<std::unique_ptr<Decoder>> c;
    for (int i = 0; i < kCopies; ++i) c.push_back(load(models, variant));
    return c;
  }();
  static std::size_t next = 0;
  Decoder* d = copies[next++ % copies.size()].get();
  dynasparse::set_num_threads(threads);
  const std::size_t v = d->model.vocab();
  d->session.reset();
  d->model.decode(d->ids.data(), kPrompt, d->session,
                  dynasparse::MatrixView(d->logits.data(), kPrompt, v));
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < kSteps; ++i) {
    d->model.decode(d->ids.data() + kPrompt + i, 1, d->session,
                    dynasparse::MatrixView(d->logits.data(), 1, v));
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::copy(d->logits.begin(), d->logits.begin() + static_cast<std::ptrdiff_t>(v), logits);
  return sec * 1e6 / static_cast<double>(kSteps);
}

#else

double side_a(const char* models, const char* variant, int threads, float* logits);
double side_b(const char* models, const char* variant, int threads, float* logits);

namespace {
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

int compare(const char* models, const char* variant, int threads, int pairs) {
  std::vector<float> la(256), lb(256);  // the byte-level models' vocabulary
  // Loads both models and warms caches, pools and page tables before anything is timed.
  for (int i = 0; i < 10; ++i) {
    side_a(models, variant, threads, la.data());
    side_b(models, variant, threads, lb.data());
  }
  std::vector<double> a, b, ratio;
  for (int i = 0; i < pairs; ++i) {
    double ta = 0, tb = 0;
    if (i % 2 == 0) {
      ta = side_a(models, variant, threads, la.data());
      tb = side_b(models, variant, threads, lb.data());
    } else {
      tb = side_b(models, variant, threads, lb.data());
      ta = side_a(models, variant, threads, la.data());
    }
    a.push_back(ta);
    b.push_back(tb);
    ratio.push_back(tb / ta);
  }
  std::printf("%s, %d thread(s), %d pairs of 64-token runs\n", variant, threads, pairs);
  std::printf("A: median %.2f us/token\nB: median %.2f us/token\n", quantile(a, 0.5),
              quantile(b, 0.5));
  std::printf("B/A per pair: median %.4f (quartiles %.4f, %.4f)\n", quantile(ratio, 0.5),
              quantile(ratio, 0.25), quantile(ratio, 0.75));
  // The same prompt and steps on both sides: a difference here means the candidate changed
  // the arithmetic (a reordered sum, say), not only the speed.
  float diff = 0.0f;
  for (std::size_t i = 0; i < la.size(); ++i) diff = std::max(diff, std::abs(lb[i] - la[i]));
  std::printf("last step's logits: max |B - A| = %g\n", static_cast<double>(diff));
  return 0;
}
}  // namespace

// decode_ab MODELS_DIR VARIANT THREADS PAIRS
int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s MODELS_DIR VARIANT THREADS PAIRS\n", argv[0]);
    return 2;
  }
  const char* models = argv[1];
  const char* variant = argv[2];
  const int threads = std::atoi(argv[3]);
  const int pairs = std::atoi(argv[4]);
  if (threads < 1 || pairs < 1) {
    std::fprintf(stderr, "decode_ab: THREADS and PAIRS must be positive\n");
    return 2;
  }
  if (std::none_of(std::begin(bench_models::variants), std::end(bench_models::variants),
                   [&](const char* known) { return std::string(known) == variant; })) {
    std::fprintf(stderr, "decode_ab: unknown variant '%s' (one of BM_ModelDecode's)\n", variant);
    return 2;
  }
  try {
    return compare(models, variant, threads, pairs);
  } catch (const std::exception& e) {  // a missing or unreadable model file, say
    std::fprintf(stderr, "decode_ab: %s\n", e.what());
    return 1;
  }
}

#endif
