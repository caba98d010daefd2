// SPDX-License-Identifier: Apache-2.0
// GatedAttention<LinearT>: nn.MultiheadAttention with the seed's sigmoid gate, at the output
// or per head (where gated-off (query, head) pairs skip their work), optional rotary
// positions (RoPE), and cached decoding.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"
#include "dynasparse/io/safetensors.hpp"
#include "dynasparse/nn/any_linear.hpp"
#include "dynasparse/nn/dense_f32.hpp"
#include "dynasparse/nn/kv_cache.hpp"
#include "dynasparse/nn/linear.hpp"
#include "dynasparse/simd/attention.hpp"
#include "dynasparse/simd/math.hpp"
#include "dynasparse/simd/reduce.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace nn {

/// Where the sigmoid gate acts.
enum class GatePosition {
  /// No gate: plain nn.MultiheadAttention.
  None,
  /// The seed's module: `MHA(q, k, v) * sigmoid(W_g q + b_g)`, W_g `[E, E]`. Acts after
  /// the heads are mixed, so it cannot skip work.
  Output,
  /// `out_proj(concat_h(g_h(q) * head_h))`: each head's attention output is gated before
  /// the output projection, with a gate computed from the query before attention. Pairs
  /// whose gate is below tau are skipped.
  Head,
};

/// Shape of a GatePosition::Head gate.
enum class HeadGate {
  /// One gate per head: W_g `[H, E]`; the pair's gate is that value.
  Headwise,
  /// One gate per feature: W_g `[E, E]`; the pair's gate is the max over the head's slice.
  Elementwise,
};

/// Configuration of a GatedAttention.
struct GatedAttentionConfig {
  std::size_t embed_dim = 0;
  /// 0 means the seed's default, embed_dim / 8 (head_dim 8).
  std::size_t num_heads = 0;
  GatePosition gate = GatePosition::Output;
  HeadGate head_gate = HeadGate::Headwise;
  /// Head gates below tau skip their (query, head) pair, whose output becomes zero. 0 is
  /// exact (a sigmoid is never negative). The change in the output is at most tau times
  /// the skipped heads' output norms through out_proj.
  float tau = 0.0f;
  /// True for `(N, L, E)` inputs and outputs, false for PyTorch's default `(L, N, E)`.
  bool batch_first = false;
  /// Heads this layer holds, for tensor parallelism (0: all num_heads). A layer holding
  /// h_local < num_heads heads of head_dim = embed_dim / num_heads has q, k, v
  /// `[h_local * head_dim, E]`, out_proj `[E, h_local * head_dim]` and a head gate
  /// `[h_local, E]` (head-wise) or `[h_local * head_dim, E]` (element-wise); forward()
  /// then returns this subset's share of out_proj, which the caller sums over the subsets
  /// (an all-reduce) with the out_proj bias given to one of them only. The output gate acts
  /// on that sum, so a head subset cannot hold it (GatePosition::Output needs all heads).
  std::size_t local_heads = 0;
  /// Rotary position embedding (RoPE) base b; 0 means no rotary (models use 10000). With
  /// b > 0, each head's slice of the projected q and k (never v) is rotated before attention
  /// in the GPT-NeoX / Hugging Face Llama `rotate_half` layout: for head_dim d, the pairs
  /// (c, c + d/2), c < d/2, turn by theta_c = pos * b^(-2c/d):
  ///   x_c' = x_c cos(theta_c) - x_{c+d/2} sin(theta_c),
  ///   x_{c+d/2}' = x_{c+d/2} cos(theta_c) + x_c sin(theta_c).
  /// Positions: in forward(), query i is at i + L_kv - L_q and key j at j (the causal mask's
  /// alignment); in forward_cached(), the new tokens are at cache.size() .. cache.size() + T - 1.
  /// Angles and their cos/sin are computed in double, so positions up to 2^20 keep float
  /// accuracy. Needs an even head_dim. Per head, so head subsets (local_heads) need nothing else.
  float rotary_base = 0.0f;
};

/// Optional masks of one forward() call, with nn.MultiheadAttention's meaning. Views left
/// empty are absent. Both attention masks may be given (their effects add up).
struct AttentionMasks {
  /// Added to the scaled scores, `[L_q, L_kv]` (PyTorch's float attn_mask).
  ConstMatrixView attn_mask;
  /// `[L_q, L_kv]`, true = may not attend (PyTorch's bool attn_mask).
  TensorView<const bool> bool_attn_mask;
  /// `[N, L_kv]`, true = padding key (PyTorch's bool key_padding_mask).
  TensorView<const bool> key_padding_mask;
  /// Query i sees keys j <= i + L_kv - L_q only (the usual triangle for self-attention).
  /// Equals a bool attn_mask of `torch.triu(ones, diagonal=1 + L_kv - L_q)`.
  bool causal = false;
};

/// Work done by one call: (query, head) pairs seen and skipped by the head gate.
struct AttentionStats {
  std::size_t pairs = 0;
  std::size_t skipped = 0;

  double skipped_fraction() const noexcept {
    return pairs == 0 ? 0.0 : static_cast<double>(skipped) / static_cast<double>(pairs);
  }
  AttentionStats& operator+=(const AttentionStats& o) noexcept {
    pairs += o.pairs;
    skipped += o.skipped;
    return *this;
  }
};

