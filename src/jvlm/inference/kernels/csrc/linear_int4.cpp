// Decode-step product with group-wise int4 weights: y = x @ W.T (+ bias) for a few rows of x.
//
// Weight format (see jvlm/inference/int4.py): levels in [-8, 7] stored as level + 8, one
// float16 scale per block of 32 weights along K. Packed uint8 (N, K/2): a block's 16 bytes
// hold weight j (low nibble) and j + 16 (high nibble) in byte j; blocks come in tiles of 8
// (the last tile of a row may be shorter, b blocks), interleaved in 4-byte pieces: tile byte
// 4 * (c * b + L) + i is byte 4 * c + i of block L. So 32-bit lane L of a 32-byte load of a
// tile belongs to block L, and a tile's products add up, lane by lane, to its 8 block sums.
//
// Decoding streams every weight once, so the time is the bytes read (4.5 bits per weight).
// Activations are rounded to int8 with a scale per group of 32, which turns each group's dot
// product into an exact int32 sum of unsigned-nibble x signed-byte products:
//   sum_k (u_k - 8) * xq_k = sum_k u_k * xq_k - 8 * sum_k xq_k
// (the second term is computed once per activation row). The int8 step is amax / 127 of the
// group, against the weights' amax / 8: activation rounding adds about 1/15 of the weight
// rounding's error (measured on Gaussian data; in quadrature, +0.3% on the total).
//
// The instruction set is chosen by the flags this file is compiled with:
//   x86 with AVX2, FMA and F16C: vpmaddubsw on 256-bit vectors, int16 sums per tile, one
//     vpmaddwd to int32; with AVX-512 VNNI and VL as well: vpdpbusd (int32 sums) instead.
//     256-bit vectors in both: on Zen 4, 512-bit integer work runs as two 256-bit halves;
//   aarch64 NEON: vdotq_s32 with the dot-product extension (armv8.2-a+dotprod), else
//     widening multiply-accumulates; any other target: portable C++.
//
// Each output element is summed in the same order whatever the number of rows, so a request
// gets bit-identical results alone or in a batch.

#include "ops.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if defined(__AVX2__) && !(defined(__FMA__) && defined(__F16C__))
#error "linear_int4: an AVX2 build needs -mfma and -mf16c too (else it would silently take the portable path)"
#elif defined(__AVX2__)
#define JVLM_INT4_X86 1
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define JVLM_INT4_NEON 1
#include <arm_neon.h>
#endif

