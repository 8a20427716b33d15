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
#include "step_core.h"

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

// Vector bf16 rounding equals the scalar one (torch's) on ties, overflow, NaN, infinities and
// denormals; vexp is within 2 ulp of exp on [-87, 88].
void check_rounding_and_exp() {
  const float specials[] = {1.00390625f, 1.01171875f, -1.00390625f, 3.3961514e38f, -3.3961514e38f, INFINITY,
                            -INFINITY, NAN, 1e-40f, -1e-40f, 0.f, -0.f, 65504.f, 1.f / 3.f};
  constexpr int n = sizeof(specials) / sizeof(float);
  float lanes[jvlm::VL];
  bf16 vec[jvlm::VL];
  for (int i = 0; i < n; ++i) {
    for (int l = 0; l < jvlm::VL; ++l) lanes[l] = specials[(i + l) % n];
    jvlm::vstore(vec, jvlm::vload(lanes));
    for (int l = 0; l < jvlm::VL; ++l)
      expect(vec[l].bits == to_bf16(lanes[l]).bits, "vstore bf16", i, l, 0, vec[l].bits, to_bf16(lanes[l]).bits);
  }
  for (int i = 0; i < 4000; ++i) {
    for (int l = 0; l < jvlm::VL; ++l) lanes[l] = 87.f * uniform() + (i % 2 ? 0.999f : 0.f);
    float out[jvlm::VL];
    jvlm::vstore(out, jvlm::vexp(jvlm::vload(lanes)));
    for (int l = 0; l < jvlm::VL; ++l) {
      const double want = std::exp((double)lanes[l]);
      expect(std::fabs(out[l] - want) <= 2.4e-7 * want, "vexp", i, l, 0, out[l], want);
    }
  }
  const float below[] = {-87.5f, -100.f, -INFINITY, NAN};  // 0: under fp32's normal range, or no number
  for (int i = 0; i < 4; ++i) {
    for (int l = 0; l < jvlm::VL; ++l) lanes[l] = below[i];
    float out[jvlm::VL];
    jvlm::vstore(out, jvlm::vexp(jvlm::vload(lanes)));
    expect(out[0] == 0.f, "vexp below -87", i, 0, 0, out[0], 0.0);
  }
}

template <typename T>
float rnd(float v) {  // to T and back, as a torch operation in T rounds its result
  T t;
  jvlm::store(&t, v);
  return jvlm::to_float(t);
}

// Norms, SiLU gate and the q/k head (bias, norm, rotary) against the same roundings written
// out scalar, with sums in double: equal up to the last bit of the sums.
template <typename T>
void check_step(int D) {
  const double ulp = std::is_same<T, float>::value ? 4e-7 : 1.6e-2;  // ~2 units in the last place
  std::vector<T> x(D), y(D), w(D), bias(D), c(D), s(D), out(D), tmp(D), u(2 * D), g(D);
  auto fill = [](std::vector<T>& v, float scale, float offset) {
    for (auto& e : v) jvlm::store(&e, scale * uniform() + offset);
  };
  fill(x, 3.f, 0.f), fill(y, 1.f, 0.f), fill(w, 0.5f, 1.f), fill(bias, 0.1f, 0.f), fill(u, 6.f, 0.f);
  for (int k = 0; k < D; ++k) jvlm::store(&c[k], std::cos(0.37f * k)), jvlm::store(&s[k], std::sin(0.37f * k));
  auto f = [](const std::vector<T>& v, int k) { return jvlm::to_float(v[k]); };
  auto rms = [&](const std::vector<float>& v) {
    double ss = 0;
    for (float e : v) ss += (double)e * e;
    return (float)(1.0 / std::sqrt(ss / D + 1e-6));
  };
  // add_rows + rms_norm_row (the residual add and the norm after it)
  jvlm::add_rows(x.data(), y.data(), out.data(), D);
  jvlm::rms_norm_row(out.data(), w.data(), tmp.data(), D, 1e-6f);
  std::vector<float> sum(D);
  for (int k = 0; k < D; ++k) sum[k] = rnd<T>(f(x, k) + f(y, k));
  const float r = rms(sum);
  for (int k = 0; k < D; ++k) {
    expect(f(out, k) == sum[k], "add_rows", D, k, 0, f(out, k), sum[k]);
    const float want = rnd<T>(f(w, k) * rnd<T>(sum[k] * r));
    expect(std::fabs(f(tmp, k) - want) <= ulp * std::fabs(want) + 1e-30, "rms_norm_row", D, k, 0, f(tmp, k), want);
  }
  // silu_mul_row
  jvlm::silu_mul_row(u.data(), g.data(), D);
  for (int k = 0; k < D; ++k) {
    const double gate = f(u, D + k);
    const float want = rnd<T>(rnd<T>((float)(gate / (1.0 + std::exp(-gate)))) * f(u, k));
    expect(std::fabs(f(g, k) - want) <= ulp * std::fabs(want) + 1e-30, "silu_mul_row", D, k, 0, f(g, k), want);
  }
  // qk_head
  jvlm::qk_head(x.data(), bias.data(), w.data(), 1e-6f, c.data(), s.data(), D, out.data(), tmp.data());
  std::vector<float> xb(D), n(D);
  for (int k = 0; k < D; ++k) xb[k] = rnd<T>(f(x, k) + f(bias, k));
  const float rq = rms(xb);
  for (int k = 0; k < D; ++k) n[k] = rnd<T>(f(w, k) * rnd<T>(xb[k] * rq));
  for (int k = 0; k < D; ++k) {
    const float rot = k < D / 2 ? -n[k + D / 2] : n[k - D / 2];
    const float want = rnd<T>(rnd<T>(n[k] * f(c, k)) + rnd<T>(rot * f(s, k)));
    // a norm output one unit off moves the two products by a unit each
    expect(std::fabs(f(out, k) - want) <= 2 * ulp * (std::fabs(n[k]) + std::fabs(rot)), "qk_head", D, k, 0,
           f(out, k), want);
  }
}

}  // namespace

int main() {
  check_rounding_and_exp();
  for (int D : {16, 32, 64, 128, 2048 + 6}) check_step<float>(D), check_step<bf16>(D);
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
