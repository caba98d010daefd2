// SPDX-License-Identifier: Apache-2.0
// Attention of one head: a streaming (online-softmax) kernel over float or INT8 K/V, and a
// naive kernel that materializes the scores (the benchmark baseline and test oracle).
//
// Contract (all kernels): see simd::AttentionArgs for operands, layout and masking. Memory:
// the streaming kernels use attention_scratch_floats<Arch>(d) floats of caller scratch,
// independent of the sequence lengths; the naive kernel uses row_count() * lkv + d. Accuracy:
// the streaming kernel matches its scalar twin and the naive kernel within a few ulp times
// the magnitude of the terms (tests/simd/attention_test.cpp states the budget): vector
// dot products sum in another order, detail::vexp_nonpositive is within 1 ulp of std::exp
// (flushing below e^-87), and the online rescaling by exp(m_old - m_new) rounds once more
// per block whose maximum grows.
// No kernel allocates or throws.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "dynasparse/simd/arch.hpp"
#include "dynasparse/simd/attention_args.hpp"
#include "dynasparse/simd/detail/scalar/attention.hpp"
#include "dynasparse/simd/quantize.hpp"
#include "dynasparse/simd/reduce.hpp"
#include "dynasparse/simd/softmax.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace simd {

namespace detail {

/// Keys per block of the streaming loop. Larger blocks spread the per-block work (max,
/// rescale, the exp of the running max) over more keys; 256 keys of K and V at head_dim 64
/// are 128 KiB, which stays in L2 while a tile of query rows passes over them. Measured with
/// BM_Attention/streaming (E512, L 512 and 2048, AVX-512): 64 keys 1.2-1.4x slower than
/// 128, 256 1.1-1.3x faster than 128, 512 another 2-5%.
inline constexpr std::size_t attention_block_keys = 256;

/// Query rows per tile: the rows that share one pass over a key block. Each row keeps d
/// vector accumulators, so the tile is sized to keep that state near 32 KiB.
template <class A>
constexpr std::size_t attention_tile_rows(std::size_t d) noexcept {
  const std::size_t per_row = (d == 0 ? 1 : d) * lanes_f32<A>();
  const std::size_t t = 32768 / per_row;
  return t < 1 ? 1 : (t > 32 ? 32 : t);
}

/// s[0, n) = scale * q . k_j for keys j (columns of kp, row stride ks), vectorized over j.
template <class A>
inline void attention_scores(const float* qs, std::size_t d, const float* kp, std::size_t ks,
                             std::size_t n, float* s) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
  std::size_t j = 0;
  // Four independent accumulators hide the FMA latency at small d.
  for (; j + 4 * w <= n; j += 4 * w) {
    B s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
    for (std::size_t c = 0; c < d; ++c) {
      const B qc(qs[c]);
      const float* k = kp + c * ks + j;
      s0 = xsimd::fma(qc, B::load_unaligned(k), s0);
      s1 = xsimd::fma(qc, B::load_unaligned(k + w), s1);
      s2 = xsimd::fma(qc, B::load_unaligned(k + 2 * w), s2);
      s3 = xsimd::fma(qc, B::load_unaligned(k + 3 * w), s3);
    }
    s0.store_unaligned(s + j);
    s1.store_unaligned(s + j + w);
    s2.store_unaligned(s + j + 2 * w);
    s3.store_unaligned(s + j + 3 * w);
  }
  for (; j + w <= n; j += w) {
    B s0(0.0f);
    for (std::size_t c = 0; c < d; ++c) s0 = xsimd::fma(B(qs[c]), B::load_unaligned(kp + c * ks + j), s0);
    s0.store_unaligned(s + j);
  }
  for (; j < n; ++j) {
    float t = 0.0f;
    for (std::size_t c = 0; c < d; ++c) t += qs[c] * kp[c * ks + j];
    s[j] = t;
  }
}

/// k(c, j) = k8[c * stride + j] * scale[j] for a block of n keys, into a [d, block] buffer;
/// with `panel` (keys per panel, 0: none) k8 holds panels of `panel` keys, each [d, panel]
/// in one stretch (stride is then `panel`).
template <class A>
inline void dequantize_kv_block(const std::int8_t* k8, std::size_t stride, std::size_t panel,
                                const float* scale, std::size_t n, std::size_t d, float* kf,
                                std::size_t kf_stride) noexcept {
  if (panel == 0) {
    for (std::size_t c = 0; c < d; ++c)
      dequantize_s8f32_each<A>(k8 + c * stride, scale, kf + c * kf_stride, n);
    return;
  }
  for (std::size_t j0 = 0; j0 < n; j0 += panel) {
    const std::size_t m = std::min(panel, n - j0);
    const std::int8_t* p = k8 + j0 * d;
    for (std::size_t c = 0; c < d; ++c)
      dequantize_s8f32_each<A>(p + c * panel, scale + j0, kf + c * kf_stride + j0, m);
  }
}

/// 0, 1, 2, ... for lane masks (as many as the widest float vector has lanes).
alignas(64) inline constexpr float attention_lane_index[16] = {0, 1, 2,  3,  4,  5,  6,  7,
                                                               8, 9, 10, 11, 12, 13, 14, 15};

/// Bit offset of lane i's 4-bit code in the 32-bit word of its eight keys.
alignas(64) inline constexpr std::int32_t attention_code_shift[16] = {0, 4, 8, 12, 16, 20, 24, 28,
                                                                      0, 4, 8, 12, 16, 20, 24, 28};
/// Which 32-bit word of codes lane i reads (the second one for lanes 8-15).
alignas(64) inline constexpr std::int32_t attention_code_word[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                                                     1, 1, 1, 1, 1, 1, 1, 1};

/// The little-endian 32-bit word of the first `bytes` (at most 4) bytes at p.
inline std::int32_t load_code_word(const std::uint8_t* p, std::size_t bytes) noexcept {
  std::uint32_t v = 0;
  for (std::size_t b = 0; b < bytes; ++b) v |= std::uint32_t{p[b]} << (8 * b);
  return static_cast<std::int32_t>(v);
}

