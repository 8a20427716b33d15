// linear_bf16 and linear_int8: few-row products (decoding) with bf16 or int8 weights.
#include <vector>

#include "linear_core.h"
#include "ops.h"

namespace {

using jvlm::bf16;
using jvlm::raw;

void check_common(const char* op, const torch::Tensor& x, const torch::Tensor& w,
                  const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), op, ": x (M, K) and w (N, K) expected, got ",
              x.sizes(), " and ", w.sizes());
  TORCH_CHECK(x.size(0) <= jvlm::MAX_ROWS, op, ": at most ", jvlm::MAX_ROWS, " rows of x, got ", x.size(0));
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous(), op, ": x and w must be contiguous");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), op, ": CPU tensors expected");
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kFloat, op,
              ": x must be bf16 or fp32, got ", x.scalar_type());
  if (bias)
    TORCH_CHECK(bias->scalar_type() == torch::kFloat && bias->is_contiguous() && bias->numel() == w.size(0), op,
                ": bias must be a contiguous fp32 (N,) tensor");
}

}  // namespace

torch::Tensor linear_bf16(torch::Tensor x, torch::Tensor w, c10::optional<torch::Tensor> bias) {
  check_common("linear_bf16", x, w, bias);
  TORCH_CHECK(w.scalar_type() == torch::kBFloat16, "linear_bf16: bf16 w expected, got ", w.scalar_type());
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  const bf16* wp = raw<const bf16>(w);
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  if (x.scalar_type() == torch::kFloat) {
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    jvlm::parallel_rows(N, [&](int64_t n0, int64_t n1) { jvlm::linear_f32(xp, M, K, wp, bp, yp, N, n0, n1); });
    return y;
  }
  bf16* yp = raw<bf16>(y);
#if defined(JVLM_ISA_AVX512)
  const bf16* xp = raw<const bf16>(x);
  jvlm::parallel_rows(N, [&](int64_t n0, int64_t n1) { jvlm::linear_bf16dp(xp, M, K, wp, bp, yp, N, n0, n1); });
#else
  const auto xf = x.to(torch::kFloat);  // exact; the products are then those of fp32 x
  const float* xp = xf.data_ptr<float>();
  jvlm::parallel_rows(N, [&](int64_t n0, int64_t n1) { jvlm::linear_f32(xp, M, K, wp, bp, yp, N, n0, n1); });
#endif
  return y;
}

torch::Tensor linear_int8(torch::Tensor x, torch::Tensor w, torch::Tensor scales, c10::optional<torch::Tensor> bias) {
  check_common("linear_int8", x, w, bias);
  TORCH_CHECK(w.scalar_type() == torch::kChar, "linear_int8: int8 w expected, got ", w.scalar_type());
  TORCH_CHECK(scales.scalar_type() == torch::kFloat && scales.is_contiguous() && scales.numel() == w.size(0),
              "linear_int8: scales must be a contiguous fp32 (N,) tensor");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const float qmax = jvlm::int8_activation_qmax(K);
  std::vector<int16_t> xq(M * K);
  std::vector<float> xs(M);
  for (int64_t m = 0; m < M; ++m)
    xs[m] = x.scalar_type() == torch::kFloat ? jvlm::quantize_row(x.data_ptr<float>() + m * K, K, qmax, &xq[m * K])
                                             : jvlm::quantize_row(raw<const bf16>(x) + m * K, K, qmax, &xq[m * K]);
  auto y = torch::empty({M, N}, x.options());
  const int8_t* wp = w.data_ptr<int8_t>();
  const float* sp = scales.data_ptr<float>();
  const float* bp = bias ? bias->data_ptr<float>() : nullptr;
  auto run = [&](auto* yp) {
    jvlm::parallel_rows(N, [&](int64_t n0, int64_t n1) {
      jvlm::linear_i8(xq.data(), xs.data(), M, K, wp, sp, bp, yp, N, n0, n1);
    });
  };
  if (x.scalar_type() == torch::kFloat) run(y.data_ptr<float>());
  else run(raw<bf16>(y));
  return y;
}

JVLM_EXPORT(linear_bf16, "y = x @ w.T (+ bias): bf16 w, bf16 or fp32 x (at most 16 rows), y in x's dtype");
JVLM_EXPORT(linear_int8, "y = x @ (w * scales[:, None]).T (+ bias): int8 w, bf16 or fp32 x, y in x's dtype");
