// rms_norm: the decoder's RMSNorm (jvlm.model.text.RMSNorm) in one call, for the few rows of a
// decode step, where PyTorch spends most of the time of its eight small operations in
// dispatching them (about 18 us per norm on Zen 4 against a few here; a decode step runs
// 4 norms per layer plus the final one).
//
// Same arithmetic and roundings as the module: in fp32, x * 1 / sqrt(mean(x^2) + eps),
// rounded to x's dtype, then times the weight in the promoted dtype. The sum of squares is
// taken in a fixed order of its own (VL lanes, then the lanes in order), which may differ
// from PyTorch's in the last bit of the mean.
#include "common.h"
#include "ops.h"

namespace {

using jvlm::bf16;
using jvlm::raw;

inline float round_to(const float*, float v) { return v; }
inline float round_to(const bf16*, float v) {
  bf16 b;
  jvlm::store(&b, v);
  return jvlm::to_float(b);
}

template <typename X, typename W, typename Y>
void norm_rows(const X* x, const W* w, Y* y, int64_t rows, int64_t D, float eps) {
  using namespace jvlm;
  for (int64_t i = 0; i < rows; ++i, x += D, y += D) {
    vf acc = vzero();
    int64_t k = 0;
    for (; k + VL <= D; k += VL) {
      const vf v = vload(x + k);
      acc = vfma(v, v, acc);
    }
    float ss = vsum(acc);
    for (; k < D; ++k) ss += to_float(x[k]) * to_float(x[k]);
    const float r = 1.f / std::sqrt(ss / (float)D + eps);
    for (k = 0; k < D; ++k) store(y + k, to_float(w[k]) * round_to(x, to_float(x[k]) * r));
  }
}

template <typename X, typename W>
void dispatch_out(const torch::Tensor& x, const torch::Tensor& w, torch::Tensor& y, int64_t rows, int64_t D, float eps) {
  if (y.scalar_type() == torch::kFloat) norm_rows(raw<const X>(x), raw<const W>(w), raw<float>(y), rows, D, eps);
  else norm_rows(raw<const X>(x), raw<const W>(w), raw<bf16>(y), rows, D, eps);
}

}  // namespace

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "rms_norm: CPU tensors expected");
  TORCH_CHECK(x.is_contiguous() && weight.is_contiguous() && weight.dim() == 1 && x.dim() >= 1 &&
                  x.size(-1) == weight.size(0),
              "rms_norm: contiguous x (..., D) and weight (D,) expected, got ", x.sizes(), " and ", weight.sizes());
  const auto ok = [](c10::ScalarType t) { return t == torch::kFloat || t == torch::kBFloat16; };
  TORCH_CHECK(ok(x.scalar_type()) && ok(weight.scalar_type()), "rms_norm: bf16 or fp32 x and weight expected");
  auto y = torch::empty(x.sizes(), x.options().dtype(c10::promoteTypes(x.scalar_type(), weight.scalar_type())));
  const int64_t D = x.size(-1), rows = D ? x.numel() / D : 0;
  const float e = (float)eps;
  const bool xb = x.scalar_type() == torch::kBFloat16, wb = weight.scalar_type() == torch::kBFloat16;
  if (xb && wb) dispatch_out<bf16, bf16>(x, weight, y, rows, D, e);
  else if (xb) dispatch_out<bf16, float>(x, weight, y, rows, D, e);
  else if (wb) dispatch_out<float, bf16>(x, weight, y, rows, D, e);
  else dispatch_out<float, float>(x, weight, y, rows, D, e);
  return y;
}

JVLM_EXPORT(rms_norm, "RMSNorm of the last dimension: weight * to_x_dtype(x * rsqrt(mean(x^2) + eps)), few rows");