/// out[j] = scale[j] * kv_code_step(code of key j) for keys [0, n) of a block that starts at
/// an even key (codes at `code`, two per byte), and up to n rounded up to the vector width
/// when `padded` (those scales and codes must be readable). Bit-exact with
/// AttentionArgs::scale_at: the same step, then one rounded product.
template <class A>
inline void expand_kv_scales(const float* scale, const std::uint8_t* code, std::size_t n,
                             bool padded, float* out) noexcept {
  using B = xsimd::batch<float, A>;
  using I = xsimd::batch<std::int32_t, A>;
  constexpr std::size_t w = B::size;
  static_assert(w % 2 == 0 && w <= 16, "a vector covers whole bytes of codes");
  const std::size_t end = padded ? (n + w - 1) / w * w : n;
  const std::size_t vend = end / w * w;
#if DYNASPARSE_HAS_AVX512BW
  if constexpr (std::is_base_of_v<xsimd::avx512bw, A>) {
    // The 16 steps are one vector: vpermps picks each lane's by the low four bits of its
    // shifted word, which are its code. xsimd's variable shift of int32 batches ran lane
    // by lane here (about 1 ns a key, 44% of BM_AttentionDecode i8compactkv/ctx1024).
    const __m512 steps = _mm512_load_ps(kv_code_steps);
    const __m512i shift = _mm512_load_si512(attention_code_shift);
    const __m512i which = _mm512_load_si512(attention_code_word);
    for (std::size_t j = 0; j < vend; j += 16) {
      // Lanes 0-7 take the first little-endian word of the eight bytes, 8-15 the second.
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(code + j / 2));
      const __m512i words = _mm512_permutexvar_epi32(which, _mm512_castsi128_si512(bytes));
      const __m512 step = _mm512_permutexvar_ps(_mm512_srlv_epi32(words, shift), steps);
      _mm512_storeu_ps(out + j, _mm512_mul_ps(step, _mm512_loadu_ps(scale + j)));
    }
    for (std::size_t t = vend; t < end; ++t) out[t] = AttentionArgs::scale_at(scale, code, t);
    return;
  }
#endif
#if DYNASPARSE_HAS_AVX2
  if constexpr (std::is_base_of_v<xsimd::avx2, A> && !std::is_base_of_v<xsimd::avx512f, A>) {
    // The 16 steps as two 8-entry tables: vpermps picks by the code's low three bits,
    // its fourth bit (shifted into the sign) picks the table.
    const __m256 lo = _mm256_load_ps(kv_code_steps), hi = _mm256_load_ps(kv_code_steps + 8);
    const __m256i shift = _mm256_load_si256(reinterpret_cast<const __m256i*>(attention_code_shift));
    for (std::size_t j = 0; j < vend; j += 8) {
      std::int32_t word;  // x86 is little-endian: key j's code is the low nibble
      std::memcpy(&word, code + j / 2, 4);
      const __m256i c = _mm256_srlv_epi32(_mm256_set1_epi32(word), shift);
      const __m256 step =
          _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, c), _mm256_permutevar8x32_ps(hi, c),
                           _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)));
      _mm256_storeu_ps(out + j, _mm256_mul_ps(step, _mm256_loadu_ps(scale + j)));
    }
    for (std::size_t t = vend; t < end; ++t) out[t] = AttentionArgs::scale_at(scale, code, t);
    return;
  }
#endif
  if constexpr (w > 8) {
    // Only AVX-512BW has 16 lanes here, and it took its own path above; another wide arch
    // would otherwise leave the scales unwritten.
    static_assert(std::is_base_of_v<xsimd::avx512bw, A>,
                  "a vector of more than 8 lanes needs its own code expansion");
  } else {
    const I shift = I::load_aligned(attention_code_shift);
    for (std::size_t j = 0; j < vend; j += w) {
      const std::uint8_t* p = code + j / 2;
      I c;
      if constexpr (w == 4) {
        // Four lanes from two bytes directly: SSE2 has no per-lane shift (xsimd emulates
        // it lane by lane, 15x slower here).
        c = I({p[0] & 15, p[0] >> 4, p[1] & 15, p[1] >> 4});
      } else {
        c = (I(load_code_word(p, 4)) >> shift) & I(15);
      }
      // kv_code_steps' bits: exponent 127 - ceil(c / 2), and for odd c the mantissa of
      // 2^(1/2) (0.70710678f = 2^-1 * 1.41421354f); code 15 is a quiet NaN.
      I bits = ((I(127) - ((c + I(1)) >> 1)) << 23) | ((I(0) - (c & I(1))) & I(0x3504F3));
      // Code 15 (kv_code_nonfinite) gives a quiet NaN, by a mask: (c + 1) >> 4 is 1 for
      // code 15 only.
      static_assert(kv_code_nonfinite == 15, "the mask below picks code 15");
      const I nonfinite = I(0) - ((c + I(1)) >> 4);
      bits = bits ^ ((bits ^ I(0x7FC00000)) & nonfinite);
      (xsimd::bitwise_cast<B>(bits) * B::load_unaligned(scale + j)).store_unaligned(out + j);
    }
  }
  for (std::size_t t = vend; t < end; ++t) out[t] = AttentionArgs::scale_at(scale, code, t);
}

/// Query rows whose scores and value sums share each load of K and V (register blocking).
inline constexpr std::size_t attention_group_rows = 4;

/// Offset of key j from key 0 of a kernel block: j in rows (panel_stride 0), else (j / 16) *
/// panel_stride + j % 16 (float K panels and INT8 panels, both 16 keys wide).
inline std::size_t panel_offset(std::size_t j, std::size_t panel_stride) noexcept {
  static_assert(attention_kv_panel_s8 == attention_k_panel, "one panel addressing");
  constexpr std::size_t P = attention_k_panel;
  return panel_stride == 0 ? j : j / P * panel_stride + j % P;
}

/// Float K of one kernel block: element (c, j) at p + c * row_stride + j in the plain or
/// blocked layout (panel_stride 0), at p + (j / 16) * panel_stride + c * 16 + j % 16 in
/// panels (AttentionArgs::k_panels; row_stride 16).
struct KeyRows {
  static constexpr bool int8 = false;
  const float* p;
  std::size_t row_stride;
  std::size_t panel_stride;
  /// Row 0 of key j (a multiple of the vector width, so a vector never crosses a panel).
  const float* key(std::size_t j) const noexcept { return p + panel_offset(j, panel_stride); }
  /// Whether one row's scores should load key vector after key vector (see
  /// attention_scores_step).
  bool in_address_order() const noexcept { return panel_stride != 0; }
};

