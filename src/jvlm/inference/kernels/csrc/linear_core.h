// Few-row matrix products y = x @ w.T (+ bias) for decoding, without torch.
//
// Generating a token multiplies a few activation rows by every weight once, so the time is
// the time to stream the weights from memory. Each weight is read from memory once and
// multiplied by up to MT_MAX activation rows at once (further groups of rows re-read it from
// L1); the activations are walked in chunks that stay in L1 (see KC). U independent
// accumulators per row hide the multiply-add latency.
//
// Invariant: which accumulator a product goes to depends only on k, and the accumulators are
// added in one fixed tree, so each output element is summed in the same order whatever the
// number of rows (a request's logits are bit-identical alone or in a batch).
#pragma once

#include <algorithm>
#include <type_traits>

#include "common.h"

namespace jvlm {

// Adds a[0..N) pairwise into a[0]: ((a0 + a1) + (a2 + a3)) for N = 4.
template <int N, typename V, typename Add>
inline V tree_sum(V* a, Add add) {
  for (int s = 1; s < N; s *= 2)
    for (int i = 0; i + s < N; i += 2 * s) a[i] = add(a[i], a[i + s]);
  return a[0];
}

// Activation rows a call may pass (a decode batch).
constexpr int64_t MAX_ROWS = 16;
// K is walked in chunks of KC, each over a block of NB weight rows, so that the chunk of every
// activation row (16 x 512 fp32 = 32 KiB at most) stays in L1 while the NB weight rows stream
// past it; a whole activation row (24 KiB in fp32 for K = 6144) would be re-read from L2 for
// every weight row. While one chunk of a weight row is multiplied, the row's next chunk is
// prefetched (the hardware prefetcher alone fell behind on these short interleaved streams:
// about 1.3x slower at 4 rows on Zen 4). KC is a multiple of every ISA's VL * U and 2 * VL * U, so chunking does not
// change which accumulator a product goes to: the sums are those of one pass.
constexpr int64_t KC = 512;
constexpr int NB = 8;

// acc[m][u] += products of weight row wr and MT fp32 activation rows x[m * K + k] for k in
// [k0, k1), k0 and k1 multiples of VL * U.
template <int MT, typename W>
inline void accumulate_f32(const float* x, int64_t K, const W* wr, int64_t k0, int64_t k1, vf (*acc)[U]) {
  vf a[MT][U];
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) a[m][u] = acc[m][u];
  for (int64_t k = k0; k < k1; k += VL * U) {
    prefetch<VL * U * sizeof(W)>(wr + k + KC);
    for (int u = 0; u < U; ++u) {
      const vf wv = vload(wr + k + VL * u);
      for (int m = 0; m < MT; ++m) a[m][u] = vfma(vload(x + m * K + k + VL * u), wv, a[m][u]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) acc[m][u] = a[m][u];
}

// The rest of the row from k (the end of the whole VL * U steps): whole vectors (fewer than
// U), then one value at a time; then the accumulators in one fixed tree, plus bias, to y[m * N].
template <int MT, typename W, typename OUT>
inline void finish_f32(const float* x, int64_t K, const W* wr, int64_t k, vf (*acc)[U], float bias, OUT* y,
                       int64_t N) {
  for (int u = 0; k + VL <= K; k += VL, ++u) {
    const vf wv = vload(wr + k);
    for (int m = 0; m < MT; ++m) acc[m][u] = vfma(vload(x + m * K + k), wv, acc[m][u]);
  }
  float tail[MT];
  for (int m = 0; m < MT; ++m) tail[m] = 0.f;
  for (; k < K; ++k) {
    const float wk = to_float(wr[k]);
    for (int m = 0; m < MT; ++m) tail[m] += x[m * K + k] * wk;
  }
  for (int m = 0; m < MT; ++m)
    store(y + m * N, vsum(tree_sum<U>(acc[m], vadd)) + tail[m] + bias);
}

// Products per int32 lane for a row of K: the activations' int16 range must keep
// 127 * |x| * this count inside int32.
constexpr int64_t int8_lane_products(int64_t K) {
  const int64_t steps = K / (2 * VL);  // vmadd8 calls, U-way round robin, 2 products per lane each
  const int64_t per_lane = 2 * ((steps + U - 1) / U);
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

// int8 weights times int16 activations: int32 sums are exact, so the result depends on
// nothing but the inputs; lanes are added as floats (the total of K products may exceed
// int32, one lane cannot). Same structure as the fp32 pair above, 2 * VL values per step.
template <int MT>
inline void accumulate_i8(const int16_t* x, int64_t K, const int8_t* wr, int64_t k0, int64_t k1, vi (*acc)[U]) {
  vi a[MT][U];
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) a[m][u] = acc[m][u];
  for (int64_t k = k0; k < k1; k += 2 * VL * U) {
    prefetch<2 * VL * U>(wr + k + KC);
    for (int u = 0; u < U; ++u)
      for (int m = 0; m < MT; ++m) a[m][u] = vmadd8(a[m][u], x + m * K + k + 2 * VL * u, wr + k + 2 * VL * u);
  }
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) acc[m][u] = a[m][u];
}

template <int MT, typename OUT>
inline void finish_i8(const int16_t* x, const float* xs, int64_t K, const int8_t* wr, int64_t k, vi (*acc)[U],
                      float ws, float bias, OUT* y, int64_t N) {
  for (int u = 0; k + 2 * VL <= K; k += 2 * VL, ++u)
    for (int m = 0; m < MT; ++m) acc[m][u] = vmadd8(acc[m][u], x + m * K + k, wr + k);
  int32_t tail[MT];
  for (int m = 0; m < MT; ++m) tail[m] = 0;
  for (; k < K; ++k)
    for (int m = 0; m < MT; ++m) tail[m] += (int32_t)x[m * K + k] * (int32_t)wr[k];
  for (int m = 0; m < MT; ++m) {
    vf s[U];
    for (int u = 0; u < U; ++u) s[u] = vitof(acc[m][u]);
    const float dot = vsum(tree_sum<U>(s, vadd)) + (float)tail[m];
    store(y + m * N, dot * xs[m] * ws + bias);
  }
}

#if defined(JVLM_ISA_AVX512)
// bf16 activations and weights: vdpbf16ps does 32 multiply-adds per instruction into fp32.
// One weight row at a time, as one linear stream (bf16 activation rows are half as large).
template <int MT, typename OUT>
inline void row_bf16dp(const bf16* x, int64_t K, const bf16* wr, float bias, OUT* y, int64_t N) {
  static_assert(U == 4, "the final sum below adds four accumulators");
  __m512 acc[MT][U];
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) acc[m][u] = _mm512_setzero_ps();
  const int64_t k_main = K - K % (32 * U);
  for (int64_t k = 0; k < k_main; k += 32 * U) {
    __m512i wv[U];
    for (int u = 0; u < U; ++u) wv[u] = _mm512_loadu_si512(wr + k + 32 * u);
    for (int m = 0; m < MT; ++m)
      for (int u = 0; u < U; ++u)
        acc[m][u] = _mm512_dpbf16_ps(acc[m][u], (__m512bh)_mm512_loadu_si512(x + m * K + k + 32 * u),
                                     (__m512bh)wv[u]);
  }
  for (int64_t k = k_main; k < K; k += 32) {  // tail, 32 at a time, masked at the very end
    const int64_t left = K - k;
    const __mmask32 mask = left >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
    const __m512i wv = _mm512_maskz_loadu_epi16(mask, wr + k);
    const int u = (int)((k - k_main) / 32) % U;
    for (int m = 0; m < MT; ++m)
      acc[m][u] = _mm512_dpbf16_ps(acc[m][u], (__m512bh)_mm512_maskz_loadu_epi16(mask, x + m * K + k),
                                   (__m512bh)wv);
  }
  for (int m = 0; m < MT; ++m) store(y + m * N, vsum(tree_sum<U>(acc[m], vadd)) + bias);
}
#endif

