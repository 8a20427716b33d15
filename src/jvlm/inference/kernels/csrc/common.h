// Vector helpers shared by every kernel, one small set of inline wrappers per instruction set.
//
// The build defines exactly one of JVLM_ISA_AVX512, JVLM_ISA_AVX2, JVLM_ISA_NEON. The kernels
// (linear_core.h, attention_core.h) are written once against these wrappers, so the same source
// compiles for x86 and ARM64. This header, like the two cores, does not include torch: the ARM
// path is checked by a standalone driver cross-compiled for aarch64 and run under qemu.
//
//   vf      VL fp32 lanes             vi      VL int32 lanes (VL = 16, 8, 4)
//   NR      weight rows multiplied together (linear_core.h): NR independent sums per
//           activation row hide the multiply-add latency
//   vh      2 * VL int16 lanes (int8 weights widened, int16 activations)
//   MT_MAX  activation rows multiplied per pass over NR weight rows (bounded by the registers:
//           MT_MAX * NR accumulators, NR weight vectors and one activation vector)
//
// Element-wise helpers (step_core.h): vround_bf16 rounds each lane to bf16 exactly as torch
// does (round to nearest even, NaN kept), vstore(bf16*) stores lanes so rounded, vexp is an
// exp accurate to about one fp32 ulp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(JVLM_ISA_AVX512) || defined(JVLM_ISA_AVX2)
#include <immintrin.h>
#elif defined(JVLM_ISA_NEON)
#include <arm_neon.h>
#else
#error "define JVLM_ISA_AVX512, JVLM_ISA_AVX2 or JVLM_ISA_NEON"
#endif

namespace jvlm {

// bf16 as stored by torch: the top 16 bits of an fp32. A distinct type so that overloads
// pick the widening load.
struct bf16 {
  uint16_t bits;
};

inline float to_float(float v) { return v; }
inline float to_float(bf16 v) {
  const uint32_t u = (uint32_t)v.bits << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, NaN kept a (quiet) NaN: what torch's float -> bfloat16 conversion does.
inline void store(float* y, float v) { *y = v; }
inline void store(bf16* y, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if (std::isnan(v)) {
    y->bits = 0x7FC0;
    return;
  }
  u += 0x7FFF + ((u >> 16) & 1);
  y->bits = (uint16_t)(u >> 16);
}

#if defined(JVLM_ISA_AVX512)

constexpr int VL = 16, MT_MAX = 4;  // 16 + 4 + 1 of the 32 zmm registers
typedef __m512 vf;
typedef __m512i vi;
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vset1(float a) { return _mm512_set1_ps(a); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline vf vload(const bf16* p) {  // widen: a bf16 is the top half of an fp32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
inline void vstore(float* p, vf a) { _mm512_storeu_ps(p, a); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vfma(vf a, vf b, vf acc) { return _mm512_fmadd_ps(a, b, acc); }
inline float vsum(vf a) { return _mm512_reduce_add_ps(a); }
inline vi vizero() { return _mm512_setzero_si512(); }
typedef __m512i vh;  // 2 * VL int16 lanes
inline vh vload16(const int16_t* x) { return _mm512_loadu_si512(x); }
inline vh vwiden8(const int8_t* w) { return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)w)); }
// acc += pairwise products of 2*VL int16 activations and 2*VL (widened) int8 weights, 2 per lane.
inline vi vdot16(vi acc, vh x, vh w) { return _mm512_dpwssd_epi32(acc, x, w); }
inline vf vitof(vi a) { return _mm512_cvtepi32_ps(a); }
inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
inline vf vrint(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vf vzero_below(vf a, vf x, float lo) {  // a, or 0 where x < lo or x is NaN
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(lo), _CMP_GE_OQ), a);
}
inline vf vpow2i(vf n) {  // 2^n for integral n in [-126, 127]
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
inline vf vround_bf16(vf a) {
  const __m512i u = _mm512_castps_si512(a);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_and_si512(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))),
                               _mm512_set1_epi32((int)0xFFFF0000u));
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC00000));
  return _mm512_castsi512_ps(r);
}
inline void vstore(bf16* p, vf a) {
  _mm256_storeu_si256((__m256i*)p, _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(vround_bf16(a)), 16)));
}

#elif defined(JVLM_ISA_AVX2)

constexpr int VL = 8, MT_MAX = 2;  // 8 + 4 + 1 of the 16 ymm registers
typedef __m256 vf;
typedef __m256i vi;
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vset1(float a) { return _mm256_set1_ps(a); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline vf vload(const bf16* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
inline void vstore(float* p, vf a) { _mm256_storeu_ps(p, a); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf vfma(vf a, vf b, vf acc) { return _mm256_fmadd_ps(a, b, acc); }
inline float vsum(vf a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline vi vizero() { return _mm256_setzero_si256(); }
typedef __m256i vh;
inline vh vload16(const int16_t* x) { return _mm256_loadu_si256((const __m256i*)x); }
inline vh vwiden8(const int8_t* w) { return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)w)); }
inline vi vdot16(vi acc, vh x, vh w) { return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)); }
inline vf vitof(vi a) { return _mm256_cvtepi32_ps(a); }
inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
inline vf vrint(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vf vzero_below(vf a, vf x, float lo) { return _mm256_and_ps(a, _mm256_cmp_ps(x, _mm256_set1_ps(lo), _CMP_GE_OQ)); }
inline vf vpow2i(vf n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline vf vround_bf16(vf a) {
  const __m256i u = _mm256_castps_si256(a);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_and_si256(_mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))),
                                     _mm256_set1_epi32((int)0xFFFF0000u));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  return _mm256_castsi256_ps(_mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC00000), nan));
}
inline void vstore(bf16* p, vf a) {
  const __m256i h = _mm256_srli_epi32(_mm256_castps_si256(vround_bf16(a)), 16);
  // packus interleaves the two 128-bit halves; the permute puts the eight results in order
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(h, h), 0xD8);
  _mm_storeu_si128((__m128i*)p, _mm256_castsi256_si128(packed));
}