/// INT8 K of one kernel block, read as it is stored: k(c, j) = key(j)[c * row_stride] *
/// scale[j], rows or panels as KeyRows. The scores sum q . k8 in float and apply the key's
/// scale once.
struct KeyRowsS8 {
  static constexpr bool int8 = true;
  const std::int8_t* p;
  std::size_t row_stride;
  const float* scale;
  std::size_t panel_stride;
  const std::int8_t* key(std::size_t j) const noexcept { return p + panel_offset(j, panel_stride); }
  bool in_address_order() const noexcept { return panel_stride != 0; }
};

/// Float V of one kernel block: v(c, j) = p[c * row_stride + at(j)], at(j) = j.
struct ValueRows {
  static constexpr bool int8 = false;
  const float* p;
  std::size_t row_stride;
  const float* scale;  // unused
  static constexpr std::size_t at(std::size_t j) noexcept { return j; }
};

/// INT8 V of one kernel block: v(c, j) = p[c * row_stride + at(j)] * scale[j], at(j) = j in
/// rows, (j / 16) * panel_stride + j % 16 in panels (row_stride 16); the scale is folded
/// into the softmax weight of key j once, not applied per element.
struct ValueRowsS8 {
  static constexpr bool int8 = true;
  const std::int8_t* p;
  std::size_t row_stride;
  const float* scale;
  std::size_t panel_stride;
  std::size_t at(std::size_t j) const noexcept { return panel_offset(j, panel_stride); }
};

/// One float vector of keys or values from p.
template <class A>
inline xsimd::batch<float, A> load_keys(const float* p) noexcept {
  return xsimd::batch<float, A>::load_unaligned(p);
}
template <class A>
inline xsimd::batch<float, A> load_keys(const std::int8_t* p) noexcept {
  return load_s8_f32<A>(p);
}

/// Scores of R query rows against J vectors of keys from j: s[r][j..] = qs[r] . k_j. The
/// R x J accumulators are independent FMA chains of length d.
template <class A, std::size_t R, std::size_t J, class KR>
inline void attention_scores_step(const float* const* qs, std::size_t d, const KR& kr,
                                  std::size_t j, float* const* s) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
  B acc[R][J];
  DYNASPARSE_UNROLL(32)
  for (std::size_t r = 0; r < R; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t v = 0; v < J; ++v) acc[r][v] = B(0.0f);
  }
  decltype(kr.key(0)) kv[J];
  DYNASPARSE_UNROLL(8)
  for (std::size_t v = 0; v < J; ++v) kv[v] = kr.key(j + v * w);
  const std::size_t ks = kr.row_stride;
  if (R == 1 && kr.in_address_order()) {
    // Paneled K is a long cache read from memory: key vector by key vector keeps the loads
    // in address order. Interleaving the loads of two panels cut the bandwidth prefetchers
    // gave a decoding step at 16384 tokens by a third; for K in cache the interleaved
    // order below is a quarter faster (its chains overlap better).
    DYNASPARSE_UNROLL(8)
    for (std::size_t v = 0; v < J; ++v) {
      for (std::size_t c = 0; c < d; ++c)
        acc[0][v] = xsimd::fma(B(qs[0][c]), load_keys<A>(kv[v] + c * ks), acc[0][v]);
    }
  } else {
    for (std::size_t c = 0; c < d; ++c) {
      B k[J];
      DYNASPARSE_UNROLL(8)
      for (std::size_t v = 0; v < J; ++v) {
        B kc = load_keys<A>(kv[v] + c * ks);
        keep_in_register(kc);
        k[v] = kc;
      }
      DYNASPARSE_UNROLL(4)
      for (std::size_t r = 0; r < R; ++r) {
        const B qc(qs[r][c]);
        DYNASPARSE_UNROLL(8)
        for (std::size_t v = 0; v < J; ++v) acc[r][v] = xsimd::fma(qc, k[v], acc[r][v]);
      }
    }
  }
  if constexpr (KR::int8) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t v = 0; v < J; ++v) {
      const B sc = B::load_unaligned(kr.scale + j + v * w);
      DYNASPARSE_UNROLL(4)
      for (std::size_t r = 0; r < R; ++r) acc[r][v] *= sc;
    }
  }
  DYNASPARSE_UNROLL(4)
  for (std::size_t r = 0; r < R; ++r) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t v = 0; v < J; ++v) acc[r][v].store_unaligned(s[r] + j + v * w);
  }
}

/// Scores of R query rows against keys [0, n) of a block: s[r][j] = qs[r] . k_j. Each K
/// vector loaded feeds R rows, which is what makes head_dim 8 fast; fewer rows take more
/// key vectors per step so that about eight FMA chains hide the FMA latency.
template <class A, std::size_t R, class KR>
inline void attention_scores_group(const float* const* qs, std::size_t d, const KR& kr,
                                   std::size_t n, float* const* s) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
  constexpr std::size_t J = R >= 4 ? 2 : 8 / R;
  std::size_t j = 0;
  for (; j + J * w <= n; j += J * w) attention_scores_step<A, R, J>(qs, d, kr, j, s);
  if constexpr (J >= 8) {
    if (j + 4 * w <= n) {
      attention_scores_step<A, R, 4>(qs, d, kr, j, s);
      j += 4 * w;
    }
  }
  if constexpr (J >= 4) {
    if (j + 2 * w <= n) {
      attention_scores_step<A, R, 2>(qs, d, kr, j, s);
      j += 2 * w;
    }
  }
  if (j + w <= n) {
    attention_scores_step<A, R, 1>(qs, d, kr, j, s);
    j += w;
  }
  for (; j < n; ++j) {
    DYNASPARSE_UNROLL(4)
    for (std::size_t r = 0; r < R; ++r) {
      float t = 0.0f;
      const auto* k = kr.key(j);
      for (std::size_t c = 0; c < d; ++c) t += qs[r][c] * static_cast<float>(k[c * kr.row_stride]);
      if constexpr (KR::int8) t *= kr.scale[j];
      s[r][j] = t;
    }
  }
}