// Calls row(m0, MT) for groups of at most MT_MAX activation rows, MT a compile-time constant.
template <typename Row>
inline void for_groups(int64_t M, Row&& row) {
  for (int64_t m0 = 0; m0 < M; m0 += MT_MAX) {
    switch (std::min<int64_t>(MT_MAX, M - m0)) {
      case 1: row(m0, std::integral_constant<int, 1>()); break;
      case 2: row(m0, std::integral_constant<int, 2>()); break;
      case 3: row(m0, std::integral_constant<int, 3>()); break;
      default: row(m0, std::integral_constant<int, MT_MAX>()); break;
    }
  }
}

// Runs the blocked loop: for NB weight rows at a time, every chunk of K for every group of
// rows (accumulate(j, m0, mt, k0, k1, acc) with j the row in the block), then the rest of each
// row (finish(j, m0, mt, k_main, acc)). V is vf or vi.
template <typename V, typename Zero, typename Acc, typename Fin>
inline void blocked(int64_t M, int64_t k_main, int64_t n0, int64_t n1, Zero zero, Acc&& accumulate, Fin&& finish) {
  V acc[NB][MAX_ROWS][U];
  for (int64_t nb = n0; nb < n1; nb += NB) {
    const int nn = (int)std::min<int64_t>(NB, n1 - nb);
    for (int j = 0; j < nn; ++j)
      for (int64_t m = 0; m < M; ++m)
        for (int u = 0; u < U; ++u) acc[j][m][u] = zero();
    for (int64_t k0 = 0; k0 < k_main; k0 += KC)
      for (int j = 0; j < nn; ++j)
        for_groups(M, [&](int64_t m0, auto mt) { accumulate(nb + j, m0, mt, k0, std::min(k0 + KC, k_main), acc[j] + m0); });
    for (int j = 0; j < nn; ++j)
      for_groups(M, [&](int64_t m0, auto mt) { finish(nb + j, m0, mt, k_main, acc[j] + m0); });
  }
}