/// Checks and completes a configuration: num_heads 0 becomes embed_dim / 8, local_heads 0
/// becomes num_heads.
/// @throws ConfigError if embed_dim is 0, no default head count exists (embed_dim < 8),
/// embed_dim is not divisible by num_heads, tau is negative or NaN, local_heads exceeds
/// num_heads or is below it with an output gate, or rotary_base is negative, not finite, or
/// positive with an odd head_dim.
inline GatedAttentionConfig resolve_config(GatedAttentionConfig cfg, const std::string& name = "attention") {
  if (cfg.embed_dim == 0) {
    ::dynasparse::detail::fail<ConfigError>("nn", "embed_dim must be positive", "> 0", cfg.embed_dim, name);
  }
  if (cfg.num_heads == 0) {
    if (cfg.embed_dim < 8) {
      ::dynasparse::detail::fail<ConfigError>("nn", "no default head count (embed_dim / 8) for this width", "embed_dim >= 8",
                                cfg.embed_dim, name);
    }
    cfg.num_heads = cfg.embed_dim / 8;
  }
  if (cfg.embed_dim % cfg.num_heads != 0) {
    ::dynasparse::detail::fail<ConfigError>("nn", "embed_dim must be divisible by num_heads",
                              "a multiple of " + std::to_string(cfg.num_heads), cfg.embed_dim, name);
  }
  if (!(cfg.tau >= 0.0f)) {
    ::dynasparse::detail::fail<ConfigError>("nn", "gate threshold tau must be non-negative", ">= 0", cfg.tau, name);
  }
  if (!(cfg.rotary_base >= 0.0f) || !std::isfinite(cfg.rotary_base)) {
    ::dynasparse::detail::fail<ConfigError>("nn", "rotary base must be finite and non-negative", ">= 0 (0: no rotary)",
                                            cfg.rotary_base, name);
  }
  if (cfg.rotary_base > 0.0f && (cfg.embed_dim / cfg.num_heads) % 2 != 0) {
    ::dynasparse::detail::fail<ConfigError>("nn", "rotary positions need an even head dimension", "even",
                                            cfg.embed_dim / cfg.num_heads, name);
  }
  if (cfg.local_heads == 0) cfg.local_heads = cfg.num_heads;
  if (cfg.local_heads > cfg.num_heads) {
    ::dynasparse::detail::fail<ConfigError>("nn", "more local heads than heads", "<= " + std::to_string(cfg.num_heads),
                                            cfg.local_heads, name);
  }
  if (cfg.local_heads != cfg.num_heads && cfg.gate == GatePosition::Output) {
    ::dynasparse::detail::fail<ConfigError>("nn", "an output gate acts on the sum over all heads",
                                            "local_heads = " + std::to_string(cfg.num_heads) + " or another gate position",
                                            cfg.local_heads, name);
  }
  return cfg;
}

/// Multi-head attention with `torch.nn.MultiheadAttention` semantics (packed input
/// projection, out_proj, scores scaled by 1 / sqrt(head_dim), `(L, N, E)` or batch_first,
/// self- and cross-attention with L_q != L_kv, float and bool attn_mask, key_padding_mask),
/// the seed's sigmoid gate (GatePosition) and optional rotary positions on q and k
/// (GatedAttentionConfig::rotary_base). Inputs and outputs are `[L * N, E]` row-major
/// matrices in the configured layout (SeqLayout), with N passed to forward().
///
/// Projections go through LinearT: Linear<Format> for any weight format, or AnyLinear
/// (formats chosen per projection at run time). A head no query of the call needs is left
/// out of out_proj and q_proj with DenseF32 and quant::DenseI8 (Linear<Format>, or AnyLinear
/// holding one; q_proj by whole panels, simd::gemm_list_step for INT8), and out of q_proj
/// with the group-sparse formats (by block-row); in forward() also out of k_proj and
/// v_proj. Decoding
/// (forward_cached) computes and caches K and V for every head, since a later query may
/// open a head this call skips. Work is split over threads
/// by (sequence, head) and blocks of query rows (parallel_for); scratch comes from the
/// Workspace, so a warm workspace makes forward() allocation-free.
///
/// Immutable after construction; forward() may run concurrently with distinct workspaces.
/// Example: examples/python/attention_reference.py defines the reference modules.
template <class LinearT>
class GatedAttention {
 public:
  /// Takes the projections: q, k, v `[E, E]` (the row blocks of in_proj_weight), out `[E, E]`,
  /// and the gate (`[E, E]`, or `[H, E]` for HeadGate::Headwise; required unless
  /// GatePosition::None). With config.local_heads below num_heads, E is replaced by
  /// inner_dim() on the head side (see GatedAttentionConfig::local_heads). @throws ConfigError as resolve_config() or for a missing gate;
  /// ShapeError naming the projection if its sizes do not match E (or H).
  GatedAttention(GatedAttentionConfig cfg, LinearT q_proj, LinearT k_proj, LinearT v_proj, LinearT out_proj,
                 std::optional<LinearT> gate, std::string name = "attention")
      : cfg_(resolve_config(cfg, name)), name_(std::move(name)), q_(std::move(q_proj)), k_(std::move(k_proj)),
        v_(std::move(v_proj)), out_(std::move(out_proj)), gate_(std::move(gate)) {
    const std::size_t e = cfg_.embed_dim, inner = inner_dim();
    check_linear(q_, e, inner, "q_proj");
    check_linear(k_, e, inner, "k_proj");
    check_linear(v_, e, inner, "v_proj");
    check_linear(out_, inner, e, "out_proj");
    if (cfg_.gate == GatePosition::None) {
      gate_.reset();
    } else {
      if (!gate_) {
        ::dynasparse::detail::fail<ConfigError>("nn", "gate position needs a gate projection", "a gate Linear", "none",
                                  name_ + ".gate");
      }
      check_linear(*gate_, e, gate_width(), "gate");
    }
  }

