// The element-wise work of a decode step, for its few rows, without torch: RMSNorm (alone and
// after the residual add), the SiLU-gated product of the MLP, and the attention inputs (q/k
// biases, per-head norms, rotary embedding) written straight into the KV cache.
//
// Each function rounds where the modules' PyTorch operations round (every operation's result
// to the compute dtype T), so the decoder computes the same numbers fused or not, up to the
// order of the sum of squares of a norm and the last ulp of exp in SiLU.
#pragma once

#include <type_traits>

#include "common.h"

namespace jvlm {

// 1 / sqrt(mean(x^2) + eps) of one row, the sum of squares taken in VL lanes, then the lanes
// in order.
template <typename X>
inline float rms_scale(const X* x, int64_t D, float eps) {
  vf acc = vzero();
  int64_t k = 0;
  for (; k + VL <= D; k += VL) {
    const vf v = vload(x + k);
    acc = vfma(v, v, acc);
  }
  float ss = vsum(acc);
  for (; k < D; ++k) ss += to_float(x[k]) * to_float(x[k]);
  return 1.f / std::sqrt(ss / (float)D + eps);
}

// jvlm.model.text.RMSNorm of one row: y = w * to_X(x * scale), in Y (the promoted dtype).
template <typename X, typename W, typename Y>
inline void rms_norm_row(const X* x, const W* w, Y* y, int64_t D, float eps) {
  const float r = rms_scale(x, D, eps);
  int64_t k = 0;
  if constexpr (std::is_same_v<X, W> && std::is_same_v<X, Y>) {
    const vf rv = vset1(r);
    for (; k + VL <= D; k += VL) vstore(y + k, vmul(vload(w + k), vround_to(x, vmul(vload(x + k), rv))));
  }
  for (; k < D; ++k) store(y + k, to_float(w[k]) * round_to(x, to_float(x[k]) * r));
}

// The MLP's gated product of one row u = [value (F) | gate (F)]: out = to_T(to_T(silu(gate)) *
// value), silu(g) = g / (1 + e^-g) in fp32 (jvlm.model.text.TextMLP). Below g = -88, where
// PyTorch's silu is -0, this one is a number below 1e-35 in magnitude (vexp stops at e^88).
template <typename T>
inline void silu_mul_row(const T* u, T* out, int64_t F) {
  const T* gate = u + F;
  int64_t k = 0;
  for (; k + VL <= F; k += VL) {
    const vf g = vload(gate + k);
    const vf s = vround_to(u, vdiv(g, vadd(vset1(1.f), vexp(vmul(g, vset1(-1.f))))));
    vstore(out + k, vmul(s, vload(u + k)));
  }
  for (; k < F; ++k) {
    const float g = to_float(gate[k]);
    store(out + k, round_to(u, g / (1.f + std::exp(-g))) * to_float(u[k]));
  }
}

// out = to_T(a + b), n elements.
template <typename T>
inline void add_rows(const T* a, const T* b, T* out, int64_t n) {
  int64_t k = 0;
  for (; k + VL <= n; k += VL) vstore(out + k, vadd(vload(a + k), vload(b + k)));
  for (; k < n; ++k) store(out + k, to_float(a[k]) + to_float(b[k]));
}

// One head of q or k as jvlm.model.text.TextAttention computes it for one token:
// x = to_T(in + bias); y = RMSNorm(x) with weight nw; out = to_T(to_T(y * cos) +
// to_T(rotate_half(y) * sin)), rotate_half(y) = [-y[D/2:], y[:D/2]]. tmp holds D elements.
template <typename T>
inline void qk_head(const T* in, const T* bias, const T* nw, float eps, const T* cos, const T* sin, int64_t D,
                    T* out, T* tmp) {
  add_rows(in, bias, tmp, D);
  rms_norm_row(tmp, nw, tmp, D, eps);  // element k is read before it is written
  const int64_t half = D / 2;
  int64_t k = 0;
  for (; k + VL <= half; k += VL) {  // the pairs (k, k + half) together
    const vf a = vload(tmp + k), b = vload(tmp + k + half), minus = vset1(-1.f);
    vstore(out + k, vadd(vround_to(out, vmul(a, vload(cos + k))),
                         vround_to(out, vmul(vmul(b, minus), vload(sin + k)))));
    vstore(out + k + half, vadd(vround_to(out, vmul(b, vload(cos + k + half))),
                                vround_to(out, vmul(a, vload(sin + k + half)))));
  }
  for (; k < half; ++k) {
    const float a = to_float(tmp[k]), b = to_float(tmp[k + half]);
    store(out + k, round_to(out, a * to_float(cos[k])) + round_to(out, -b * to_float(sin[k])));
    store(out + k + half, round_to(out, b * to_float(cos[k + half])) + round_to(out, a * to_float(sin[k + half])));
  }
}

}  // namespace jvlm