// Output columns n0..n1 of y (M, N) = x (M, K) @ w.T + bias, fp32 x, w fp32 or bf16.
template <typename W, typename OUT>
void linear_f32(const float* x, int64_t M, int64_t K, const W* w, const float* bias, OUT* y, int64_t N,
                int64_t n0, int64_t n1) {
  blocked<vf>(M, K - K % (VL * U), n0, n1, vzero,
      [&](int64_t n, int64_t m0, auto mt, int64_t k0, int64_t k1, vf (*acc)[U]) {
        accumulate_f32<decltype(mt)::value>(x + m0 * K, K, w + n * K, k0, k1, acc);
      },
      [&](int64_t n, int64_t m0, auto mt, int64_t k, vf (*acc)[U]) {
        finish_f32<decltype(mt)::value>(x + m0 * K, K, w + n * K, k, acc, bias ? bias[n] : 0.f, y + m0 * N + n, N);
      });
}

// The same with int8 weights (scales ws) and int16 activations (scales xs). One weight row at a
// time, as one linear stream, for each group of activation rows: an int8 row (K bytes) stays in
// L1 between groups, and the chunked walk above would spend more on its bookkeeping than on
// the few vector steps a 512-byte int8 chunk holds.
template <typename OUT>
void linear_i8(const int16_t* x, const float* xs, int64_t M, int64_t K, const int8_t* w, const float* ws,
               const float* bias, OUT* y, int64_t N, int64_t n0, int64_t n1) {
  const int64_t k_main = K - K % (2 * VL * U);
  for (int64_t n = n0; n < n1; ++n)
    for_groups(M, [&](int64_t m0, auto mt) {
      constexpr int MT = decltype(mt)::value;
      vi acc[MT][U];
      for (int m = 0; m < MT; ++m)
        for (int u = 0; u < U; ++u) acc[m][u] = vizero();
      accumulate_i8<MT>(x + m0 * K, K, w + n * K, 0, k_main, acc);
      finish_i8<MT>(x + m0 * K, xs + m0, K, w + n * K, k_main, acc, ws[n], bias ? bias[n] : 0.f, y + m0 * N + n, N);
    });
}

#if defined(JVLM_ISA_AVX512)
template <typename OUT>
void linear_bf16dp(const bf16* x, int64_t M, int64_t K, const bf16* w, const float* bias, OUT* y, int64_t N,
                   int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n)
    for_groups(M, [&](int64_t m0, auto mt) {
      row_bf16dp<decltype(mt)::value>(x + m0 * K, K, w + n * K, bias ? bias[n] : 0.f, y + m0 * N + n, N);
    });
}
#endif

}  // namespace jvlm
