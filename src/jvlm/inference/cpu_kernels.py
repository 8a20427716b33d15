"""Decode-step matrix-vector kernels for x86 CPUs with AVX-512 BF16 and VNNI.

Generating a token multiplies a few activation rows by every decoder weight once, so the
time is the time to stream the weights from memory. PyTorch's bf16 matrix-vector path
reaches about half of this machine's read bandwidth; these kernels stream each weight row
once, keep the activation rows in registers and do all arithmetic in fused instructions:

* ``linear_bf16``: bf16 weights, ``vdpbf16ps`` (32 multiply-adds per instruction, fp32 sums).
* ``linear_int8``: int8 weights with one scale per output row; activations are quantized per
  row to int16 (15 bits: about 100x finer than bf16's 8-bit mantissa, so the error is the
  weights' alone) and multiplied with ``vpdpwssd`` (VNNI), int32 sums.

Each output element is summed in the same order whatever the number of rows, so a request
gets bit-identical logits alone or in a batch.

The C++ source is compiled on first use with the local compiler (about a minute, cached by
PyTorch under ``~/.cache/torch_extensions``). ``available()`` never compiles; ``load()`` does,
and returns None (with a log message) when the CPU lacks the instructions or no compiler is
present, in which case callers keep PyTorch's own kernels.
"""

from __future__ import annotations

import functools
import logging
import platform
import time

log = logging.getLogger(__name__)

#: Kernels handle up to this many activation rows (decode batches); more go to PyTorch.
MAX_ROWS = 16
_NAME = "jvlm_cpu_kernels_v4"  # PyTorch rebuilds when the source changes; the name only groups builds
_REQUIRED_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni")

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <c10/util/BFloat16.h>
#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// Each weight row is read as one linear stream (the hardware prefetcher's best case) and
// multiplied by up to MT activation rows; U independent accumulators per activation row hide
// the latency of the fused multiply-add. The chunk -> accumulator assignment depends only on
// k, so a row's result does not depend on how many activation rows share the pass.
constexpr int U = 4;
constexpr int MT_MAX = 4;

template <typename T> inline void store(T* y, float v);
template <> inline void store<float>(float* y, float v) { *y = v; }
template <> inline void store<c10::BFloat16>(c10::BFloat16* y, float v) { *y = c10::BFloat16(v); }

// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for rows n0..n1 of W; bf16 x and w.
template <int MT, typename OUT>
void bf16_rows(const uint16_t* x, const uint16_t* w, const float* bias, OUT* y,
               int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const int64_t k_main = K - K % (32 * U);
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* wr = w + n * K;
    __m512 acc[MT][U];
    for (int m = 0; m < MT; ++m)
      for (int u = 0; u < U; ++u) acc[m][u] = _mm512_setzero_ps();
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
    for (int m = 0; m < MT; ++m) {
      __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[m][0], acc[m][1]), _mm512_add_ps(acc[m][2], acc[m][3]));
      store(y + m * N + n, _mm512_reduce_add_ps(sum) + (bias ? bias[n] : 0.f));
    }
  }
}

// The same with int8 weights (scale per row) and int16 activations (scale per activation row);
// int32 sums are exact, so here the result is independent of everything but the inputs.
template <int MT, typename OUT>
void int8_rows(const int16_t* x, const float* xs, const int8_t* w, const float* ws, const float* bias,
               OUT* y, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const int64_t k_main = K - K % (32 * U);
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* wr = w + n * K;
    __m512i acc[MT][U];
    for (int m = 0; m < MT; ++m)
      for (int u = 0; u < U; ++u) acc[m][u] = _mm512_setzero_si512();
    for (int64_t k = 0; k < k_main; k += 32 * U) {
      __m512i wv[U];
      for (int u = 0; u < U; ++u)
        wv[u] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)(wr + k + 32 * u)));
      for (int m = 0; m < MT; ++m)
        for (int u = 0; u < U; ++u)
          acc[m][u] = _mm512_dpwssd_epi32(acc[m][u], _mm512_loadu_si512(x + m * K + k + 32 * u), wv[u]);
    }
    for (int64_t k = k_main; k < K; k += 32) {
      const int64_t left = K - k;
      const __mmask32 mask = left >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
      const __m512i wv = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask, wr + k));
      for (int m = 0; m < MT; ++m)
        acc[m][0] = _mm512_dpwssd_epi32(acc[m][0], _mm512_maskz_loadu_epi16(mask, x + m * K + k), wv);
    }
    for (int m = 0; m < MT; ++m) {
      // Lanes are summed as floats: the total of K products may exceed int32, one lane cannot.
      __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_cvtepi32_ps(acc[m][0]), _mm512_cvtepi32_ps(acc[m][1])),
                                 _mm512_add_ps(_mm512_cvtepi32_ps(acc[m][2]), _mm512_cvtepi32_ps(acc[m][3])));
      const float dot = _mm512_reduce_add_ps(sum);
      store(y + m * N + n, dot * xs[m] * ws[n] + (bias ? bias[n] : 0.f));
    }
  }
}

