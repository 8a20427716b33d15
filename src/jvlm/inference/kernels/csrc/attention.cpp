// decode_attention: one query token against the KV cache, bf16 or fp32.
#include <vector>

#include "attention_core.h"
#include "ops.h"

namespace {

template <typename T>
void run(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const bool* mask, float scale,
         torch::Tensor& out) {
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), KV = k.size(1), S = k.size(2), G = H / KV;
  const T* qp = reinterpret_cast<const T*>(q.data_ptr());
  const T* kp = reinterpret_cast<const T*>(k.data_ptr());
  const T* vp = reinterpret_cast<const T*>(v.data_ptr());
  T* op = reinterpret_cast<T*>(out.data_ptr());
  at::parallel_for(0, B * KV, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores(G * S);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / KV, kv = i % KV;
      jvlm::attend(D, G, qp + (b * H + kv * G) * D, kp + b * k.stride(0) + kv * k.stride(1), k.stride(2),
                   vp + b * v.stride(0) + kv * v.stride(1), v.stride(2), mask ? mask + b * S : nullptr, S, scale,
                   scores.data(), op + (b * H + kv * G) * D);
    }
  });
}

}  // namespace

// out (B, H, D) from q (B, H, D) and k, v (B, KV, S, D) with any stride over B, KV and S (cache
// views); heads h = kv * G + g share KV head kv. mask (B, S) bool, true = attend.
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, c10::optional<torch::Tensor> mask,
                               double scale) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 4 && v.dim() == 4, "decode_attention: q (B, H, D), k and v (B, KV, S, D) expected");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == q.size(0) && k.size(3) == q.size(2),
              "decode_attention: q ", q.sizes(), ", k ", k.sizes(), " and v ", v.sizes(), " do not match");
  const auto dt = q.scalar_type();
  TORCH_CHECK((dt == torch::kBFloat16 || dt == torch::kFloat) && k.scalar_type() == dt && v.scalar_type() == dt,
              "decode_attention: q, k and v must be all bf16 or all fp32");
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "decode_attention: CPU tensors expected");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2), KV = k.size(1), S = k.size(2);
  TORCH_CHECK(k.stride(3) == 1 && v.stride(3) == 1, "decode_attention: k and v need stride 1 over head_dim");
  TORCH_CHECK(jvlm::attention_head_dim_ok(D), "decode_attention: head_dim must be 16, 32, 64 or 128, got ", D);
  TORCH_CHECK(H % KV == 0 && jvlm::attention_group_ok(H / KV),
              "decode_attention: query heads per KV head must be 1, 2, 4 or 8, got ", H, " / ", KV);
  torch::Tensor m;
  if (mask) {
    m = mask->to(torch::kBool).contiguous();
    TORCH_CHECK(m.dim() == 2 && m.size(0) == B && m.size(1) == S, "decode_attention: mask (B, S) expected, got ",
                mask->sizes());
  }
  const bool* mp = mask ? m.data_ptr<bool>() : nullptr;
  const auto qc = q.contiguous();
  auto out = torch::empty({B, H, D}, q.options());
  if (dt == torch::kFloat) run<float>(qc, k, v, mp, (float)scale, out);
  else run<jvlm::bf16>(qc, k, v, mp, (float)scale, out);
  return out;
}

JVLM_EXPORT(decode_attention, "softmax(q k^T * scale) v for one query token over a KV cache view (bf16 or fp32)");
