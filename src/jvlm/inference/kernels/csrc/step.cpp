// The element-wise kernels of a decode step (step_core.h) for torch tensors: rms_norm,
// add_rms_norm, silu_mul and qk_rope_cache. Each takes the few rows of one step and does in
// one call what the modules do in several PyTorch operations, whose dispatch costs more than
// their arithmetic at this size (about 5 ms a token over 28 layers, measured on Zen 4).
// jvlm.inference.decode_step strings them together with the linear and attention kernels.
#include "ops.h"
#include "step_core.h"

namespace {

using jvlm::bf16;
using jvlm::raw;

bool float_or_bf16(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kBFloat16;
}

// Calls f with a null pointer of the element type of a bf16 or fp32 tensor (the dispatch).
template <typename F>
void with_type(const torch::Tensor& t, F&& f) {
  if (t.scalar_type() == torch::kFloat) f((float*)nullptr);
  else f((bf16*)nullptr);
}

void check_rows(const char* op, const torch::Tensor& t, int64_t cols) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && float_or_bf16(t), op,
              ": contiguous bf16 or fp32 CPU tensors expected");
  TORCH_CHECK(t.dim() >= 1 && t.size(-1) == cols, op, ": last dimension ", cols, " expected, got ", t.sizes());
}

void check_same_type(const char* op, std::initializer_list<const torch::Tensor*> ts) {
  for (const auto* t : ts)
    TORCH_CHECK(t->scalar_type() == (*ts.begin())->scalar_type(), op, ": all tensors must have one dtype");
}

int64_t rows_of(const torch::Tensor& t) { return t.size(-1) ? t.numel() / t.size(-1) : 0; }

}  // namespace

torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(weight.dim() == 1 && x.dim() >= 1, "rms_norm: x (..., D) and weight (D,) expected, got ", x.sizes(),
              " and ", weight.sizes());
  check_rows("rms_norm", x, weight.size(0));
  check_rows("rms_norm", weight, weight.size(0));
  auto y = torch::empty(x.sizes(), x.options().dtype(c10::promoteTypes(x.scalar_type(), weight.scalar_type())));
  const int64_t D = x.size(-1), rows = rows_of(x);
  with_type(x, [&](auto* xt) {
    using X = std::remove_pointer_t<decltype(xt)>;
    with_type(weight, [&](auto* wt) {
      using W = std::remove_pointer_t<decltype(wt)>;
      with_type(y, [&](auto* yt) {
        using Y = std::remove_pointer_t<decltype(yt)>;
        for (int64_t i = 0; i < rows; ++i)
          jvlm::rms_norm_row(raw<const X>(x) + i * D, raw<const W>(weight), raw<Y>(y) + i * D, D, (float)eps);
      });
    });
  });
  return y;
}

// (x + y, RMSNorm(x + y)): the residual add and the next norm.
std::vector<torch::Tensor> add_rms_norm(torch::Tensor x, torch::Tensor y, torch::Tensor weight, double eps) {
  TORCH_CHECK(weight.dim() == 1 && x.sizes() == y.sizes(), "add_rms_norm: x and y (..., D) and weight (D,) expected, got ",
              x.sizes(), ", ", y.sizes(), " and ", weight.sizes());
  const int64_t D = weight.size(0);
  for (const auto* t : {&x, &y, &weight}) check_rows("add_rms_norm", *t, D);
  check_same_type("add_rms_norm", {&x, &y, &weight});
  auto sum = torch::empty_like(x), h = torch::empty_like(x);
  const int64_t rows = rows_of(x);
  with_type(x, [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    for (int64_t i = 0; i < rows; ++i) {
      jvlm::add_rows(raw<const T>(x) + i * D, raw<const T>(y) + i * D, raw<T>(sum) + i * D, D);
      jvlm::rms_norm_row(raw<const T>(sum) + i * D, raw<const T>(weight), raw<T>(h) + i * D, D, (float)eps);
    }
  });
  return {sum, h};
}

// u (..., 2F) = [value | gate] -> (..., F): silu(gate) * value.
torch::Tensor silu_mul(torch::Tensor u) {
  TORCH_CHECK(u.dim() >= 1 && u.size(-1) % 2 == 0, "silu_mul: u (..., 2F) expected, got ", u.sizes());
  check_rows("silu_mul", u, u.size(-1));
  const int64_t F = u.size(-1) / 2, rows = rows_of(u);
  auto sizes = u.sizes().vec();
  sizes.back() = F;
  auto out = torch::empty(sizes, u.options());
  with_type(u, [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    for (int64_t i = 0; i < rows; ++i) jvlm::silu_mul_row(raw<const T>(u) + i * 2 * F, raw<T>(out) + i * F, F);
  });
  return out;
}