// Split the N rows of W over threads in blocks; within a block, run `block(m0, mt, n0, n1)`
// for each group of at most MT_MAX activation rows (the weight rows stay in L1/L2 meanwhile).
template <typename F>
void for_rows(int64_t M, int64_t N, F&& block) {
  const int64_t unit = 16;
  at::parallel_for(0, (N + unit - 1) / unit, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t n0 = b0 * unit; n0 < std::min(N, b1 * unit); n0 += unit) {
      const int64_t n1 = std::min(N, n0 + unit);
      for (int64_t m0 = 0; m0 < M; m0 += MT_MAX) block(m0, (int)std::min<int64_t>(MT_MAX, M - m0), n0, n1);
    }
  });
}

#define JVLM_DISPATCH_MT(mt, CALL) \
  switch (mt) { case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break; default: CALL(4); }

void check_common(const torch::Tensor& x, const torch::Tensor& w, const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "x (M, K) and w (N, K) expected");
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous(), "x and w must be contiguous");
  if (bias) TORCH_CHECK(bias->scalar_type() == torch::kFloat && bias->numel() == w.size(0), "fp32 bias (N,)");
}

}  // namespace

torch::Tensor linear_bf16(torch::Tensor x, torch::Tensor w, c10::optional<torch::Tensor> bias) {
  check_common(x, w, bias);
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && w.scalar_type() == torch::kBFloat16, "bf16 x and w expected");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr());
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  auto* yp = y.data_ptr<c10::BFloat16>();
  for_rows(M, N, [&](int64_t m0, int mt, int64_t n0, int64_t n1) {
#define JVLM_CALL(MT) bf16_rows<MT>(xp + m0 * K, wp, bp, yp + m0 * N, K, N, n0, n1)
    JVLM_DISPATCH_MT(mt, JVLM_CALL)
#undef JVLM_CALL
  });
  return y;
}

torch::Tensor linear_int8(torch::Tensor x, torch::Tensor w, torch::Tensor w_scales, c10::optional<torch::Tensor> bias) {
  check_common(x, w, bias);
  TORCH_CHECK(w.scalar_type() == torch::kChar, "int8 w expected");
  TORCH_CHECK(w_scales.scalar_type() == torch::kFloat && w_scales.numel() == w.size(0), "fp32 scales (N,)");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  // Per-row int16 activations. One int32 lane sums 2 products per 128 values of K (plus up to
  // 6 in the tail); the bound keeps that sum of |x| * 127 terms in range.
  const double per_lane = 2.0 * std::ceil(K / 128.0) + 6.0;
  const float qmax = (float)std::min(32767.0, std::floor(2147483647.0 / (127.0 * per_lane)));
  auto xf = x.to(torch::kFloat).contiguous();
  auto xq = torch::empty({M, K}, x.options().dtype(torch::kShort));
  std::vector<float> xs(M);
  for (int64_t m = 0; m < M; ++m) {
    const float* row = xf.data_ptr<float>() + m * K;
    float amax = 0.f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
    const float scale = amax > 0.f ? amax / qmax : 1.f;
    xs[m] = scale;
    int16_t* q = xq.data_ptr<int16_t>() + m * K;
    for (int64_t k = 0; k < K; ++k) q[k] = (int16_t)std::nearbyint(row[k] / scale);
  }
  auto y = torch::empty({M, N}, x.options());
  const int16_t* xp = xq.data_ptr<int16_t>();
  const int8_t* wp = w.data_ptr<int8_t>();
  const float* sp = w_scales.data_ptr<float>();
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  auto run = [&](auto* yp) {
    for_rows(M, N, [&](int64_t m0, int mt, int64_t n0, int64_t n1) {
#define JVLM_CALL(MT) int8_rows<MT>(xp + m0 * K, xs.data() + m0, wp, sp, bp, yp + m0 * N, K, N, n0, n1)
      JVLM_DISPATCH_MT(mt, JVLM_CALL)
#undef JVLM_CALL
    });
  };
  if (x.scalar_type() == torch::kBFloat16) run(y.data_ptr<c10::BFloat16>());
  else { TORCH_CHECK(x.scalar_type() == torch::kFloat, "bf16 or fp32 x expected"); run(y.data_ptr<float>()); }
  return y;
}