/// acc(r, c') = acc(r, c') * alpha_r + sum_j p(r, j) v(c', j) for the C columns c' from c:
/// weights p in s[r][0, n), whole vectors up to nv; with vector_tail the vector at nv is
/// loaded whole and its lanes outside in_block zeroed, otherwise keys [nv, n) are added
/// one by one.
/// With `chains` (one row and one column only), the column is summed as four interleaved
/// chains of keys instead of one.
template <class A, std::size_t R, std::size_t C, class VR, class Mask>
inline void attention_values_step(const VR& vr, std::size_t c, std::size_t n, std::size_t nv,
                                  bool vector_tail, const Mask& in_block, const float* alpha,
                                  float* const* s, float* const* accs,
                                  bool chains = false) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
  decltype(vr.p) v[C];
  B av[R][C];
  DYNASPARSE_UNROLL(8)
  for (std::size_t k = 0; k < C; ++k) {
    v[k] = vr.p + (c + k) * vr.row_stride;
    DYNASPARSE_UNROLL(4)
    for (std::size_t r = 0; r < R; ++r)
      av[r][k] = B::load_aligned(accs[r] + (c + k) * w) * B(alpha[r]);
  }
  std::size_t j0 = 0;
  if constexpr (R == 1 && C == 1) {
    if (chains) {
      // One FMA chain per column is bound by the FMA's latency; four chains, still reading
      // the column in address order.
      B part[3] = {B(0.0f), B(0.0f), B(0.0f)};
      for (; j0 + 4 * w <= nv; j0 += 4 * w) {
        av[0][0] =
            xsimd::fma(B::load_unaligned(s[0] + j0), load_keys<A>(v[0] + vr.at(j0)), av[0][0]);
        DYNASPARSE_UNROLL(3)
        for (std::size_t u = 0; u < 3; ++u) {
          const std::size_t ju = j0 + (u + 1) * w;
          part[u] =
              xsimd::fma(B::load_unaligned(s[0] + ju), load_keys<A>(v[0] + vr.at(ju)), part[u]);
        }
      }
      av[0][0] += (part[0] + part[1]) + part[2];
    }
  }
  for (std::size_t j = j0; j < nv; j += w) {
    B p[R];
    DYNASPARSE_UNROLL(4)
    for (std::size_t r = 0; r < R; ++r) p[r] = B::load_unaligned(s[r] + j);
    const std::size_t vj = vr.at(j);
    DYNASPARSE_UNROLL(8)
    for (std::size_t k = 0; k < C; ++k) {
      B vv = load_keys<A>(v[k] + vj);
      keep_in_register(vv);
      DYNASPARSE_UNROLL(4)
      for (std::size_t r = 0; r < R; ++r) av[r][k] = xsimd::fma(p[r], vv, av[r][k]);
    }
  }
  if (vector_tail) {
    B p[R];
    DYNASPARSE_UNROLL(4)
    for (std::size_t r = 0; r < R; ++r) p[r] = B::load_unaligned(s[r] + nv);
    DYNASPARSE_UNROLL(8)
    for (std::size_t k = 0; k < C; ++k) {
      const B vv = xsimd::select(in_block, load_keys<A>(v[k] + vr.at(nv)), B(0.0f));
      DYNASPARSE_UNROLL(4)
      for (std::size_t r = 0; r < R; ++r) av[r][k] = xsimd::fma(p[r], vv, av[r][k]);
    }
  }
  DYNASPARSE_UNROLL(8)
  for (std::size_t k = 0; k < C; ++k) {
    DYNASPARSE_UNROLL(4)
    for (std::size_t r = 0; r < R; ++r) av[r][k].store_aligned(accs[r] + (c + k) * w);
  }
  // Reading a lane back right after the vector store stalls on store forwarding, so only
  // blocks with a tail pay for it.
  if (nv < n && !vector_tail) {
    DYNASPARSE_UNROLL(8)
    for (std::size_t k = 0; k < C; ++k) {
      DYNASPARSE_UNROLL(4)
      for (std::size_t r = 0; r < R; ++r) {
        float t = 0.0f;
        for (std::size_t j = nv; j < n; ++j) t += s[r][j] * static_cast<float>(v[k][vr.at(j)]);
        accs[r][(c + k) * w] += t;
      }
    }
  }
}