namespace {

constexpr int64_t BLOCK = 32;  // weights per scale
constexpr int64_t TILE = 8;     // blocks per tile of the layout: 256 weights, 128 bytes
constexpr int MT_MAX = 4;       // activation rows sharing one pass over a weight row
// Bytes of packed weights requested (into L2) ahead of their use: the kernel spends more
// instructions per byte than the bf16 one, so the out-of-order window alone keeps too few
// reads in flight (on Zen 4, 2 threads: one row 24-30 -> 27-29 GB/s, four rows 12-16 -> 18-20).
constexpr int64_t AHEAD = 4096;

// Activation rows rounded to int8 per block of 32, in the weights' tile order: per tile and
// 4-byte piece c, 32 bytes pairing with the low nibbles (lane L: weights 4c..4c+3 of block
// L) and 32 with the high nibbles (weights 16+4c..16+4c+3). A short last tile is padded
// with zero blocks, so every tile is read in full.
struct QuantizedRows {
  int64_t tiles = 0;              // per row, the last one padded
  std::vector<int8_t> q;          // (M, tiles * 256)
  std::vector<float> scale;       // (M, tiles * 8): x ~= scale * q per block
  std::vector<int32_t> offset;    // (M, tiles * 8): 8 * sum(q), the nibbles' +8 times the block
};

// Round to the nearest integer, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves no
// fraction bits. Plain arithmetic, so the compiler vectorizes it (std::nearbyint may be a call).
inline float round_even(float v) { return (v + 12582912.f) - 12582912.f; }

template <typename T>
QuantizedRows quantize_rows(const T* x, int64_t M, int64_t K) {
  QuantizedRows a;
  const int64_t G = K / BLOCK;
  a.tiles = (G + TILE - 1) / TILE;
  a.q.assign(M * a.tiles * TILE * BLOCK, 0);
  a.scale.assign(M * a.tiles * TILE, 0.f);
  a.offset.assign(M * a.tiles * TILE, 0);
  at::parallel_for(0, M * G, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t m = i / G, g = i % G;
      const T* xs = x + m * K + g * BLOCK;
      float v[BLOCK], amax = 0.f;
      for (int k = 0; k < BLOCK; ++k) v[k] = static_cast<float>(xs[k]);
      float poison = 0.f;  // NaN if the block holds a NaN or an infinity (x * 0), else 0
      for (int k = 0; k < BLOCK; ++k) amax = std::max(amax, std::fabs(v[k])), poison += v[k] * 0.f;
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      int8_t q[BLOCK];
      int32_t sum = 0;
      for (int k = 0; k < BLOCK; ++k) {
        q[k] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, round_even(v[k] * inv))));
        sum += q[k];
      }
      // Weights 4c..4c+3 (h = 0) and 16+4c..16+4c+3 (h = 1) of block g % 8 of its tile.
      int8_t* tile = a.q.data() + (m * a.tiles + g / TILE) * TILE * BLOCK + 4 * (g % TILE);
      for (int c = 0; c < 4; ++c)
        for (int h = 0; h < 2; ++h) std::copy(q + 16 * h + 4 * c, q + 16 * h + 4 * c + 4, tile + (2 * c + h) * 32);
      a.scale[m * a.tiles * TILE + g] = amax / 127.f + poison;  // non-finite input -> NaN output
      a.offset[m * a.tiles * TILE + g] = 8 * sum;
    }
  });
  return a;
}

template <typename T> inline void store(T* y, float v);
template <> inline void store<float>(float* y, float v) { *y = v; }
template <> inline void store<c10::BFloat16>(c10::BFloat16* y, float v) { *y = c10::BFloat16(v); }

// One activation row's view of QuantizedRows, from a given tile on.
struct RowView {
  const int8_t* q;        // 256 bytes per tile
  const float* scale;     // 8 per tile
  const int32_t* offset;  // 8 per tile
};

#if defined(JVLM_INT4_X86)

// Per activation row: 8 float lanes, lane L summing block L of every tile.
struct Acc {
  __m256 v;
  Acc() : v(_mm256_setzero_ps()) {}
  float total() const {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

// One tile (p: 128 bytes, sp: 8 float16 scales) times MT activation rows (tile t of each).
// Piece by piece, the nibbles are unpacked once (a load, an AND, a shift and an AND) and
// multiplied into each activation row's block sums, lane L = block L; per row, those 8 sums
// are then corrected for the +8, converted, and scaled by (weight scale * activation scale)
// in one fused multiply-add. Integer sums are exact, so their order does not matter.
template <int MT>
inline void tile_step(const uint8_t* p, const uint16_t* sp, const RowView* rows, int64_t t, Acc* acc) {
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  __m256i sums[MT];  // VNNI: int32 block sums; else int16 pair sums (16 products per lane at most)
  for (int c = 0; c < 4; ++c) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * c));
    const __m256i lo = _mm256_and_si256(b, nibble), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), nibble);
    for (int m = 0; m < MT; ++m) {
      const __m256i* xq = reinterpret_cast<const __m256i*>(rows[m].q + t * TILE * BLOCK) + 2 * c;
      const __m256i x0 = _mm256_loadu_si256(xq), x1 = _mm256_loadu_si256(xq + 1);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
      sums[m] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(c ? sums[m] : _mm256_setzero_si256(), lo, x0), hi, x1);
#else
      // Each vpmaddubsw lane adds 2 products of at most 15 * 127; 16 per lane in all: no overflow.
      const __m256i pair = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_maddubs_epi16(hi, x1));
      sums[m] = c ? _mm256_add_epi16(sums[m], pair) : pair;
