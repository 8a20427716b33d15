// One query token against the KV cache (a decoding step), without torch.
//
// Grouped-query attention: the G query heads of a group share one cached key/value head, so
// each cached row is read once for all G heads. Scores, softmax and the weighted sum of V are
// fp32; the weighted sum stays in registers (or L1) for the whole pass over the cache.
#pragma once

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "common.h"

namespace jvlm {

// The score pass of every kernel: scores[g * S + s] = dot(q_g, key s) * scale (-inf where
// masked) and each head's maximum in mx. dots(s, dot) writes the G dot products of key s.
template <int G, typename Dots>
inline void score_rows(const bool* mask, int64_t S, float scale, float* scores, float* mx, Dots&& dots) {
  for (int g = 0; g < G; ++g) mx[g] = -INFINITY;
  for (int64_t s = 0; s < S; ++s) {
    if (mask && !mask[s]) {
      for (int g = 0; g < G; ++g) scores[g * S + s] = -INFINITY;
      continue;
    }
    float dot[G];
    dots(s, dot);
    for (int g = 0; g < G; ++g) {
      const float sc = dot[g] * scale;
      scores[g * S + s] = sc;
      mx[g] = std::max(mx[g], sc);
    }
  }
}

// Softmax numerators of the G x S scores in place (masked: -inf -> 0), then the weighted sum
// of the cached values, normalised: head g to out + g * D. Shared by every score kernel.
template <typename T, int D, int G>
void softmax_times_values(const T* vb, int64_t vs, const bool* mask, int64_t S, const float* mx, float* scores,
                          T* out) {
  constexpr int ND = D / VL;
  float total[G];
  for (int g = 0; g < G; ++g) {  // masked scores are -inf: vexp gives 0 there
    float* sc = scores + g * S;
    const vf minus_mx = vset1(-mx[g]);
    vf sum = vzero();
    int64_t s = 0;
    for (; s + VL <= S; s += VL) {
      const vf e = vexp(vadd(vload(sc + s), minus_mx));
      vstore(sc + s, e);
      sum = vadd(sum, e);
    }
    total[g] = vsum(sum);
    for (; s < S; ++s) {
      const float e = sc[s] == -INFINITY ? 0.f : std::exp(sc[s] - mx[g]);
      sc[s] = e;
      total[g] += e;
    }
  }
  vf acc[G][ND];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < ND; ++j) acc[g][j] = vzero();
  for (int64_t s = 0; s < S; ++s) {
    if (mask && !mask[s]) continue;
    const T* vr = vb + s * vs;
    vf p[G];
    for (int g = 0; g < G; ++g) p[g] = vset1(scores[g * S + s]);
    for (int j = 0; j < ND; ++j) {
      const vf vv = vload(vr + VL * j);
      for (int g = 0; g < G; ++g) acc[g][j] = vfma(p[g], vv, acc[g][j]);
    }
  }
  for (int g = 0; g < G; ++g) {
    const vf inv = vset1(total[g] > 0.f ? 1.f / total[g] : 0.f);  // all masked: zeros
    float buf[VL];
    for (int j = 0; j < ND; ++j) {
      vstore(buf, vmul(acc[g][j], inv));
      for (int d = 0; d < VL; ++d) store(out + g * D + VL * j + d, buf[d]);
    }
  }
}

// The G heads at q (G x D, contiguous) against S cached rows: key s at kb + s * ks, value s at
// vb + s * vs. mask[s] false = not attended (mask may be null). scores: G * S floats of
// scratch. Writes G x D values at out, head g at out + g * D.
template <typename T, int D, int G>
void attend_group(const T* q, const T* kb, int64_t ks, const T* vb, int64_t vs, const bool* mask, int64_t S,
                  float scale, float* scores, T* out) {
  static_assert(D % VL == 0, "head_dim must be a multiple of the vector width");
  constexpr int ND = D / VL;
  vf qv[G][ND];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < ND; ++j) qv[g][j] = vload(q + g * D + VL * j);
  float mx[G];
  score_rows<G>(mask, S, scale, scores, mx, [&](int64_t s, float* dot) {
    const T* kr = kb + s * ks;
    vf kv[ND];
    for (int j = 0; j < ND; ++j) kv[j] = vload(kr + VL * j);
    for (int g = 0; g < G; ++g) {
      vf a[2] = {vzero(), vzero()};  // two chains: half the latency of one
      for (int j = 0; j < ND; ++j) a[j & 1] = vfma(qv[g][j], kv[j], a[j & 1]);
      dot[g] = vsum(vadd(a[0], a[1]));
    }
  });
  softmax_times_values<T, D, G>(vb, vs, mask, S, mx, scores, out);
}