/// Folds one block into R rows' online-softmax state: masks, running max, exp, running sum,
/// then acc(r, c) = acc(r, c) * alpha_r + sum_j p(r, j) v(c, j) with V loads shared by rows.
/// With `padded`, K and V rows may be read up to the next multiple of the vector width past
/// the block (values there arbitrary): the block's last partial vector is then loaded whole,
/// its extra scores set to -inf and its extra values to zero, instead of a scalar tail.
template <class A, std::size_t R, class KR, class VR>
inline void attention_group(const AttentionArgs& a, const std::size_t* rows, std::size_t j0,
                            std::size_t nb, const KR& kr, const VR& vr, bool padded,
                            float* const* accs, float* const* ms, float* const* ls, float* const* s,
                            float* const* qs) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  const std::size_t d = a.d;
  std::size_t nr[R];
  std::size_t n = 0;
  for (std::size_t r = 0; r < R; ++r) {
    const std::size_t end = a.key_end(rows[r]);
    nr[r] = end <= j0 ? 0 : std::min(nb, end - j0);
    n = std::max(n, nr[r]);
    const float* q = a.q + rows[r] * a.q_stride;
    for (std::size_t c = 0; c < d; ++c) qs[r][c] = q[c] * a.scale;
  }
  if (n == 0) return;
  // np: keys whose scores are computed and exponentiated, n rounded up to whole vectors
  // when the buffers allow it.
  const std::size_t np = padded ? (n + w - 1) / w * w : n;
  attention_scores_group<A, R>(qs, d, kr, np, s);

  float alpha[R];
  for (std::size_t r = 0; r < R; ++r) {
    float* sr = s[r];
    // Keys past this row's causal end are assigned -inf (not added), so whatever they hold
    // does not reach the row.
    std::fill(sr + nr[r], sr + np, ninf);
    scalar::add_attention_masks(a, rows[r], j0, nr[r], sr);
    float& m = *ms[r];
    const float mb = max_f32<A>(sr, np);  // NaN if any score is NaN
    const float m_new = (mb != mb || m != m) ? std::numeric_limits<float>::quiet_NaN() : (mb > m ? mb : m);
    if (m_new == ninf) {  // nothing admissible yet: contribute nothing
      std::fill(sr, sr + np, 0.0f);
      alpha[r] = 1.0f;
      continue;
    }
    alpha[r] = scalar::exp(m - m_new);
    const B vm(m_new);
    const std::size_t nv = np - np % w;
    B sum(0.0f);
    for (std::size_t j = 0; j < nv; j += w) {
      const B e = vexp_nonpositive<A>(B::load_unaligned(sr + j) - vm);
      e.store_unaligned(sr + j);
      sum += e;
    }
    float tail = 0.0f;
    for (std::size_t j = nv; j < np; ++j) {
      sr[j] = scalar::exp(sr[j] - m_new);
      tail += sr[j];
    }
    *ls[r] = *ls[r] * alpha[r] + (xsimd::hadd(sum) + tail);
    m = m_new;
  }

  // acc(r, c) holds w partial sums per output element; they are added up once per row at
  // the end instead of once per block.
  const std::size_t nv = n - n % w;
  // Lanes of the last partial vector that hold keys; the others may hold anything, NaN
  // included, so they are zeroed rather than multiplied by a zero weight.
  const auto in_block = B::load_aligned(attention_lane_index) < B(static_cast<float>(n - nv));
  const bool vector_tail = padded && nv < n;
  if constexpr (VR::int8) {
    // p(r, j) * v_scale(j); the scales past n may hold anything.
    for (std::size_t r = 0; r < R; ++r) {
      for (std::size_t j = 0; j < nv; j += w) {
        (B::load_unaligned(s[r] + j) * B::load_unaligned(vr.scale + j)).store_unaligned(s[r] + j);
      }
      if (vector_tail) {
        const B p = B::load_unaligned(s[r] + nv) * B::load_unaligned(vr.scale + nv);
        xsimd::select(in_block, p, B(0.0f)).store_unaligned(s[r] + nv);
      } else {
        for (std::size_t j = nv; j < n; ++j) s[r][j] *= vr.scale[j];
      }
    }
  }
  // Columns of V per pass: R x C accumulators stay in registers while the block's
  // weights and values stream past, so each loaded weight vector feeds C columns and each
  // value vector R rows. One row (decoding) reads V column after column, in address order:
  // a long cache comes from memory, and reading four columns at once took a decoding step
  // at 16384 tokens from 3.7-4.1 to 6.3 ms. A call with a single query (decoding) sums
  // each column as four chains instead (at context 1024, head_dim 8, the step took 1.4x as
  // long with one). Only there: elsewhere a row must get the same bits whether it falls in
  // a group of R rows or is left alone (by head skipping, say).
  constexpr std::size_t C = R == 1 ? 1 : (vector_registers<A>() >= 32 ? 4 : 2);
  const bool chains = R == 1 && a.lq == 1;
  std::size_t c = 0;
  for (; c + C <= d; c += C)
    attention_values_step<A, R, C>(vr, c, n, nv, vector_tail, in_block, alpha, s, accs, chains);
  for (; c < d; ++c)
    attention_values_step<A, R, 1>(vr, c, n, nv, vector_tail, in_block, alpha, s, accs, chains);
}