#endif
    }
  }
  const __m256 wscale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp)));
  for (int m = 0; m < MT; ++m) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    __m256i s32 = sums[m];
#else
    __m256i s32 = _mm256_madd_epi16(sums[m], _mm256_set1_epi16(1));
#endif
    s32 = _mm256_sub_epi32(s32, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[m].offset + t * TILE)));
    const __m256 scale = _mm256_mul_ps(wscale, _mm256_loadu_ps(rows[m].scale + t * TILE));
    acc[m].v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), scale, acc[m].v);
  }
}

#else  // NEON or portable C++: the same tile order, 8 int32 block sums per tile

#if defined(JVLM_INT4_NEON)
// The 8 block sums of one tile: products of its nibbles with the activations x.
inline void tile_sums(const uint8_t* p, const int8_t* x, int32_t out[TILE]) {
  const uint8x16_t nibble = vdupq_n_u8(0x0F);
#if defined(__ARM_FEATURE_DOTPROD)
  int32x4_t s0 = vdupq_n_s32(0), s1 = vdupq_n_s32(0);  // blocks 0..3 and 4..7
  for (int c = 0; c < 4; ++c) {
    const uint8x16_t b0 = vld1q_u8(p + 32 * c), b1 = vld1q_u8(p + 32 * c + 16);
    const int8_t* xl = x + 64 * c;  // low-nibble partners, then high-nibble partners
    s0 = vdotq_s32(s0, vreinterpretq_s8_u8(vandq_u8(b0, nibble)), vld1q_s8(xl));
    s1 = vdotq_s32(s1, vreinterpretq_s8_u8(vandq_u8(b1, nibble)), vld1q_s8(xl + 16));
    s0 = vdotq_s32(s0, vreinterpretq_s8_u8(vshrq_n_u8(b0, 4)), vld1q_s8(xl + 32));
    s1 = vdotq_s32(s1, vreinterpretq_s8_u8(vshrq_n_u8(b1, 4)), vld1q_s8(xl + 48));
  }
#else
  // int16 lanes take 8 products each (2 per piece), at most 8 * 15 * 127: no overflow.
  int16x8_t p01 = vdupq_n_s16(0), p23 = vdupq_n_s16(0), p45 = vdupq_n_s16(0), p67 = vdupq_n_s16(0);
  for (int c = 0; c < 4; ++c) {
    const uint8x16_t b0 = vld1q_u8(p + 32 * c), b1 = vld1q_u8(p + 32 * c + 16);
    const int8_t* xl = x + 64 * c;
    const int8x16_t lo0 = vreinterpretq_s8_u8(vandq_u8(b0, nibble)), lo1 = vreinterpretq_s8_u8(vandq_u8(b1, nibble));
    const int8x16_t hi0 = vreinterpretq_s8_u8(vshrq_n_u8(b0, 4)), hi1 = vreinterpretq_s8_u8(vshrq_n_u8(b1, 4));
    const int8x16_t x0 = vld1q_s8(xl), x1 = vld1q_s8(xl + 16), x2 = vld1q_s8(xl + 32), x3 = vld1q_s8(xl + 48);
    p01 = vmlal_s8(vmlal_s8(p01, vget_low_s8(lo0), vget_low_s8(x0)), vget_low_s8(hi0), vget_low_s8(x2));
    p23 = vmlal_high_s8(vmlal_high_s8(p23, lo0, x0), hi0, x2);
    p45 = vmlal_s8(vmlal_s8(p45, vget_low_s8(lo1), vget_low_s8(x1)), vget_low_s8(hi1), vget_low_s8(x3));
    p67 = vmlal_high_s8(vmlal_high_s8(p67, lo1, x1), hi1, x3);
  }
  const int32x4_t s0 = vpaddq_s32(vpaddlq_s16(p01), vpaddlq_s16(p23));
  const int32x4_t s1 = vpaddq_s32(vpaddlq_s16(p45), vpaddlq_s16(p67));
#endif
  vst1q_s32(out, s0);
  vst1q_s32(out + 4, s1);
}
#else
inline void tile_sums(const uint8_t* p, const int8_t* x, int32_t out[TILE]) {
  for (int L = 0; L < TILE; ++L) out[L] = 0;
  for (int c = 0; c < 4; ++c)
    for (int L = 0; L < TILE; ++L)
      for (int i = 0; i < 4; ++i) {
        const uint8_t b = p[32 * c + 4 * L + i];
        out[L] += (b & 0x0F) * x[64 * c + 4 * L + i] + (b >> 4) * x[64 * c + 32 + 4 * L + i];
      }
}
#endif