#elif defined(JVLM_ISA_NEON)

constexpr int VL = 4, MT_MAX = 4;  // 16 + 4 + 1 of the 32 q registers
typedef float32x4_t vf;
typedef int32x4_t vi;
inline vf vzero() { return vdupq_n_f32(0.f); }
inline vf vset1(float a) { return vdupq_n_f32(a); }
inline vf vload(const float* p) { return vld1q_f32(p); }
inline vf vload(const bf16* p) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t*)p), 16));
}
inline void vstore(float* p, vf a) { vst1q_f32(p, a); }
inline vf vadd(vf a, vf b) { return vaddq_f32(a, b); }
inline vf vmul(vf a, vf b) { return vmulq_f32(a, b); }
inline vf vfma(vf a, vf b, vf acc) { return vfmaq_f32(acc, a, b); }
inline float vsum(vf a) { return vaddvq_f32(a); }
inline vi vizero() { return vdupq_n_s32(0); }
typedef int16x8_t vh;
inline vh vload16(const int16_t* x) { return vld1q_s16(x); }
inline vh vwiden8(const int8_t* w) { return vmovl_s8(vld1_s8(w)); }
inline vi vdot16(vi acc, vh x, vh w) { return vmlal_high_s16(vmlal_s16(acc, vget_low_s16(x), vget_low_s16(w)), x, w); }
inline vf vitof(vi a) { return vcvtq_f32_s32(a); }
inline vf vdiv(vf a, vf b) { return vdivq_f32(a, b); }
inline vf vmin(vf a, vf b) { return vminq_f32(a, b); }
inline vf vmax(vf a, vf b) { return vmaxq_f32(a, b); }
inline vf vrint(vf a) { return vrndnq_f32(a); }
inline vf vzero_below(vf a, vf x, float lo) {
  return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a), vcgeq_f32(x, vdupq_n_f32(lo))));
}
inline vf vpow2i(vf n) {
  return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127)), 23));
}
inline vf vround_bf16(vf a) {
  const uint32x4_t u = vreinterpretq_u32_f32(a);
  const uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
  const uint32x4_t r = vandq_u32(vaddq_u32(u, vaddq_u32(odd, vdupq_n_u32(0x7FFF))), vdupq_n_u32(0xFFFF0000u));
  const uint32x4_t is_num = vceqq_f32(a, a);
  return vreinterpretq_f32_u32(vbslq_u32(is_num, r, vdupq_n_u32(0x7FC00000u)));
}
inline void vstore(bf16* p, vf a) {
  vst1_u16((uint16_t*)p, vshrn_n_u32(vreinterpretq_u32_f32(vround_bf16(a)), 16));
}

#endif

// Rounds each lane to x's dtype (the model's compute dtype): nothing for fp32.
inline vf vround_to(const float*, vf a) { return a; }
inline vf vround_to(const bf16*, vf a) { return vround_bf16(a); }
inline float round_to(const float*, float v) { return v; }
inline float round_to(const bf16*, float v) {
  bf16 b;
  store(&b, v);
  return to_float(b);
}

// exp(x) lane-wise, within about one fp32 ulp: x = n ln2 + r with |r| <= ln2 / 2, e^r by its
// Taylor series to r^7 (error below 1e-8 relative), times 2^n. Below x = -87 (e^x < 1.7e-38,
// where fp32 leaves its normal range) the result is 0, as it is for -inf and NaN (callers keep
// NaN through their own arithmetic, as silu's x / (1 + e^-x) does); above 88 it is e^88.
inline vf vexp(vf x_in) {
  const vf x = vmin(vmax(x_in, vset1(-87.f)), vset1(88.f));
  const vf n = vrint(vmul(x, vset1(1.44269504088896341f)));
  vf r = vfma(n, vset1(-0.693359375f), x);  // ln2 in two parts: n * 0.693359375 is exact
  r = vfma(n, vset1(2.12194440e-4f), r);
  vf p = vset1(1.f / 5040);
  p = vfma(p, r, vset1(1.f / 720));
  p = vfma(p, r, vset1(1.f / 120));
  p = vfma(p, r, vset1(1.f / 24));
  p = vfma(p, r, vset1(1.f / 6));
  p = vfma(p, r, vset1(0.5f));
  p = vfma(p, r, vset1(1.f));
  p = vfma(p, r, vset1(1.f));
  return vzero_below(vmul(p, vpow2i(n)), x_in, -87.f);
}

}  // namespace jvlm