// The attention inputs of one decode step: qkv (B, (H + 2 KV) D) from the fused projection ->
// q (B, H, D) returned; k and v written to column `col` of layer `layer` of the caches
// (L, B, KV, capacity, D). Biases q_b (H D), k_b, v_b (KV D); norm weights q_w, k_w (D);
// cos, sin (B, D) of each row's position.
torch::Tensor qk_rope_cache(torch::Tensor qkv, torch::Tensor q_b, torch::Tensor k_b, torch::Tensor v_b,
                            torch::Tensor q_w, torch::Tensor k_w, double eps, torch::Tensor cos, torch::Tensor sin,
                            torch::Tensor k_cache, torch::Tensor v_cache, int64_t layer, int64_t col) {
  TORCH_CHECK(k_cache.dim() == 5 && k_cache.sizes() == v_cache.sizes(),
              "qk_rope_cache: caches (L, B, KV, capacity, D) expected, got ", k_cache.sizes(), " and ", v_cache.sizes());
  const int64_t B = k_cache.size(1), KV = k_cache.size(2), D = k_cache.size(4);
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(0) == B && D % 2 == 0 && qkv.size(1) % D == 0 && qkv.size(1) / D > 2 * KV,
              "qk_rope_cache: qkv (", B, ", (H + 2 * ", KV, ") * ", D, ") expected, got ", qkv.sizes());
  const int64_t H = qkv.size(1) / D - 2 * KV;
  TORCH_CHECK(0 <= layer && layer < k_cache.size(0) && 0 <= col && col < k_cache.size(3),
              "qk_rope_cache: layer ", layer, " or column ", col, " outside the cache ", k_cache.sizes());
  TORCH_CHECK(k_cache.stride(4) == 1 && v_cache.stride(4) == 1 && k_cache.device().is_cpu() &&
                  v_cache.device().is_cpu(), "qk_rope_cache: CPU caches with stride 1 over head_dim expected");
  check_rows("qk_rope_cache", qkv, (H + 2 * KV) * D);
  check_rows("qk_rope_cache", q_b, H * D);
  for (const auto* t : {&k_b, &v_b}) check_rows("qk_rope_cache", *t, KV * D);
  for (const auto* t : {&q_w, &k_w}) check_rows("qk_rope_cache", *t, D);
  for (const auto* t : {&cos, &sin}) {
    check_rows("qk_rope_cache", *t, D);
    TORCH_CHECK(rows_of(*t) == B, "qk_rope_cache: cos and sin (B, D) expected, got ", t->sizes());
  }
  check_same_type("qk_rope_cache", {&qkv, &q_b, &k_b, &v_b, &q_w, &k_w, &cos, &sin, &k_cache, &v_cache});
  auto q = torch::empty({B, H, D}, qkv.options());
  const float e = (float)eps;
  with_type(qkv, [&](auto* t) {
    using T = std::remove_pointer_t<decltype(t)>;
    std::vector<T> tmp(D);
    for (int64_t b = 0; b < B; ++b) {
      const T* row = raw<const T>(qkv) + b * qkv.size(1);
      const T* c = raw<const T>(cos) + b * D;
      const T* s = raw<const T>(sin) + b * D;
      for (int64_t h = 0; h < H; ++h)
        jvlm::qk_head(row + h * D, raw<const T>(q_b) + h * D, raw<const T>(q_w), e, c, s, D,
                      raw<T>(q) + (b * H + h) * D, tmp.data());
      for (int64_t h = 0; h < KV; ++h) {
        const int64_t at = layer * k_cache.stride(0) + b * k_cache.stride(1) + h * k_cache.stride(2) + col * k_cache.stride(3);
        const int64_t vat = layer * v_cache.stride(0) + b * v_cache.stride(1) + h * v_cache.stride(2) + col * v_cache.stride(3);
        jvlm::qk_head(row + (H + h) * D, raw<const T>(k_b) + h * D, raw<const T>(k_w), e, c, s, D,
                      raw<T>(k_cache) + at, tmp.data());
        jvlm::add_rows(row + (H + KV + h) * D, raw<const T>(v_b) + h * D, raw<T>(v_cache) + vat, D);
      }
    }
  });
  return q;
}

JVLM_EXPORT(rms_norm, "RMSNorm of the last dimension: weight * to_x_dtype(x * rsqrt(mean(x^2) + eps)), few rows");
JVLM_EXPORT(add_rms_norm, "(x + y, RMSNorm(x + y)) for the few rows of a decode step, one dtype");
JVLM_EXPORT(silu_mul, "u = [value | gate] (..., 2F) -> silu(gate) * value (..., F), each operation rounded");
JVLM_EXPORT(qk_rope_cache, "q/k/v biases, q/k norms and rotary embedding of one decode step; k, v into the cache, q returned");
