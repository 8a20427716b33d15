// Few-row matrix products y = x @ w.T (+ bias) for decoding, without torch.
//
// Generating a token multiplies a few activation rows by every weight once, so the time is
// the time to stream the weights from memory. The products are computed in register tiles of
// NR weight rows by up to MT_MAX activation rows: per step, NR weight vectors and one vector
// of each activation row are loaded and multiplied pairwise into MT * NR accumulators. Each
// weight is read from memory once; with more than MT_MAX activation rows, the next group
// re-reads the NR rows from cache. The NR accumulators of one activation row are independent,
// which hides the multiply-add latency even for a single row; and every activation vector
// loaded serves NR weight rows, so four rows cost little more than one.
//
// Invariant: each output element has its own accumulator, fed in order of k, then reduced in
// one fixed way, so it is summed in the same order whatever the number of rows (a request's
// logits are bit-identical alone or in a batch).
#pragma once

#include <algorithm>
#include <type_traits>

#include "common.h"

namespace jvlm {

// Activation rows a call may pass (a decode batch).
constexpr int64_t MAX_ROWS = 16;
// Weight rows per register tile.
constexpr int NR = 4;

// Asks for the cache line at p to be brought into L2. The tiles call it for the weights one tile
// ahead (NR rows further), so the next rows are on their way while these are multiplied: the
// hardware prefetcher alone, following NR short interleaved streams, fell behind (int8 rows
// streamed at 20 GB/s instead of 30-37 on Zen 4; four bf16 rows at 14-19 instead of 28).
template <typename T>
inline void ahead(const T* p) {
  __builtin_prefetch(p, 0, 2);
}

// Calls tile(m0, mt, n, nr) over the register tiles of output rows [n0, n1): NR weight rows at
// a time (single rows for the last few), each with groups of at most MT_MAX activation rows;
// mt and nr are compile-time constants.
template <typename Tile>
inline void for_tiles(int64_t M, int64_t n0, int64_t n1, Tile&& tile) {
  auto groups = [&](int64_t n, auto nr) {
    for (int64_t m0 = 0; m0 < M; m0 += MT_MAX) {
      switch (std::min<int64_t>(MT_MAX, M - m0)) {
        case 1: tile(m0, std::integral_constant<int, 1>(), n, nr); break;
        case 2: tile(m0, std::integral_constant<int, 2>(), n, nr); break;
#if defined(JVLM_ISA_AVX512) || defined(JVLM_ISA_NEON)
        case 3: tile(m0, std::integral_constant<int, 3>(), n, nr); break;
#endif
        default: tile(m0, std::integral_constant<int, MT_MAX>(), n, nr); break;
      }
    }
  };
  int64_t n = n0;
  for (; n + NR <= n1; n += NR) groups(n, std::integral_constant<int, NR>());
  for (; n < n1; ++n) groups(n, std::integral_constant<int, 1>());
}

// fp32 activations x (MT rows of K) times R weight rows w (fp32 or bf16, widened), to
// y[m * N + r] with bias[r].
template <int MT, int R, typename W, typename OUT>
inline void tile_f32(const float* x, int64_t K, const W* w, const float* bias, OUT* y, int64_t N) {
  vf acc[MT][R];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = vzero();
  const int64_t k_main = K - K % VL;
  for (int64_t k = 0; k < k_main; k += VL) {
    vf wv[R];
    for (int r = 0; r < R; ++r) ahead(w + (R + r) * K + k), wv[r] = vload(w + r * K + k);
    for (int m = 0; m < MT; ++m) {
      const vf xv = vload(x + m * K + k);
      for (int r = 0; r < R; ++r) acc[m][r] = vfma(xv, wv[r], acc[m][r]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) {
      float tail = 0.f;
      for (int64_t k = k_main; k < K; ++k) tail += x[m * K + k] * to_float(w[r * K + k]);
      store(y + m * N + r, vsum(acc[m][r]) + tail + (bias ? bias[r] : 0.f));
    }
}

// Products per int32 lane for a row of K: the activations' int16 range must keep
// 127 * |x| * this count inside int32.
constexpr int64_t int8_lane_products(int64_t K) {
  const int64_t per_lane = 2 * (K / (2 * VL));  // vdot16 steps, 2 products per lane each
  return per_lane > 2 * VL ? per_lane : 2 * VL;  // the scalar tail has fewer than 2 * VL
}

// Largest int16 activation magnitude for rows of K (at most 32767: 15 bits, far finer than
// bf16's 8-bit mantissa, so the result's error is the int8 weights' alone).
inline float int8_activation_qmax(int64_t K) {
  const double bound = 2147483647.0 / (127.0 * (double)int8_lane_products(K));
  return (float)std::min(32767.0, std::floor(bound));
}

// Symmetric per-row int16 quantization of one activation row; returns its scale.
template <typename X>
inline float quantize_row(const X* x, int64_t K, float qmax, int16_t* q) {
  float amax = 0.f;
  for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(to_float(x[k])));
  const float scale = amax > 0.f ? amax / qmax : 1.f;
  for (int64_t k = 0; k < K; ++k) q[k] = (int16_t)std::nearbyint(to_float(x[k]) / scale);
  return scale;
}

// int8 weights (row scales ws) times int16 activations (row scales xs): int32 sums are exact,
// so the result depends on nothing but the inputs; lanes are added as floats (the total of K
// products may exceed int32, one lane cannot).
template <int MT, int R, typename OUT>
inline void tile_i8(const int16_t* x, const float* xs, int64_t K, const int8_t* w, const float* ws,
                    const float* bias, OUT* y, int64_t N) {
  vi acc[MT][R];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = vizero();
  const int64_t k_main = K - K % (2 * VL);
  for (int64_t k = 0; k < k_main; k += 2 * VL) {
    vh wv[R];
    for (int r = 0; r < R; ++r) ahead(w + (R + r) * K + k), wv[r] = vwiden8(w + r * K + k);
    for (int m = 0; m < MT; ++m) {
      const vh xv = vload16(x + m * K + k);
      for (int r = 0; r < R; ++r) acc[m][r] = vdot16(acc[m][r], xv, wv[r]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) {
      int32_t tail = 0;
      for (int64_t k = k_main; k < K; ++k) tail += (int32_t)x[m * K + k] * (int32_t)w[r * K + k];
      const float dot = vsum(vitof(acc[m][r])) + (float)tail;
      store(y + m * N + r, dot * xs[m] * ws[r] + (bias ? bias[r] : 0.f));
    }
}

#if defined(JVLM_ISA_AVX512)
// bf16 activations and weights: vdpbf16ps does 32 multiply-adds per instruction into fp32.
template <int MT, int R, typename OUT>
inline void tile_bf16dp(const bf16* x, int64_t K, const bf16* w, const float* bias, OUT* y, int64_t N) {
  __m512 acc[MT][R];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  // (Written out twice rather than as one lambda: GCC then kept the accumulators on the stack,
  // storing all of them at every step, which made four rows three times slower.)
  const int64_t k_main = K - K % 32;
  for (int64_t k = 0; k < k_main; k += 32) {
    __m512i wv[R];
    for (int r = 0; r < R; ++r) ahead(w + (R + r) * K + k), wv[r] = _mm512_loadu_si512(w + r * K + k);
    for (int m = 0; m < MT; ++m) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + m * K + k);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], xv, (__m512bh)wv[r]);
    }
  }
  if (k_main < K) {  // the last partial step, with masked loads
    const __mmask32 mask = (__mmask32)((1u << (K - k_main)) - 1);
    __m512i wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm512_maskz_loadu_epi16(mask, w + r * K + k_main);
    for (int m = 0; m < MT; ++m) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mask, x + m * K + k_main);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_dpbf16_ps(acc[m][r], xv, (__m512bh)wv[r]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < R; ++r) store(y + m * N + r, vsum(acc[m][r]) + (bias ? bias[r] : 0.f));
}
#endif