  const GatedAttentionConfig& config() const noexcept { return cfg_; }
  /// Calls fn(projection) for q, k, v, out and (if present) the gate, in that order; for
  /// per-layer changes such as calibration taps and activation alphas.
  template <class Fn>
  void for_each_linear(Fn&& fn) {
    for (LinearT* l : {&q_, &k_, &v_, &out_}) fn(*l);
    if (gate_) fn(*gate_);
  }
  /// As above, read-only (for saving and inspection).
  template <class Fn>
  void for_each_linear(Fn&& fn) const {
    for (const LinearT* l : {&q_, &k_, &v_, &out_}) fn(*l);
    if (gate_) fn(*gate_);
  }
  std::size_t embed_dim() const noexcept { return cfg_.embed_dim; }
  std::size_t num_heads() const noexcept { return cfg_.num_heads; }
  std::size_t head_dim() const noexcept { return cfg_.embed_dim / cfg_.num_heads; }
  /// Heads held (num_heads unless a tensor-parallel subset, GatedAttentionConfig::local_heads).
  std::size_t local_heads() const noexcept { return cfg_.local_heads; }
  /// Width of the held heads' projections: local_heads() * head_dim() (E for all heads).
  std::size_t inner_dim() const noexcept { return cfg_.local_heads * head_dim(); }
  const std::string& name() const noexcept { return name_; }
  SeqLayout layout() const noexcept { return cfg_.batch_first ? SeqLayout::BatchSeq : SeqLayout::SeqBatch; }
  /// Output features of the gate projection: E, or H for a head-wise head gate (the held
  /// heads' count and width for a head subset).
  std::size_t gate_width() const noexcept {
    return cfg_.gate == GatePosition::Head && cfg_.head_gate == HeadGate::Headwise ? cfg_.local_heads
                                                                                  : inner_dim();
  }
  /// Sets the head-gate threshold (see GatedAttentionConfig::tau). @throws ConfigError if negative.
  void set_tau(float tau) {
    GatedAttentionConfig c = cfg_;
    c.tau = tau;
    cfg_ = resolve_config(c, name_);
  }