struct Acc {
  float v[TILE] = {};
  float total() const {
    float s = 0.f;
    for (int L = 0; L < TILE; ++L) s += v[L];
    return s;
  }
};

template <int MT>
inline void tile_step(const uint8_t* p, const uint16_t* sp, const RowView* rows, int64_t t, Acc* acc) {
  float wscale[TILE];
  for (int L = 0; L < TILE; ++L) wscale[L] = static_cast<float>(c10::Half(sp[L], c10::Half::from_bits()));
  for (int m = 0; m < MT; ++m) {
    int32_t sums[TILE];
    tile_sums(p, rows[m].q + t * TILE * BLOCK, sums);
    const float* xs = rows[m].scale + t * TILE;
    const int32_t* xo = rows[m].offset + t * TILE;
    for (int L = 0; L < TILE; ++L)
      acc[m].v[L] = std::fma(static_cast<float>(sums[L] - xo[L]), wscale[L] * xs[L], acc[m].v[L]);
  }
}

#endif

// Rows n0..n1 of W times activation rows m0..m0+MT-1: the full tiles straight from W, then a
// short last tile through a zero-padded copy (padding blocks get zero scales: they add 0).
template <int MT, typename OUT>
void int4_rows(const QuantizedRows& a, int64_t m0, const uint8_t* w, const uint16_t* ws, const float* bias,
               OUT* y, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const int64_t G = K / BLOCK, T = a.tiles, full = G / TILE, b = G % TILE;
  RowView rows[MT];
  for (int m = 0; m < MT; ++m)
    rows[m] = {a.q.data() + (m0 + m) * T * TILE * BLOCK, a.scale.data() + (m0 + m) * T * TILE,
               a.offset.data() + (m0 + m) * T * TILE};
  alignas(32) uint8_t buf[TILE * BLOCK / 2];
  alignas(16) uint16_t sbuf[TILE];
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* wr = w + n * (K / 2);
    const uint16_t* sr = ws + n * G;
    Acc acc[MT];
    for (int64_t t = 0; t < full; ++t) {
      const uint8_t* p = wr + t * TILE * BLOCK / 2;
      __builtin_prefetch(p + AHEAD, 0, 2), __builtin_prefetch(p + AHEAD + 64, 0, 2);
      if (t % 4 == 0) __builtin_prefetch(sr + t * TILE + AHEAD / 8, 0, 2);  // a line of scales per 4 tiles
      tile_step<MT>(p, sr + t * TILE, rows, t, acc);
    }
    if (b) {
      std::fill(buf, buf + TILE * BLOCK / 2, 0);
      std::fill(sbuf, sbuf + TILE, 0);
      const uint8_t* p = wr + full * TILE * BLOCK / 2;
      for (int c = 0; c < 4; ++c) std::copy(p + c * 4 * b, p + (c + 1) * 4 * b, buf + c * 32);
      std::copy(sr + full * TILE, sr + G, sbuf);
      tile_step<MT>(buf, sbuf, rows, full, acc);
    }
    for (int m = 0; m < MT; ++m) store(y + (m0 + m) * N + n, acc[m].total() + (bias ? bias[n] : 0.f));
  }
}