namespace {

inline __m512 bf16x16(const uint16_t* p) {  // 16 bf16 -> 16 fp32 (bf16 is the top half of fp32)
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}

// One batch row and KV head: the G query heads of its group against S cached keys.
// Scores use vdpbf16ps on the bf16 q and k as stored (no rounding beyond the inputs'),
// scaled in fp32; probabilities and the weighted sum of V stay fp32, in registers.
template <int ND, int G>
void attend_group(const uint16_t* q, const uint16_t* kb, int64_t ks, const uint16_t* vb, int64_t vs,
                  const bool* mask, int64_t S, float scale, float* scores, c10::BFloat16* out, int64_t out_stride) {
  constexpr int D = ND * 16, NC = (D + 31) / 32;
  constexpr __mmask32 last = D % 32 ? (__mmask32)0xFFFF : (__mmask32)0xFFFFFFFF;
  __m512i qv[G][NC];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < NC; ++c) qv[g][c] = _mm512_maskz_loadu_epi16(c == NC - 1 ? last : 0xFFFFFFFF, q + g * D + 32 * c);
  float mx[G], total[G];
  for (int g = 0; g < G; ++g) mx[g] = -INFINITY, total[g] = 0.f;
  for (int64_t s = 0; s < S; ++s) {
    if (mask && !mask[s]) {
      for (int g = 0; g < G; ++g) scores[g * S + s] = -INFINITY;
      continue;
    }
    const uint16_t* kr = kb + s * ks;
    __m512i kv[NC];
    for (int c = 0; c < NC; ++c) kv[c] = _mm512_maskz_loadu_epi16(c == NC - 1 ? last : 0xFFFFFFFF, kr + 32 * c);
    for (int g = 0; g < G; ++g) {
      __m512 a = _mm512_setzero_ps();
      for (int c = 0; c < NC; ++c) a = _mm512_dpbf16_ps(a, (__m512bh)qv[g][c], (__m512bh)kv[c]);
      const float sc = _mm512_reduce_add_ps(a) * scale;
      scores[g * S + s] = sc;
      mx[g] = std::max(mx[g], sc);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int64_t s = 0; s < S; ++s) {
      const float e = scores[g * S + s] == -INFINITY ? 0.f : std::exp(scores[g * S + s] - mx[g]);
      scores[g * S + s] = e;
      total[g] += e;
    }
  __m512 acc[G][ND];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < ND; ++j) acc[g][j] = _mm512_setzero_ps();
  for (int64_t s = 0; s < S; ++s) {
    if (mask && !mask[s]) continue;
    const uint16_t* vr = vb + s * vs;
    __m512 p[G];
    for (int g = 0; g < G; ++g) p[g] = _mm512_set1_ps(scores[g * S + s]);
    for (int j = 0; j < ND; ++j) {
      const __m512 vv = bf16x16(vr + 16 * j);
      for (int g = 0; g < G; ++g) acc[g][j] = _mm512_fmadd_ps(p[g], vv, acc[g][j]);
    }
  }
  for (int g = 0; g < G; ++g) {
    const float inv = total[g] > 0.f ? 1.f / total[g] : 0.f;
    alignas(64) float buf[16];
    for (int j = 0; j < ND; ++j) {
      _mm512_store_ps(buf, _mm512_mul_ps(acc[g][j], _mm512_set1_ps(inv)));
      for (int d = 0; d < 16; ++d) out[g * out_stride + 16 * j + d] = c10::BFloat16(buf[d]);
    }
  }
}

}  // namespace

