// Checks the torch-free kernel cores against a scalar double-precision reference.
//
// Built for one instruction set (-DJVLM_ISA_NEON, -DJVLM_ISA_AVX2 or -DJVLM_ISA_AVX512 with its
// -m flags); tests/test_decode_kernels.py cross-compiles it for aarch64 and runs it under
// qemu, which is how the NEON path is checked on x86 machines. Prints one line per failure
// and exits non-zero if there was any.
#include <cstdio>
#include <vector>

#include "attention_core.h"
#include "linear_core.h"

using jvlm::bf16;

namespace {

int failures = 0, checks = 0;

void expect(bool ok, const char* what, int a, int b, int c, double got, double want) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s (%d, %d, %d): got %.7g, want %.7g\n", what, a, b, c, got, want);
  }
}

uint64_t state = 88172645463325252ull;
float uniform() {  // in [-1, 1), reproducible on every platform
  state ^= state << 13, state ^= state >> 7, state ^= state << 17;
  return (float)((state >> 11) * (1.0 / 9007199254740992.0)) * 2.f - 1.f;
}
bf16 to_bf16(float v) {
  bf16 b;
  jvlm::store(&b, v);
  return b;
}

// fp32 and bf16 x against bf16 weights; int8 weights; every row alone equals it in the batch.
void check_linear(int M, int K, int N) {
  std::vector<float> x(M * K), bias(N), ws(N);
  std::vector<bf16> w(N * K);
  std::vector<int8_t> w8(N * K);
  for (auto& v : x) v = uniform();
  for (auto& v : w) v = to_bf16(0.1f * uniform());
  for (auto& v : w8) v = (int8_t)(127 * uniform());
  for (int n = 0; n < N; ++n) bias[n] = uniform(), ws[n] = 0.01f * (1 + n % 3);
  std::vector<float> y(M * N), y1(N), y8(M * N), y81(N);
  jvlm::linear_f32(x.data(), M, K, w.data(), bias.data(), y.data(), N, 0, N);
  std::vector<int16_t> xq(M * K);
  std::vector<float> xs(M);
  const float qmax = jvlm::int8_activation_qmax(K);
  for (int m = 0; m < M; ++m) xs[m] = jvlm::quantize_row(x.data() + m * K, K, qmax, xq.data() + m * K);
  jvlm::linear_i8(xq.data(), xs.data(), M, K, w8.data(), ws.data(), bias.data(), y8.data(), N, 0, N);
  std::vector<bf16> yb(M * N);
  jvlm::linear_f32(x.data(), M, K, w.data(), bias.data(), yb.data(), N, 0, N);
  for (int m = 0; m < M; ++m) {
    jvlm::linear_f32(x.data() + m * K, 1, K, w.data(), bias.data(), y1.data(), N, 0, N);
    jvlm::linear_i8(xq.data() + m * K, xs.data() + m, 1, K, w8.data(), ws.data(), bias.data(), y81.data(), N, 0, N);
    for (int n = 0; n < N; ++n) {
      double ref = bias[n], ref8 = bias[n], mag = 0, mag8 = 0;
      for (int k = 0; k < K; ++k) {
        const double xv = x[m * K + k], wv = jvlm::to_float(w[n * K + k]), w8v = (double)w8[n * K + k] * ws[n];
        ref += xv * wv, ref8 += xv * w8v, mag += std::fabs(xv * wv), mag8 += std::fabs(xv * w8v);
      }
      const double got = y[m * N + n], got8 = y8[m * N + n], gotb = jvlm::to_float(yb[m * N + n]);
      expect(std::fabs(got - ref) <= 1e-5 * (mag + 1), "linear fp32", M, K, N, got, ref);
      expect(std::fabs(gotb - got) <= 4e-3 * std::fabs(got), "linear bf16 out", M, K, N, gotb, got);
      // int16 activations: rounding of x by at most half of amax / qmax per element
      expect(std::fabs(got8 - ref8) <= 1e-3 * (mag8 + 1), "linear int8", M, K, N, got8, ref8);
      expect(y1[n] == y[m * N + n], "linear fp32 alone == batched", M, K, N, y1[n], y[m * N + n]);
      expect(y81[n] == y8[m * N + n], "linear int8 alone == batched", M, K, N, y81[n], y8[m * N + n]);
    }
  }
}

// One group of G heads over S cached rows (strided, part masked) against softmax in double.
template <typename T>
void check_attention(int D, int G, int S) {
  const int stride = D + 8;  // cache rows longer than head_dim, as in a cache view
  std::vector<T> q(G * D), k(S * stride), v(S * stride), out(G * D);
  bool mask[512];  // S <= 512 below
  T* all[] = {q.data(), k.data(), v.data()};
  const size_t sizes[] = {q.size(), k.size(), v.size()};
  for (int t = 0; t < 3; ++t)
    for (size_t i = 0; i < sizes[t]; ++i) {
      const float r = uniform();
      if constexpr (std::is_same<T, float>::value) all[t][i] = r;
      else all[t][i] = to_bf16(r);
    }
  for (int s = 0; s < S; ++s) mask[s] = s >= S / 4;  // left padding
  std::vector<float> scores(G * S);
  const float scale = 1.f / std::sqrt((float)D);
  jvlm::attend<T>(D, G, q.data(), k.data(), stride, v.data(), stride, mask, S, scale, scores.data(), out.data());
  for (int g = 0; g < G; ++g) {
    std::vector<double> p(S, 0.0);
    double mx = -1e300, total = 0;
    for (int s = 0; s < S; ++s) {
      if (!mask[s]) continue;
      double dot = 0;
      for (int d = 0; d < D; ++d) dot += (double)jvlm::to_float(q[g * D + d]) * jvlm::to_float(k[s * stride + d]);
      p[s] = dot * scale, mx = std::max(mx, p[s]);
    }
    for (int s = 0; s < S; ++s) total += mask[s] ? (p[s] = std::exp(p[s] - mx)) : 0.0;
    for (int d = 0; d < D; ++d) {
      double ref = 0;
      for (int s = 0; s < S; ++s) ref += mask[s] ? p[s] / total * jvlm::to_float(v[s * stride + d]) : 0.0;
      const double got = jvlm::to_float(out[g * D + d]);
      const double tol = std::is_same<T, float>::value ? 1e-5 : 8e-3;
      expect(std::fabs(got - ref) <= tol * (std::fabs(ref) + 0.05), "attention", D, G, S, got, ref);
    }
  }
}

}  // namespace

int main() {
  for (int M : {1, 2, 3, 4, 5, 16})
    for (int K : {1, 3, 77, 128, 2048 + 37}) check_linear(M, K, 19);
  for (int D : {16, 32, 64, 128})
    for (int G : {1, 2, 4, 8}) {
      check_attention<float>(D, G, 37);
      check_attention<bf16>(D, G, 300);
    }
  std::printf("%d of %d checks failed\n", failures, checks);
  return failures ? 1 : 0;
}