// jvlm::parallel_rows over the N rows of W; within each block of ROW_BLOCK rows, each group of
// at most MT_MAX activation rows makes one pass (the block's weights stay in cache meanwhile).
template <typename F>
void for_rows(int64_t M, int64_t N, F&& block) {
  jvlm::parallel_rows(N, [&](int64_t r0, int64_t r1) {
    for (int64_t n0 = r0; n0 < r1; n0 += jvlm::ROW_BLOCK) {
      const int64_t n1 = std::min(r1, n0 + jvlm::ROW_BLOCK);
      for (int64_t m0 = 0; m0 < M; m0 += MT_MAX) block(m0, (int)std::min<int64_t>(MT_MAX, M - m0), n0, n1);
    }
  });
}

template <typename T>
torch::Tensor run(const torch::Tensor& x, const torch::Tensor& packed, const torch::Tensor& scales,
                  const c10::optional<torch::Tensor>& bias) {
  const int64_t M = x.size(0), K = x.size(1), N = packed.size(0);
  const QuantizedRows a = quantize_rows(reinterpret_cast<const T*>(x.data_ptr()), M, K);
  auto y = torch::empty({M, N}, x.options());
  const auto* wp = packed.data_ptr<uint8_t>();
  const auto* sp = reinterpret_cast<const uint16_t*>(scales.data_ptr());
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  T* yp = reinterpret_cast<T*>(y.data_ptr());
  for_rows(M, N, [&](int64_t m0, int mt, int64_t n0, int64_t n1) {
    switch (mt) {
      case 1: int4_rows<1>(a, m0, wp, sp, bp, yp, K, N, n0, n1); break;
      case 2: int4_rows<2>(a, m0, wp, sp, bp, yp, K, N, n0, n1); break;
      case 3: int4_rows<3>(a, m0, wp, sp, bp, yp, K, N, n0, n1); break;
      default: int4_rows<4>(a, m0, wp, sp, bp, yp, K, N, n0, n1);
    }
  });
  return y;
}

// Rounds to bf16 (nearest, ties to even) without a branch: the weights here are finite.
inline uint16_t bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
inline void put(float* y, float v) { *y = v; }
inline void put(uint16_t* y, float v) { *y = bf16_bits(v); }

// Rows n0..n1 of the weight, level * scale in fp32, each rounded once to OUT (fp32 or bf16
// bits): jvlm/inference/int4.py's dequantize_int4, for prefill's GEMM. Each block's 16 bytes
// are first gathered from its 4-byte pieces, then the plain loops vectorize.
template <typename OUT>
void dequantize_rows(const uint8_t* w, const uint16_t* ws, OUT* y, int64_t K, int64_t n0, int64_t n1) {
  const int64_t G = K / BLOCK, full = G / TILE;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* wr = w + n * (K / 2);
    const uint16_t* sr = ws + n * G;
    OUT* yr = y + n * K;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t t = g / TILE, L = g % TILE, blocks = t < full ? TILE : G - full * TILE;
      const uint8_t* tile = wr + t * TILE * BLOCK / 2;
      uint8_t bytes[BLOCK / 2];
      for (int c = 0; c < 4; ++c) std::memcpy(bytes + 4 * c, tile + 4 * (c * blocks + L), 4);
      const float s = static_cast<float>(c10::Half(sr[g], c10::Half::from_bits()));
      OUT* out = yr + g * BLOCK;
      for (int j = 0; j < BLOCK / 2; ++j) {
        put(out + j, (float)((int)(bytes[j] & 0x0F) - 8) * s);
        put(out + j + BLOCK / 2, (float)((int)(bytes[j] >> 4) - 8) * s);
      }
    }
  }
}