// One query token against the KV cache (decoding): out (B, H, D) from q (B, H, D) and
// k, v (B, KV, S, D) with any stride over B, KV and S (cache views). Grouped-query: heads
// h = kv * G + g share kv head `kv`, so each K/V row is read once for all G heads.
// `mask` (B, S) bool, true = attend. D a multiple of 16 up to 128; G of 1, 2 or 4.
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                               c10::optional<torch::Tensor> mask, double scale) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 4 && v.dim() == 4, "q (B, H, D), k and v (B, KV, S, D) expected");
  TORCH_CHECK(q.scalar_type() == torch::kBFloat16 && k.scalar_type() == torch::kBFloat16 &&
              v.scalar_type() == torch::kBFloat16, "bf16 q, k, v expected");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), KV = k.size(1), S = k.size(2);
  TORCH_CHECK(H % KV == 0 && k.stride(3) == 1 && v.stride(3) == 1, "unsupported layout");
  const int64_t G = H / KV, ND = D / 16;
  TORCH_CHECK(D % 16 == 0 && (ND == 1 || ND == 2 || ND == 4 || ND == 8) && (G == 1 || G == 2 || G == 4),
              "head_dim must be 16, 32, 64 or 128 and heads per KV head 1, 2 or 4");
  auto qc = q.contiguous();
  auto out = torch::empty({B, H, D}, q.options());
  torch::Tensor m;
  if (mask) { m = mask->to(torch::kBool).contiguous(); TORCH_CHECK(m.numel() == B * S, "mask (B, S) expected"); }
  const bool* mp = mask ? m.data_ptr<bool>() : nullptr;
  const auto* qp = reinterpret_cast<const uint16_t*>(qc.data_ptr());
  const auto* kp = reinterpret_cast<const uint16_t*>(k.data_ptr());
  const auto* vp = reinterpret_cast<const uint16_t*>(v.data_ptr());
  auto* op = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, B * KV, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(G * S);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / KV, kv = i % KV;
      const uint16_t* qg = qp + (b * H + kv * G) * D;
      const uint16_t* kb = kp + b * k.stride(0) + kv * k.stride(1);
      const uint16_t* vb = vp + b * v.stride(0) + kv * v.stride(1);
      const bool* mrow = mp ? mp + b * S : nullptr;
      c10::BFloat16* og = op + (b * H + kv * G) * D;
#define JVLM_ATTEND(nd, g) attend_group<nd, g>(qg, kb, k.stride(2), vb, v.stride(2), mrow, S, (float)scale, scores.data(), og, D)
#define JVLM_G(nd) if (G == 1) JVLM_ATTEND(nd, 1); else if (G == 2) JVLM_ATTEND(nd, 2); else JVLM_ATTEND(nd, 4);
      if (ND == 1) { JVLM_G(1) } else if (ND == 2) { JVLM_G(2) } else if (ND == 4) { JVLM_G(4) } else { JVLM_G(8) }
#undef JVLM_G
#undef JVLM_ATTEND
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "softmax(q k^T * scale) v for one query token, bf16 KV cache");
  m.def("linear_bf16", &linear_bf16, "y = x @ w.T (+ bias), bf16, few rows");
  m.def("linear_int8", &linear_int8, "y = x @ (w * scales).T (+ bias), int8 weights, few rows");
}
"""


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def available() -> bool:
    """Whether this CPU has the instructions (does not compile anything)."""
    return platform.machine() in ("x86_64", "AMD64") and all(f in cpu_flags() for f in _REQUIRED_FLAGS)


@functools.lru_cache(maxsize=1)
def load():
    """The compiled extension, building it on first use; None when it cannot be used here."""
    if not available():
        log.info("CPU decode kernels need AVX-512 BF16 and VNNI; using PyTorch's kernels")
        return None
    log.info("loading the CPU decode kernels (compiled on first use, about a minute)")
    try:
        from torch.utils.cpp_extension import load_inline

        t0 = time.perf_counter()
        ext = load_inline(name=_NAME, cpp_sources=[_SOURCE], functions=None,
                           extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
                           verbose=False)
        if time.perf_counter() - t0 > 5:
            log.warning("compiled the CPU decode kernels in %.0f s (cached for next time)", time.perf_counter() - t0)
        return ext
    except Exception as e:  # noqa: BLE001 - no compiler, no headers, odd toolchain: fall back
        log.warning("could not build the CPU decode kernels (%s); using PyTorch's kernels", str(e).splitlines()[0])
        return None