/// The one query row of a decoding step (lq 1) over float (or INT8) K and V, at head
/// dimension D <= 8, kv_padded: the online softmax of attention_stream with all D value
/// columns summed in one pass over a block's weights, D accumulators in registers, where
/// attention_stream reads the weights back once per column, in a call per column (a
/// 160-key head at D 8 cost about 3 ns a key on the Zen 3).
///
/// Int8: K and V as stored (kt_s8, vt_s8, rows kv_stride apart), each key's K scale applied
/// to its score and its V scale folded into its weight, as attention_group does; compact
/// scales are expanded per block into ksc and vsc (attention_block_keys floats each). A
/// 160-key head at D 8 reads 3.8 instead of 10 KB (per-head scales). On the Zen 5, a
/// decoding layer over 1024 INT8 keys (BM_AttentionDecode i8kv, head_dim 8) ran at 1.14x
/// the float cache's speed through attention_group and 1.23x through this row.
template <class A, std::size_t D, bool Int8 = false>
inline void attention_decode_row(const AttentionArgs& a, float* s, float* ksc = nullptr,
                                 float* vsc = nullptr) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
  constexpr std::size_t bk = attention_block_keys;
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  const std::size_t i = a.row_at(0);
  const float* q = a.q + i * a.q_stride;
  float qs[D];
  for (std::size_t c = 0; c < D; ++c) qs[c] = q[c] * a.scale;
  B acc[D];
  DYNASPARSE_UNROLL(8)
  for (std::size_t c = 0; c < D; ++c) acc[c] = B(0.0f);
  // The query's D values, broadcast once: with D a constant, a key vector's score is D
  // fused multiply-adds reading K from memory. (attention_scores_group, whose d is a run-time
  // value, broadcast and looped per element: about half of this row's instructions.)
  B qv[D];
  DYNASPARSE_UNROLL(8)
  for (std::size_t c = 0; c < D; ++c) qv[c] = B(qs[c]);
  static_assert(attention_k_panel % w == 0, "a key vector never crosses a panel");
  float m = ninf, l = 0.0f;
  const std::size_t end = a.key_end(i);
  const auto lanes = B::load_aligned(attention_lane_index);
  for (std::size_t j0 = 0; j0 < end; j0 += bk) {
    const std::size_t n = std::min(bk, end - j0);
    const std::size_t np = (n + w - 1) / w * w;
    // INT8: the keys' and values' scales of this block (compact ones expanded first).
    [[maybe_unused]] const float* kscale = nullptr;
    [[maybe_unused]] const float* vscale = nullptr;
    if constexpr (Int8) {
      kscale = a.k_scale + j0;
      vscale = a.v_scale + j0;
      if (a.k_code != nullptr) {
        expand_kv_scales<A>(kscale, a.k_code + j0 / 2, n, true, ksc);
        expand_kv_scales<A>(vscale, a.v_code + j0 / 2, n, true, vsc);
        kscale = ksc;
        vscale = vsc;
      }
    }
    // Key vector by key vector, in address order: a paneled K panel after panel, at
    // constant offsets inside one; plain rows (float or INT8) through a pointer per row.
    const bool paneled = Int8 ? a.kv_panels_s8() : a.k_panels;
    if (paneled) {
      constexpr std::size_t P = attention_k_panel;  // attention_kv_panel_s8 too (panel_offset)
      const auto* k0 = [&] {
        if constexpr (Int8) {
          return a.kt_s8 + a.kv_index(0, j0);
        } else {
          return a.kt + a.k_index(0, j0);
        }
      }();
      for (std::size_t jp = 0; jp < np; jp += P) {
        const auto* k = k0 + jp * D;
        DYNASPARSE_UNROLL(4)
        for (std::size_t v = 0; v < P / w; ++v) {
          if (jp + v * w < np) {
            const std::size_t j = jp + v * w;
            B t = qv[0] * load_keys<A>(k + v * w);
            DYNASPARSE_UNROLL(8)
            for (std::size_t c = 1; c < D; ++c)
              t = xsimd::fma(qv[c], load_keys<A>(k + c * P + v * w), t);
            if constexpr (Int8) t *= B::load_unaligned(kscale + j);
            t.store_unaligned(s + j);
          }
        }
      }
    }
    if (!paneled) {
      const auto* k0 = [&] {
        if constexpr (Int8) {
          return a.kt_s8 + a.kv_index(0, j0);
        } else {
          return a.kt + a.kv_index(0, j0);
        }
      }();
      decltype(k0) rows[D];
      DYNASPARSE_UNROLL(8)
      for (std::size_t c = 0; c < D; ++c) rows[c] = k0 + c * a.kv_stride;
      for (std::size_t j = 0; j < np; j += w) {
        B t = qv[0] * load_keys<A>(rows[0] + j);
        DYNASPARSE_UNROLL(8)
        for (std::size_t c = 1; c < D; ++c) t = xsimd::fma(qv[c], load_keys<A>(rows[c] + j), t);
        if constexpr (Int8) t *= B::load_unaligned(kscale + j);
        t.store_unaligned(s + j);
      }
    }
    std::fill(s + n, s + np, ninf);
    scalar::add_attention_masks(a, i, j0, n, s);
    const float mb = max_f32<A>(s, np);  // NaN if any score is NaN
    const float m_new =
        (mb != mb || m != m) ? std::numeric_limits<float>::quiet_NaN() : (mb > m ? mb : m);
    // The weights first, then the values: fused in one loop, the exp's constants and the D
    // accumulators did not fit the 16 AVX2 registers, and the accumulators went through
    // the stack on every vector.
    float alpha = 1.0f;
    B bs(0.0f);
    if (m_new == ninf) {
      // Nothing admissible yet: zero weights, whose products with the values still run, so
      // a NaN value under a masked key gives NaN as in attention_group (and PyTorch).
      std::fill(s, s + np, 0.0f);
    } else {
      alpha = scalar::exp(m - m_new);
      const B vm(m_new);
      for (std::size_t j = 0; j < np; j += w) {
        const B e = vexp_nonpositive<A>(B::load_unaligned(s + j) - vm);
        e.store_unaligned(s + j);
        bs += e;
      }
      const B va(alpha);
      DYNASPARSE_UNROLL(8)
      for (std::size_t c = 0; c < D; ++c) acc[c] *= va;
    }
    const auto* v = [&] {
      if constexpr (Int8) {
        return a.vt_s8 + a.kv_index(0, j0);
      } else {
        return a.vt + a.kv_index(0, j0);
      }
    }();
    const std::size_t nv = n - n % w;
    // The softmax weight of key j (times its V scale, INT8).
    auto weight = [&](std::size_t j) {
      B e = B::load_unaligned(s + j);
      if constexpr (Int8) e *= B::load_unaligned(vscale + j);
      return e;
    };
    // Value rows c of the key vector at j at vj + c * vs: rows kv_stride apart, or the
    // rows of a panel (INT8 panels: 16 keys' d rows in one stretch).
    auto values = [&](const auto* v0, std::size_t vs, auto panel) {
      // The panel stride a compile-time constant, so no branch per vector.
      auto at = [&](std::size_t j) {
        return v0 + (decltype(panel)::value ? panel_offset(j, attention_kv_panel_s8 * D) : j);
      };
      for (std::size_t j = 0; j < nv; j += w) {
        const B e = weight(j);
        const auto* vj = at(j);
        DYNASPARSE_UNROLL(8)
        for (std::size_t c = 0; c < D; ++c)
          acc[c] = xsimd::fma(e, load_keys<A>(vj + c * vs), acc[c]);
      }
      if (nv < n) {
        // Lanes past n: their scores are -inf (weight 0), but float values and INT8 scales
        // there may be anything, NaN included, so both are zeroed rather than multiplied.
        const auto in_block = lanes < B(static_cast<float>(n - nv));
        const B e = xsimd::select(in_block, weight(nv), B(0.0f));
        const auto* vj = at(nv);
        DYNASPARSE_UNROLL(8)
        for (std::size_t c = 0; c < D; ++c) {
          const B vv = xsimd::select(in_block, load_keys<A>(vj + c * vs), B(0.0f));
          acc[c] = xsimd::fma(e, vv, acc[c]);
        }
      }
    };
    if (Int8 && a.kv_panels_s8()) {
      values(v, attention_kv_panel_s8, std::true_type{});
    } else {
      values(v, a.kv_stride, std::false_type{});
    }
    l = l * alpha + xsimd::hadd(bs);
    m = m_new;
  }
  float* o = a.out + i * a.out_stride;
  const float inv = l > 0.0f ? 1.0f / l : std::numeric_limits<float>::quiet_NaN();
  hadd_columns<A, D>(acc, inv, o);
}

/// Keys up to which a decoding row takes attention_decode_row. Longer caches come from
/// DRAM, where reading the d value rows of a block at once lost to reading them one after
/// another (BM_AttentionDecode f32kv, head_dim 8, Zen 3, interleaved runs: 1.2x faster at
/// 1024 keys, 5-10% slower at 16384).
inline constexpr std::size_t attention_decode_row_max_keys = 2048;