#if defined(JVLM_ISA_AVX512)
// bf16 cache: scores with vdpbf16ps on q and k as stored (no rounding beyond the inputs').
template <int D, int G>
void attend_group_bf16dp(const bf16* q, const bf16* kb, int64_t ks, const bf16* vb, int64_t vs,
                         const bool* mask, int64_t S, float scale, float* scores, bf16* out) {
  constexpr int NC = (D + 31) / 32;
  constexpr __mmask32 last = D % 32 ? (__mmask32)0xFFFF : (__mmask32)0xFFFFFFFF;
  __m512i qv[G][NC];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < NC; ++c)
      qv[g][c] = _mm512_maskz_loadu_epi16(c == NC - 1 ? last : 0xFFFFFFFF, q + g * D + 32 * c);
  float mx[G];
  score_rows<G>(mask, S, scale, scores, mx, [&](int64_t s, float* dot) {
    const bf16* kr = kb + s * ks;
    __m512i kv[NC];
    for (int c = 0; c < NC; ++c) kv[c] = _mm512_maskz_loadu_epi16(c == NC - 1 ? last : 0xFFFFFFFF, kr + 32 * c);
    for (int g = 0; g < G; ++g) {
      __m512 a = _mm512_setzero_ps();
      for (int c = 0; c < NC; ++c) a = _mm512_dpbf16_ps(a, (__m512bh)qv[g][c], (__m512bh)kv[c]);
      dot[g] = _mm512_reduce_add_ps(a);
    }
  });
  softmax_times_values<bf16, D, G>(vb, vs, mask, S, mx, scores, out);
}
#endif

constexpr bool attention_head_dim_ok(int64_t D) { return D == 16 || D == 32 || D == 64 || D == 128; }
constexpr bool attention_group_ok(int64_t G) { return G == 1 || G == 2 || G == 4 || G == 8; }

// attend_group with D and G chosen at run time (each must pass the two checks above).
template <typename T>
void attend(int64_t D, int64_t G, const T* q, const T* kb, int64_t ks, const T* vb, int64_t vs,
            const bool* mask, int64_t S, float scale, float* scores, T* out) {
  auto by_g = [&](auto d) {
    constexpr int Dc = decltype(d)::value;
    auto run = [&](auto g) {
      constexpr int Gc = decltype(g)::value;
#if defined(JVLM_ISA_AVX512)
      if constexpr (std::is_same<T, bf16>::value)
        attend_group_bf16dp<Dc, Gc>(q, kb, ks, vb, vs, mask, S, scale, scores, out);
      else
#endif
        attend_group<T, Dc, Gc>(q, kb, ks, vb, vs, mask, S, scale, scores, out);
    };
    switch (G) {
      case 1: run(std::integral_constant<int, 1>()); break;
      case 2: run(std::integral_constant<int, 2>()); break;
      case 4: run(std::integral_constant<int, 4>()); break;
      case 8: run(std::integral_constant<int, 8>()); break;
      default: throw std::invalid_argument("heads per KV head must be 1, 2, 4 or 8");
    }
  };
  switch (D) {
    case 16: by_g(std::integral_constant<int, 16>()); break;
    case 32: by_g(std::integral_constant<int, 32>()); break;
    case 64: by_g(std::integral_constant<int, 64>()); break;
    case 128: by_g(std::integral_constant<int, 128>()); break;
    default: throw std::invalid_argument("head_dim must be 16, 32, 64 or 128");
  }
}

}  // namespace jvlm