// The weight of the format above: packed uint8 (N, K/2) and float16 scales (N, K/32), contiguous
// CPU tensors, group_size 32. Returns K.
int64_t check_weight(const char* op, const torch::Tensor& packed, const torch::Tensor& scales, int64_t group_size) {
  TORCH_CHECK(group_size == BLOCK, op, " takes group_size 32, got ", group_size);
  TORCH_CHECK(packed.dim() == 2 && scales.dim() == 2, op, ": packed (N, K/2) and scales (N, K/32) expected");
  TORCH_CHECK(packed.scalar_type() == torch::kByte && scales.scalar_type() == torch::kHalf, op,
              ": packed must be uint8 and scales float16");
  TORCH_CHECK(packed.is_contiguous() && scales.is_contiguous() && packed.device().is_cpu() && scales.device().is_cpu(),
              op, ": packed and scales must be contiguous CPU tensors");
  const int64_t K = 2 * packed.size(1);
  TORCH_CHECK(scales.size(0) == packed.size(0) && scales.size(1) * BLOCK == K, op, ": scales ", scales.sizes(),
              " do not match packed ", packed.sizes());
  return K;
}

}  // namespace

// The (N, K) weight of the int4 format in fp32 or bf16 (dtype), for products of many rows.
torch::Tensor dequantize_int4(torch::Tensor packed, torch::Tensor scales, int64_t group_size, c10::ScalarType dtype) {
  const int64_t K = check_weight("dequantize_int4", packed, scales, group_size), N = packed.size(0);
  TORCH_CHECK(dtype == torch::kFloat || dtype == torch::kBFloat16, "dequantize_int4: fp32 or bf16 output");
  auto y = torch::empty({N, K}, packed.options().dtype(dtype));
  const auto* wp = packed.data_ptr<uint8_t>();
  const auto* sp = reinterpret_cast<const uint16_t*>(scales.data_ptr());
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    if (dtype == torch::kFloat) dequantize_rows(wp, sp, y.data_ptr<float>(), K, n0, n1);
    else dequantize_rows(wp, sp, reinterpret_cast<uint16_t*>(y.data_ptr()), K, n0, n1);
  });
  return y;
}

// y (M, N) = x (M, K) @ W.T (+ bias) in x's dtype (bf16 or fp32) for W in the int4 format
// above: packed uint8 (N, K/2), scales float16 (N, K/32), group_size 32, bias fp32 (N,).
torch::Tensor linear_int4(torch::Tensor x, torch::Tensor packed, torch::Tensor scales, int64_t group_size,
                          c10::optional<torch::Tensor> bias) {
  const int64_t K = check_weight("linear_int4", packed, scales, group_size), N = packed.size(0);
  TORCH_CHECK(x.dim() == 2, "linear_int4: x (M, K) expected, got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16, "x must be fp32 or bf16, got ",
              x.scalar_type());
  TORCH_CHECK(x.is_contiguous() && x.device().is_cpu(), "linear_int4: x must be a contiguous CPU tensor");
  TORCH_CHECK(x.size(1) == K, "packed (N, K/2) does not match x's K = ", x.size(1));
  if (bias) {
    TORCH_CHECK(bias->scalar_type() == torch::kFloat && bias->dim() == 1 && bias->size(0) == N && bias->is_contiguous(),
                "bias must be a contiguous fp32 (N,) tensor");
  }
  if (x.scalar_type() == torch::kBFloat16) return run<c10::BFloat16>(x, packed, scales, bias);
  return run<float>(x, packed, scales, bias);
}

// Which code path this build compiled: "avx512-vnni", "avx2", "neon-dotprod", "neon" or "portable".
std::string linear_int4_isa() {
#if defined(JVLM_INT4_X86) && defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return "avx512-vnni";
#elif defined(JVLM_INT4_X86)
  return "avx2";
#elif defined(JVLM_INT4_NEON) && defined(__ARM_FEATURE_DOTPROD)
  return "neon-dotprod";
#elif defined(JVLM_INT4_NEON)
  return "neon";
#else
  return "portable";
#endif
}

JVLM_EXPORT(linear_int4, "y = x @ W.T (+ bias), group-wise int4 weights, few rows");
JVLM_EXPORT(dequantize_int4, "the (N, K) weight of the int4 format in fp32 or bf16, for products of many rows");
JVLM_EXPORT(linear_int4_isa, "the code path this build of linear_int4 compiled");