// attention_decode_row<A, d> for d in [1, 8].
template <class A, bool Int8 = false, std::size_t D = 8>
inline void attention_decode_row_dispatch(const AttentionArgs& a, float* s, float* ksc = nullptr,
                                          float* vsc = nullptr) noexcept {
  if constexpr (D >= 1) {
    if (a.d == D) {
      attention_decode_row<A, D, Int8>(a, s, ksc, vsc);
    } else {
      attention_decode_row_dispatch<A, Int8, D - 1>(a, s, ksc, vsc);
    }
  }
}

template <class A, bool Int8>
inline void attention_stream(const AttentionArgs& a, float* scratch) noexcept {
  using B = xsimd::batch<float, A>;
  constexpr std::size_t w = B::size;
  constexpr std::size_t bk = attention_block_keys;
  constexpr std::size_t g = attention_group_rows;
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  const std::size_t d = a.d;
  const std::size_t tile = attention_tile_rows<A>(d);
  // Scratch layout: acc [tile][d][w] | m [tile] | l [tile] | scores [g][bk] | q*scale [g][d] |
  // dequantized K and V blocks [d][bk] each, expanded compact K and V scales [bk] each (INT8 only).
  float* acc = scratch;
  float* mrow = acc + tile * d * w;
  float* lrow = mrow + tile;
  float* sbuf = lrow + tile;
  float* qbuf = sbuf + g * bk;
  float* kf = qbuf + g * d;
  float* vf = kf + d * bk;
  float* ksc = vf + d * bk;
  float* vsc = ksc + bk;

  // Dequantized blocks sit in scratch of bk keys per row, a multiple of any vector width.
  const bool padded = Int8 || a.kv_padded;
  static_assert(bk % w == 0 && w <= sizeof(attention_lane_index) / sizeof(float));
  static_assert(attention_kv_block % bk == 0,
                "a kernel block must not straddle two storage blocks");
  const std::size_t nrows = a.row_count();
  // INT8 panels keep the row at every length: a panel's d value rows are one stretch, so
  // reading them at once is one stream from memory, not d.
  if (a.lq == 1 && nrows == 1 && a.kv_padded && d >= 1 && d <= 8 &&
      (a.key_end(a.row_at(0)) <= attention_decode_row_max_keys || (Int8 && a.kv_panels_s8()))) {
    if constexpr (!Int8) {
      attention_decode_row_dispatch<A>(a, sbuf);
      return;
    } else if constexpr (has_load_s8_f32<A>()) {
      attention_decode_row_dispatch<A, true>(a, sbuf, ksc, vsc);
      return;
    }
  }
  for (std::size_t t0 = 0; t0 < nrows; t0 += tile) {
    const std::size_t t1 = std::min(nrows, t0 + tile);
    std::size_t tile_end = 0;
    for (std::size_t r = t0; r < t1; ++r) {
      tile_end = std::max(tile_end, a.key_end(a.row_at(r)));
      mrow[r - t0] = ninf;
      lrow[r - t0] = 0.0f;
    }
    std::fill(acc, acc + (t1 - t0) * d * w, 0.0f);

    // INT8 K and V are read as stored when the tile has a group of rows or fewer (decoding):
    // dequantizing a block first costs a store and a load per element, which only pays
    // when many rows share the block.
    [[maybe_unused]] bool direct = false;
    if constexpr (Int8 && has_load_s8_f32<A>()) direct = a.kv_padded && t1 - t0 <= g;
    for (std::size_t j0 = 0; j0 < tile_end; j0 += bk) {
      const std::size_t nb = std::min(bk, tile_end - j0);
      auto fold = [&](const auto& kr, const auto& vr, std::size_t r, std::size_t cnt) {
        std::size_t rows[g];
        float* accs[g];
        float* ms[g];
        float* ls[g];
        float* ss[g];
        float* qs[g];
        for (std::size_t k = 0; k < g; ++k) {
          const std::size_t rr = r + (k < cnt ? k : 0);
          rows[k] = a.row_at(rr);
          accs[k] = acc + (rr - t0) * d * w;
          ms[k] = mrow + (rr - t0);
          ls[k] = lrow + (rr - t0);
          ss[k] = sbuf + k * bk;
          qs[k] = qbuf + k * d;
        }
        if (cnt == g) {
          attention_group<A, g>(a, rows, j0, nb, kr, vr, padded, accs, ms, ls, ss, qs);
        } else {
          for (std::size_t k = 0; k < cnt; ++k) {
            attention_group<A, 1>(a, rows + k, j0, nb, kr, vr, padded, accs + k, ms + k, ls + k, ss,
                                  qs);
          }
        }
      };
      auto fold_tile = [&](const auto& kr, const auto& vr) {
        for (std::size_t r = t0; r < t1; r += g) fold(kr, vr, r, std::min(g, t1 - r));
      };
      if constexpr (Int8) {
        const std::size_t at = a.kv_index(0, j0);
        const float* ks = a.k_scale + j0;
        const float* vs = a.v_scale + j0;
        if (a.k_code != nullptr) {
          // Once per block and call: about 0.17 ns a key for each of K and V on AVX2. (A
          // decoding row at head_dim <= 8 takes attention_decode_row, which expands its own.)
          expand_kv_scales<A>(ks, a.k_code + j0 / 2, nb, a.kv_padded, ksc);
          expand_kv_scales<A>(vs, a.v_code + j0 / 2, nb, a.kv_padded, vsc);
          ks = ksc;
          vs = vsc;
        }
        if constexpr (has_load_s8_f32<A>()) {
          if (direct) {
            const std::size_t ps = a.kv_panels_s8() ? attention_kv_panel_s8 * d : 0;
            fold_tile(KeyRowsS8{a.kt_s8 + at, a.kv_stride, ks, ps},
                      ValueRowsS8{a.vt_s8 + at, a.kv_stride, vs, ps});
            continue;
          }
        }
        const std::size_t panel = a.kv_panels_s8() ? attention_kv_panel_s8 : 0;
        dequantize_kv_block<A>(a.kt_s8 + at, a.kv_stride, panel, ks, nb, d, kf, bk);
        dequantize_kv_block<A>(a.vt_s8 + at, a.kv_stride, panel, vs, nb, d, vf, bk);
        fold_tile(KeyRows{kf, bk, 0}, ValueRows{vf, bk, nullptr});
      } else {
        const KeyRows kr =
            a.k_panels ? KeyRows{a.kt + a.k_index(0, j0), attention_k_panel, attention_k_panel * d}
                       : KeyRows{a.kt + a.k_index(0, j0), a.kv_stride, 0};
        fold_tile(kr, ValueRows{a.vt + a.kv_index(0, j0), a.kv_stride, nullptr});
      }
    }

    for (std::size_t r = t0; r < t1; ++r) {
      float* o = a.out + a.row_at(r) * a.out_stride;
      const float l = lrow[r - t0];
      const float inv = l > 0.0f ? 1.0f / l : std::numeric_limits<float>::quiet_NaN();
      const float* ar = acc + (r - t0) * d * w;
      for (std::size_t c = 0; c < d; ++c) o[c] = xsimd::hadd(B::load_aligned(ar + c * w)) * inv;
    }
  }
}

}  // namespace detail