  /// out = attention(query, key, value) with the configured gate. query `[L_q * N, E]`,
  /// key and value `[L_kv * N, E]`, out `[L_q * N, E]`, in the configured layout; `batch`
  /// is N. Masks as AttentionMasks. NaN in the inputs propagates (as in PyTorch) without
  /// error; a query row with no admissible key gives NaN. With rotary positions, query i
  /// is at position i + L_kv - L_q and key j at j. Returns the pair counts.
  /// @throws ShapeError naming the tensor with expected and actual sizes for a width other
  /// than E, row counts that are not multiples of N or disagree, or a mask of the wrong shape;
  /// ConfigError if batch is 0.
  AttentionStats forward(ConstMatrixView query, ConstMatrixView key, ConstMatrixView value, std::size_t batch,
                         MatrixView out, Workspace& ws, const AttentionMasks& masks = {}) const {
    check_batch(batch);
    const std::size_t e = cfg_.embed_dim;
    check_cols(query, e, "nn", name_, " query");
    check_cols(key, e, "nn", name_, " key");
    check_cols(value, e, "nn", name_, " value");
    check_rows_multiple(query, batch, "query");
    check_rows_multiple(key, batch, "key");
    check_shape(value, key.rows(), e, "nn", name_, " value");
    check_shape(out, query.rows(), e, "nn", name_, " output");
    const std::size_t lq = query.rows() / batch, lkv = key.rows() / batch;
    check_masks(masks, batch, lq, lkv);

    Workspace::Scope scope(ws);
    const std::size_t h = cfg_.local_heads, d = head_dim(), inner = inner_dim();
    const HeadPlan plan = plan_heads(query, batch, lq, ws);
    float* qp = ws.allocate<float>(query.rows() * inner);
    float* kp = ws.allocate<float>(key.rows() * inner);
    float* vp = ws.allocate<float>(key.rows() * inner);
    project_used_heads(q_, query, qp, plan, ws);
    project_used_heads(k_, key, kp, plan, ws);
    project_used_heads(v_, value, vp, plan, ws);
    if (cfg_.rotary_base > 0.0f) {
      // Query i sits at i + L_kv - L_q, the position the causal mask aligns it with.
      const double q_first = static_cast<double>(lkv) - static_cast<double>(lq);
      const double* inv_freq = rotary_frequencies(ws);
      rotate(qp, batch, lq, q_first, inv_freq);
      rotate(kp, batch, lkv, 0.0, inv_freq);
    }

    // K and V transposed per (sequence, head): [d, lkv] each, the kernel's layout.
    const std::size_t kvs = simd::attention_kv_stride(lkv);
    float* kt = ws.allocate<float>(batch * inner * kvs);
    float* vt = ws.allocate<float>(batch * inner * kvs);
    parallel_for(0, batch * h, 1, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t nh = lo; nh < hi; ++nh) {
        if (plan.count[nh] == 0) continue;  // no query of this call attends with the head
        const std::size_t n = nh / h, hd = nh % h;
        float* kd = kt + nh * d * kvs;
        float* vd = vt + nh * d * kvs;
        // 16 tokens at a time: their head slices stay in L1 while d rows get 16 writes each.
        for (std::size_t j0 = 0; j0 < lkv; j0 += 16) {
          const std::size_t j1 = std::min(lkv, j0 + 16);
          for (std::size_t c = 0; c < d; ++c) {
            for (std::size_t j = j0; j < j1; ++j) {
              const std::size_t at = layout_row(layout(), n, j, lkv, batch) * inner + hd * d + c;
              kd[c * kvs + j] = kp[at];
              vd[c * kvs + j] = vp[at];
            }
          }
        }
      }
    });

    const KeySource src{kt, vt, lkv, kvs, nullptr};
    return attend(plan, qp, batch, lq, src, masks, out, ws);
  }

  /// Incremental self-attention for decoding: x `[T * N, E]` holds the next T tokens of N
  /// sequences (layout as configured). Their K and V are appended to `cache`, then each
  /// token attends causally to every cached token up to its own position (with rotary
  /// positions, the new tokens are at cache.size() .. cache.size() + T - 1). Decoding a
  /// sequence token by token gives forward(x, x, x, causal) within float rounding (F32
  /// cache) or within the INT8 quantization error (I8 cache).
  /// `masks` (optional) apply on top of the causal order, over every cached key including
  /// the new ones (L_kv = cache.size() + T): attn_mask / bool_attn_mask `[T, L_kv]`,
  /// key_padding_mask `[N, L_kv]` (batched decoding of sequences padded to one length);
  /// masks.causal is implied. They are checked before anything is appended.
  /// @throws ShapeError as forward() and KVCache::append() (past max_len, naming the cache
  /// and both lengths) or for a mask of the wrong shape; ConfigError if the cache's batch,
  /// heads or head_dim differ from this layer's and N.
  AttentionStats forward_cached(ConstMatrixView x, std::size_t batch, KVCache& cache, MatrixView out,
                                Workspace& ws, const AttentionMasks& masks = {}) const {
    check_batch(batch);
    const std::size_t e = cfg_.embed_dim;
    check_cols(x, e, "nn", name_, " query");
    check_rows_multiple(x, batch, "query");
    check_shape(out, x.rows(), e, "nn", name_, " output");
    if (cache.num_heads() != cfg_.local_heads || cache.head_dim() != head_dim() || cache.batch() != batch) {
      ::dynasparse::detail::fail<ConfigError>(
          "nn", "kv cache does not fit the layer (batch, heads, head_dim)",
          std::to_string(batch) + ", " + std::to_string(cfg_.local_heads) + ", " + std::to_string(head_dim()),
          std::to_string(cache.batch()) + ", " + std::to_string(cache.num_heads()) + ", " +
              std::to_string(cache.head_dim()),
          cache.name());
    }
    const std::size_t t = x.rows() / batch;
    if (t > cache.max_len() - cache.size()) {
      ::dynasparse::detail::fail<ShapeError>("nn", "sequence beyond the cache's maximum length",
                               "<= " + std::to_string(cache.max_len()) + " tokens",
                               std::to_string(cache.size() + t) + " tokens", cache.name());
    }
    check_masks(masks, batch, t, cache.size() + t);
    Workspace::Scope scope(ws);
    const std::size_t inner = inner_dim();
    const HeadPlan plan = plan_heads(x, batch, t, ws);
    float* qp = ws.allocate<float>(x.rows() * inner);
    float* kp = ws.allocate<float>(x.rows() * inner);
    float* vp = ws.allocate<float>(x.rows() * inner);
    project_used_heads(q_, x, qp, plan, ws);
    linear_forward(k_, x, MatrixView(kp, x.rows(), inner), ws);
    linear_forward(v_, x, MatrixView(vp, x.rows(), inner), ws);
    if (cfg_.rotary_base > 0.0f) {
      // The new tokens continue the cached ones; the cache stores K already rotated.
      const double* inv_freq = rotary_frequencies(ws);
      const double first = static_cast<double>(cache.size());
      rotate(qp, batch, t, first, inv_freq);
      rotate(kp, batch, t, first, inv_freq);
    }
    cache.append(ConstMatrixView(kp, x.rows(), inner), ConstMatrixView(vp, x.rows(), inner), layout());
    AttentionMasks causal = masks;
    causal.causal = true;
    const KeySource src{nullptr, nullptr, cache.size(), 0, &cache};
    return attend(plan, qp, batch, t, src, causal, out, ws);
  }

 private:
  // One spelling for Linear<Format> and the run-time chosen AnyLinear.
  template <class L>
  static void linear_forward(const L& l, ConstMatrixView x, MatrixView y, Workspace& ws) {
    l.forward(x, y, ws);
  }
  static void linear_forward(const AnyLinear& l, ConstMatrixView x, MatrixView y, Workspace& ws) {
    nn::forward(l, x, y, ws);
  }
  // The outputs of the listed head groups only, where the layer can skip the others
  // (Linear and AnyLinear forward_output_groups); any other LinearT computes them all.
  template <class L>
  static void linear_output_groups(const L& l, ConstMatrixView x, MatrixView y, std::size_t group,
                                   const std::uint32_t* groups, std::size_t count, Workspace& ws) {
    if constexpr (detail::has_output_groups<L>::value) {
      l.forward_output_groups(x, y, group, groups, count, ws);
    } else {
      linear_forward(l, x, y, ws);
    }
  }
  // The product reading only the listed head groups of x (the others are zero), where the
  // layer can skip them; any other LinearT reads every input.
  template <class L>
  static void linear_input_groups(const L& l, ConstMatrixView x, MatrixView y, std::size_t group,
                                  const std::uint32_t* groups, std::size_t count, Workspace& ws) {
    if constexpr (detail::has_input_groups<L>::value) {
      l.forward_input_groups(x, y, group, groups, count, ws);
    } else {
      linear_forward(l, x, y, ws);
    }
  }
  template <class L>
  static std::size_t linear_in(const L& l) noexcept {
    return l.in_features();
  }
  static std::size_t linear_in(const AnyLinear& l) noexcept { return nn::in_features(l); }
  template <class L>
  static std::size_t linear_out(const L& l) noexcept {
    return l.out_features();
  }
  static std::size_t linear_out(const AnyLinear& l) noexcept { return nn::out_features(l); }

  // b^(-2c/d) for c < d/2, in double: with positions up to 2^20 a float angle would be off
  // by up to ~0.06 rad, a double one by ~1e-10.
  const double* rotary_frequencies(Workspace& ws) const {
    const std::size_t d = head_dim(), half = d / 2;
    double* f = ws.allocate<double>(half == 0 ? 1 : half);
    const double base = static_cast<double>(cfg_.rotary_base);
    for (std::size_t c = 0; c < half; ++c) {
      f[c] = std::pow(base, -2.0 * static_cast<double>(c) / static_cast<double>(d));
    }
    return f;
  }

  // Rotates every held head of x [len * N, inner] (layout order) in place; token i of each
  // sequence is at position first + i. One cos/sin per (token, pair), shared by the heads.
  void rotate(float* x, std::size_t batch, std::size_t len, double first, const double* inv_freq) const {
    const std::size_t h = cfg_.local_heads, d = head_dim(), half = d / 2, inner = inner_dim();
    const SeqLayout lay = layout();
    parallel_for(0, len, 16, [&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) {
        const double pos = first + static_cast<double>(i);
        for (std::size_t c = 0; c < half; ++c) {
          const double theta = pos * inv_freq[c];
          const double cs = std::cos(theta), sn = std::sin(theta);
          for (std::size_t n = 0; n < batch; ++n) {
            float* row = x + layout_row(lay, n, i, len, batch) * inner;
            for (std::size_t hd = 0; hd < h; ++hd) {
              float* a = row + hd * d + c;
              float* b = a + half;
              const double x1 = *a, x2 = *b;
              *a = static_cast<float>(x1 * cs - x2 * sn);
              *b = static_cast<float>(x2 * cs + x1 * sn);
            }
          }
        }
      }
    });
  }

  // Keys and values of a call: transposed buffers [N * H][d][stride], or a cache.
  struct KeySource {
    const float* kt;
    const float* vt;
    std::size_t lkv;
    std::size_t stride;
    const KVCache* cache;
  };

  template <class L>
  void check_linear(const L& l, std::size_t in, std::size_t out, const char* what) const {
    if (linear_in(l) != in || linear_out(l) != out) {
      ::dynasparse::detail::fail<ShapeError>("nn", "projection shape mismatch", shape_string(out, in),
                               shape_string(linear_out(l), linear_in(l)), name_ + "." + what);
    }
  }
  void check_batch(std::size_t batch) const {
    if (batch == 0) ::dynasparse::detail::fail<ConfigError>("nn", "batch size must be positive", "> 0", batch, name_);
  }
  void check_rows_multiple(ConstMatrixView x, std::size_t batch, const char* what) const {
    if (x.rows() % batch != 0) {
      ::dynasparse::detail::fail<ShapeError>("nn", "rows are not a whole number of tokens per sequence",
                               "a multiple of " + std::to_string(batch), x.rows(), name_ + " " + what);
    }
  }
  void check_masks(const AttentionMasks& m, std::size_t batch, std::size_t lq, std::size_t lkv) const {
    if (m.attn_mask.data() != nullptr) check_shape(m.attn_mask, lq, lkv, "nn", name_, " attn_mask");
    if (m.bool_attn_mask.data() != nullptr) check_shape(m.bool_attn_mask, lq, lkv, "nn", name_, " attn_mask");
    if (m.key_padding_mask.data() != nullptr) {
      check_shape(m.key_padding_mask, batch, lkv, "nn", name_, " key_padding_mask");
    }
  }

  // What the gates decide before any projection: gate values, the query rows each
  // (sequence, head) attends for, and the heads at least one row needs.
  struct HeadPlan {
    const float* g = nullptr;               // sigmoid gates [rows, gate_width()], or null
    float* o = nullptr;                     // head outputs [rows, inner], skipped pairs zero
    const std::uint32_t* active = nullptr;  // [N * H][lq] rows not skipped, ascending
    const std::size_t* count = nullptr;     // [N * H] their numbers
    const std::uint32_t* used = nullptr;    // heads with a row not skipped, ascending
    std::size_t num_used = 0;
    AttentionStats stats;
  };

  // Gates from the query (before attention, so skipped pairs cost nothing) and the plan.
  HeadPlan plan_heads(ConstMatrixView query, std::size_t batch, std::size_t lq,
                      Workspace& ws) const {
    const std::size_t h = cfg_.local_heads, d = head_dim(), inner = inner_dim();
    const std::size_t rows = lq * batch;
    const std::size_t gw = gate_width();
    HeadPlan plan;
    float* g = nullptr;
    if (gate_) {
      g = ws.allocate<float>(rows * gw);
      linear_forward(*gate_, query, MatrixView(g, rows, gw), ws);
      simd::sigmoid_f32(g, g, rows * gw);
    }
    const bool head_gate = cfg_.gate == GatePosition::Head;
    const bool elementwise = cfg_.head_gate == HeadGate::Elementwise;

    // Active query rows per (sequence, head); skipped pairs get a zero output here.
    float* o = ws.allocate<float>(rows * inner);
    std::uint32_t* active = ws.allocate<std::uint32_t>(batch * h * (lq == 0 ? 1 : lq));
    std::size_t* count = ws.allocate<std::size_t>(batch * h);
    std::uint32_t* used = ws.allocate<std::uint32_t>(h == 0 ? 1 : h);
    AttentionStats& stats = plan.stats;
    stats.pairs = rows * h;
    // Skipped pairs' outputs are zero; attend() writes the others (all of them when nothing
    // is gated). The lists below are built without branches: a decoding step's open heads are
    // close to random, and a mispredicted branch per head cost more than the work.
    const bool gated = head_gate && cfg_.tau > 0.0f;
    if (gated) std::fill(o, o + rows * inner, 0.0f);
    for (std::size_t n = 0; n < batch; ++n) {
      for (std::size_t hd = 0; hd < h; ++hd) {
        std::uint32_t* list = active + (n * h + hd) * lq;
        std::size_t c = 0;
        for (std::size_t i = 0; i < lq; ++i) {
          const std::size_t row = layout_row(layout(), n, i, lq, batch);
          bool keep = true;
          if (gated) {
            const float gv = elementwise ? simd::max_f32(g + row * gw + hd * d, d) : g[row * gw + hd];
            keep = !(gv < cfg_.tau);  // NaN gates are kept, so NaN propagates
          }
          list[c] = static_cast<std::uint32_t>(i);
          c += keep ? 1 : 0;
        }
        count[n * h + hd] = c;
        stats.skipped += lq - c;
      }
    }
    for (std::size_t hd = 0; hd < h; ++hd) {
      std::size_t any = 0;
      for (std::size_t n = 0; n < batch; ++n) any |= count[n * h + hd];
      used[plan.num_used] = static_cast<std::uint32_t>(hd);
      plan.num_used += any != 0 ? 1 : 0;
    }
    plan.g = g;
    plan.o = o;
    plan.active = active;
    plan.count = count;
    plan.used = used;
    return plan;
  }

  // yp [rows, inner] = proj(x), computed for the heads the plan uses: a head no query of the
  // call attends with is never projected. The others stay defined, never read: zero, or
  // projected where they share a computed panel with a used head (up to 4 rows). For the
  // query always; for keys and values only when nothing is cached (a later call may open
  // the head).
  void project_used_heads(const LinearT& proj, ConstMatrixView x, float* yp, const HeadPlan& plan,
                          Workspace& ws) const {
    const std::size_t h = cfg_.local_heads, d = head_dim(), inner = inner_dim(), rows = x.rows();
    const MatrixView y(yp, rows, inner);
    if (plan.num_used == h) {
      linear_forward(proj, x, y, ws);
      return;
    }
    // Unused heads stay defined (rotary positions rotate every head). A decoding step's few
    // rows are zeroed whole before the product, which writes the used heads' panels over
    // them: the per-head loop below takes a branch per head, mispredicted on a step's
    // near-random heads. Over more rows the pattern repeats row after row, so the loop's
    // branches predict, and it writes only the unused heads instead of every row twice.
    if (rows <= 4) {
      std::fill(yp, yp + rows * inner, 0.0f);
      linear_output_groups(proj, x, y, d, plan.used, plan.num_used, ws);
      return;
    }
    linear_output_groups(proj, x, y, d, plan.used, plan.num_used, ws);
    for (std::size_t r = 0, u = 0; r < rows; ++r, u = 0) {
      for (std::size_t hd = 0; hd < h; ++hd) {
        if (u < plan.num_used && plan.used[u] == hd) {
          ++u;
        } else {
          std::fill(yp + r * inner + hd * d, yp + r * inner + hd * d + d, 0.0f);
        }
      }
    }
  }

  // Attention per (sequence, head, block of rows), head gating, out_proj (reading only the
  // heads some row uses) and the output gate. qp is the projected query [lq * N, E] in
  // layout order.
  AttentionStats attend(const HeadPlan& plan, const float* qp, std::size_t batch, std::size_t lq,
                        const KeySource& src, const AttentionMasks& masks, MatrixView out,
                        Workspace& ws) const {
    const std::size_t e = cfg_.embed_dim, h = cfg_.local_heads, d = head_dim(), inner = inner_dim();
    const std::size_t rows = lq * batch;
    const std::size_t gw = gate_width();
    const float* g = plan.g;
    float* o = plan.o;
    const std::uint32_t* active = plan.active;
    const std::size_t* count = plan.count;
    const bool head_gate = cfg_.gate == GatePosition::Head;
    const bool elementwise = cfg_.head_gate == HeadGate::Elementwise;

    // Work units: (sequence, head) pairs, each cut into enough row chunks to feed every thread
    // the work asks for (estimated as if every row saw every key: causal rows see half). A decoding
    // step's few open heads (thousands of multiply-adds) stay on one thread: waking a second costs
    // more than it saves, and made two threads slower than one.
    // The (sequence, head) pairs some row attends with, listed without a branch per pair (a
    // decoding step's open heads are close to random). Work splits over these pairs only, so
    // a gated prefill with few open heads cuts their rows into more chunks.
    const std::size_t all_heads = batch * h;
    std::uint32_t* open = ws.allocate<std::uint32_t>(all_heads);
    std::size_t heads_total = 0;
    std::size_t pairs = 0;  // (row, head) pairs attended
    for (std::size_t nh = 0; nh < all_heads; ++nh) {
      open[heads_total] = static_cast<std::uint32_t>(nh);
      heads_total += count[nh] != 0 ? 1 : 0;
      pairs += count[nh];
    }
    const std::size_t macs = pairs * std::max<std::size_t>(1, src.lkv) * d * 2;
    const std::size_t threads = std::max<std::size_t>(
        1, std::min(static_cast<std::size_t>(num_threads()), macs / parallel_min_macs_f32));
    std::size_t chunks = heads_total == 0 || heads_total >= 2 * threads
                             ? 1
                             : (2 * threads + heads_total - 1) / heads_total;
    chunks = std::max<std::size_t>(1, std::min(chunks, (lq + 15) / 16));
    const std::size_t units = heads_total * chunks;
    const std::size_t parts = std::max<std::size_t>(1, std::min(threads, units));
    const bool int8 = src.cache != nullptr && src.cache->dtype() != KVDType::F32;
    const std::size_t scratch_floats = (simd::attention_scratch_floats(d) + 15) / 16 * 16;
    float* scratch = ws.allocate<float>(parts * scratch_floats);
    const std::size_t q_stride = cfg_.batch_first ? inner : batch * inner;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));

    parallel_for(0, parts, 1, [&](std::size_t plo, std::size_t phi) {
      for (std::size_t p = plo; p < phi; ++p) {
        float* sp = scratch + p * scratch_floats;
        const std::size_t u0 = units * p / parts, u1 = units * (p + 1) / parts;
        // Unit u is chunk u % chunks of open pair u / chunks, kept as counters rather than two
        // divisions per unit.
        std::size_t next_pair = u0 / chunks, next_chunk = u0 % chunks;
        for (std::size_t u = u0; u < u1; ++u) {
          const std::size_t nh = open[next_pair], chunk = next_chunk;
          if (++next_chunk == chunks) {
            next_chunk = 0;
            ++next_pair;
          }
          const std::size_t cnt = count[nh];
          const std::size_t s0 = chunks == 1 ? 0 : cnt * chunk / chunks;
          const std::size_t s1 = chunks == 1 ? cnt : cnt * (chunk + 1) / chunks;
          if (s0 == s1) continue;
          const std::size_t n = nh / h, hd = nh % h;
          const std::uint32_t* list = active + nh * lq;
          const std::size_t base = layout_row(layout(), n, 0, lq, batch) * inner + hd * d;
          simd::AttentionArgs a;
          a.q = qp + base;
          a.q_stride = q_stride;
          a.lq = lq;
          a.d = d;
          a.scale = scale;
          a.out = o + base;
          a.out_stride = q_stride;
          a.rows = list + s0;
          a.num_rows = s1 - s0;
          a.causal = masks.causal;
          if (masks.attn_mask.data() != nullptr) {
            a.mask = masks.attn_mask.data();
            a.mask_stride = masks.attn_mask.stride();
          }
          if (masks.bool_attn_mask.data() != nullptr) {
            a.bool_mask = masks.bool_attn_mask.data();
            a.bool_mask_stride = masks.bool_attn_mask.stride();
          }
          if (masks.key_padding_mask.data() != nullptr) a.key_padding = masks.key_padding_mask.row(n);
          if (src.cache != nullptr) {
            src.cache->bind(n, hd, a);
          } else {
            a.kt = src.kt + nh * d * src.stride;
            a.vt = src.vt + nh * d * src.stride;
            a.kv_stride = src.stride;
            a.lkv = src.lkv;
            a.kv_padded = true;  // rows of attention_kv_stride(lkv)
          }
          if (int8) {
            simd::attention_s8kv_f32(a, sp);
          } else {
            simd::attention_f32(a, sp);
          }
          if (head_gate) {
            for (std::size_t s = s0; s < s1; ++s) {
              const std::size_t row = layout_row(layout(), n, list[s], lq, batch);
              float* orow = o + row * inner + hd * d;
              const float* grow = g + row * gw;
              if (elementwise) {
                for (std::size_t c = 0; c < d; ++c) orow[c] *= grow[hd * d + c];
              } else {
                for (std::size_t c = 0; c < d; ++c) orow[c] *= grow[hd];
              }
            }
          }
        }
      }
    });

    if (plan.num_used == h) {
      linear_forward(out_, ConstMatrixView(o, rows, inner), out, ws);
    } else {
      linear_input_groups(out_, ConstMatrixView(o, rows, inner), out, d, plan.used, plan.num_used,
                          ws);
    }
    if (cfg_.gate == GatePosition::Output) {
      for (std::size_t r = 0; r < rows; ++r) {
        float* yr = out.row(r);
        const float* gr = g + r * e;
        for (std::size_t c = 0; c < e; ++c) yr[c] *= gr[c];
      }
    }
    return plan.stats;
  }

  GatedAttentionConfig cfg_;
  std::string name_;
  LinearT q_, k_, v_, out_;
  std::optional<LinearT> gate_;
};