// Output columns n0..n1 of y (M, N) = x (M, K) @ w.T + bias, fp32 x, w fp32 or bf16.
template <typename W, typename OUT>
void linear_f32(const float* x, int64_t M, int64_t K, const W* w, const float* bias, OUT* y, int64_t N,
                int64_t n0, int64_t n1) {
  for_tiles(M, n0, n1, [&](int64_t m0, auto mt, int64_t n, auto nr) {
    tile_f32<decltype(mt)::value, decltype(nr)::value>(x + m0 * K, K, w + n * K, bias ? bias + n : nullptr,
                                                       y + m0 * N + n, N);
  });
}

// The same with int8 weights (scales ws) and int16 activations (scales xs).
template <typename OUT>
void linear_i8(const int16_t* x, const float* xs, int64_t M, int64_t K, const int8_t* w, const float* ws,
               const float* bias, OUT* y, int64_t N, int64_t n0, int64_t n1) {
  for_tiles(M, n0, n1, [&](int64_t m0, auto mt, int64_t n, auto nr) {
    tile_i8<decltype(mt)::value, decltype(nr)::value>(x + m0 * K, xs + m0, K, w + n * K, ws + n,
                                                      bias ? bias + n : nullptr, y + m0 * N + n, N);
  });
}

#if defined(JVLM_ISA_AVX512)
template <typename OUT>
void linear_bf16dp(const bf16* x, int64_t M, int64_t K, const bf16* w, const float* bias, OUT* y, int64_t N,
                   int64_t n0, int64_t n1) {
  for_tiles(M, n0, n1, [&](int64_t m0, auto mt, int64_t n, auto nr) {
    tile_bf16dp<decltype(mt)::value, decltype(nr)::value>(x + m0 * K, K, w + n * K, bias ? bias + n : nullptr,
                                                          y + m0 * N + n, N);
  });
}
#endif

}  // namespace jvlm