/// A row stride (elements) for `[d, lkv]` K and V buffers: lkv rounded up to 16, plus 16
/// when that is a multiple of 256. A kernel reads d rows at once, and rows a multiple of
/// 1 KiB apart fall into the same cache sets (with lkv = 2048 every row did).
constexpr std::size_t attention_kv_stride(std::size_t lkv) noexcept {
  const std::size_t s = (lkv + 15) / 16 * 16;
  return s % 256 == 0 ? s + 16 : s;
}

/// Floats of scratch attention_f32 and attention_s8kv_f32 need at head dimension d
/// (64-byte aligned, e.g. from a Workspace). Independent of the sequence lengths.
template <class Arch = arch>
constexpr std::size_t attention_scratch_floats(std::size_t d) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    return detail::scalar::attention_scratch_floats(d);
  } else {
    constexpr std::size_t w = lanes_f32<Arch>();
    const std::size_t tile = detail::attention_tile_rows<Arch>(d);
    constexpr std::size_t g = detail::attention_group_rows;
    return tile * d * w + 2 * tile + g * detail::attention_block_keys + g * d +
           2 * (d + 1) * detail::attention_block_keys;
  }
}

/// Streaming attention of one head over float K and V (AttentionArgs::kt, vt): keys in
/// blocks of 256 with a running max and sum per query row, so memory is O(d), not
/// O(lq * lkv); query rows are taken in tiles that share each pass over a key block.
/// `scratch` holds attention_scratch_floats<Arch>(a.d) floats, 64-byte aligned.
template <class Arch = arch>
inline void attention_f32(const AttentionArgs& a, float* scratch) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::attention_f32(a, scratch);
  } else {
    detail::attention_stream<Arch, false>(a, scratch);
  }
}

/// attention_f32 over INT8 K and V with a scale per key (AttentionArgs::kt_s8, vt_s8,
/// k_scale, v_scale, and k_code, v_code when compact: each block's scales are then expanded
/// into scratch first). Tiles of many query rows dequantize each block into scratch once and
/// handle it as float; with kv_padded and at most four rows (decoding), archs with a
/// widening int8 load read K and V as stored and apply the scales per score and per
/// softmax weight; one query (lq 1) at head_dim <= 8 up to attention_decode_row_max_keys
/// keys (at any length in INT8 panels, AttentionArgs::kv_block) sums all value columns in
/// one pass, as attention_f32 does. The result equals attention_f32 on the dequantized K and
/// V within the same budget.
template <class Arch = arch>
inline void attention_s8kv_f32(const AttentionArgs& a, float* scratch) noexcept {
  if constexpr (is_scalar_arch_v<Arch>) {
    detail::scalar::attention_s8kv_f32(a, scratch);
  } else {
    detail::attention_stream<Arch, true>(a, scratch);
  }
}

/// Floats of scratch attention_naive_f32 needs: the whole score matrix and one query row.
inline std::size_t attention_naive_scratch_floats(const AttentionArgs& a) noexcept {
  return a.row_count() * a.lkv + a.d;
}

/// The straightforward kernel: materializes scores [rows, lkv], applies the masks, runs
/// softmax_f32 on each row, then out = P V. Float K and V in the plain (not blocked)
/// layout only. Same results as attention_f32 within the stated budget, except that keys
/// removed by `causal` are read (with weight 0). Quadratic memory: a baseline and an oracle, not a
/// production path. `scratch` holds attention_naive_scratch_floats(a) floats.
template <class Arch = arch>
inline void attention_naive_f32(const AttentionArgs& a, float* scratch) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  const std::size_t nrows = a.row_count();
  float* qs = scratch + nrows * a.lkv;
  for (std::size_t r = 0; r < nrows; ++r) {
    const std::size_t i = a.row_at(r);
    float* s = scratch + r * a.lkv;
    const float* q = a.q + i * a.q_stride;
    // Scaled once, like PyTorch's q / sqrt(d) before the product.
    for (std::size_t c = 0; c < a.d; ++c) qs[c] = q[c] * a.scale;
    const std::size_t end = a.key_end(i);
    if constexpr (is_scalar_arch_v<Arch>) {
      for (std::size_t j = 0; j < end; ++j) {
        float t = 0.0f;
        for (std::size_t c = 0; c < a.d; ++c) t += qs[c] * a.kt[c * a.kv_stride + j];
        s[j] = t;
      }
    } else {
      detail::attention_scores<Arch>(qs, a.d, a.kt, a.kv_stride, end, s);
    }
    for (std::size_t j = end; j < a.lkv; ++j) s[j] = ninf;
    detail::scalar::add_attention_masks(a, i, 0, end, s);
    softmax_f32<Arch>(s, s, a.lkv);
    float* o = a.out + i * a.out_stride;
    for (std::size_t c = 0; c < a.d; ++c) o[c] = dot_f32<Arch>(s, a.vt + c * a.kv_stride, a.lkv);
  }
}

}  // namespace simd
DYNASPARSE_NAMESPACE_END