/// Builds a LinearT from a float weight `[out, in]`, a bias (possibly empty) and a name.
/// The default works for formats constructible as `Format(weight, bias, name)`
/// (DenseF32, quant::DenseI8); pass a lambda for group-sparse formats (they need a mask).
template <class LinearT>
struct MakeLinear {
  LinearT operator()(ConstMatrixView weight, std::vector<float> bias, std::string name) const {
    using Format = typename LinearT::format_type;
    return LinearT(Format(weight, std::move(bias), std::move(name)));
  }
};

/// Loads a GatedAttention from a PyTorch state_dict saved as safetensors (float32), with
/// these names (after `prefix`), those of examples/python/attention_reference.py:
///   `attention.in_proj_weight` `[3E, E]`, `attention.in_proj_bias` `[3E]` (optional),
///   `attention.out_proj.weight` `[E, E]`, `attention.out_proj.bias` `[E]` (optional),
///   `gate.0.weight` `[E, E]` (or `[H, E]` for a head-wise head gate), `gate.0.bias`
///   (optional; absent for GatePosition::None).
/// The layer holds every head (config.local_heads is ignored; parallel::ModelShard cuts
/// head subsets).
/// @throws FormatError for a missing tensor or a dtype other than F32; ShapeError naming the
/// tensor with both shapes when a size does not match config.embed_dim (or H); ConfigError
/// as resolve_config().
template <class LinearT = Linear<DenseF32>, class Make = MakeLinear<LinearT>>
GatedAttention<LinearT> load_gated_attention(const io::SafetensorsFile& file, GatedAttentionConfig cfg,
                                             const std::string& prefix = "", Make make = {}) {
  cfg.local_heads = 0;
  cfg = resolve_config(cfg, prefix + "attention");
  const std::size_t e = cfg.embed_dim;
  auto matrix = [&](const std::string& tname, std::size_t rows, std::size_t cols) {
    auto t = file.load<float>(prefix + tname);
    const auto& shape = file.info(prefix + tname).shape;
    if (shape.size() != 2 || t.rows() != rows || t.cols() != cols) {
      ::dynasparse::detail::fail<ShapeError>("nn", "weight shape mismatch", shape_string(rows, cols),
                               shape.size() == 2 ? shape_string(t.rows(), t.cols())
                                                 : std::to_string(shape.size()) + "-d tensor",
                               prefix + tname);
    }
    return t;
  };
  auto vector = [&](const std::string& tname, std::size_t n) -> std::vector<float> {
    if (!file.contains(prefix + tname)) return {};
    auto t = file.load<float>(prefix + tname);
    if (t.size() != n || file.info(prefix + tname).shape.size() != 1) {
      ::dynasparse::detail::fail<ShapeError>("nn", "bias shape mismatch", "[" + std::to_string(n) + "]",
                               "[" + std::to_string(t.size()) + "]", prefix + tname);
    }
    return std::vector<float>(t.data(), t.data() + n);
  };
  const auto in_w = matrix("attention.in_proj_weight", 3 * e, e);
  std::vector<float> in_b = vector("attention.in_proj_bias", 3 * e);
  auto chunk = [&](std::size_t i) {
    return in_b.empty() ? std::vector<float>{} : std::vector<float>(in_b.begin() + i * e, in_b.begin() + (i + 1) * e);
  };
  const std::string base = prefix + "attention";
  LinearT q = make(in_w.view().row_range(0, e), chunk(0), base + ".q_proj");
  LinearT k = make(in_w.view().row_range(e, e), chunk(1), base + ".k_proj");
  LinearT v = make(in_w.view().row_range(2 * e, e), chunk(2), base + ".v_proj");
  const auto out_w = matrix("attention.out_proj.weight", e, e);
  LinearT o = make(out_w.view(), vector("attention.out_proj.bias", e), base + ".out_proj");
  std::optional<LinearT> gate;
  if (cfg.gate != GatePosition::None) {
    const std::size_t gw =
        cfg.gate == GatePosition::Head && cfg.head_gate == HeadGate::Headwise ? cfg.num_heads : e;
    const auto g_w = matrix("gate.0.weight", gw, e);
    gate.emplace(make(g_w.view(), vector("gate.0.bias", gw), prefix + "gate.0"));
  }
  return GatedAttention<LinearT>(cfg, std::move(q), std::move(k), std::move(v), std::move(o), std::move(gate),
                                 base);
}

}  // namespace nn
DYNASPARSE_NAMESPACE_END
