"""Inference speed at the full jina-vlm dimensions, against this machine's limits and a baseline.

Not a test: it takes minutes. Weights are random bf16, built directly in memory (no
checkpoint is written), which is all a speed measurement needs. One run reports:

* limits of this machine, measured here: bf16 matmul GFLOP/s and memory read bandwidth;
* ``jvlm``, through the engine: ViT + connector time for a 3x4-tile image (13 crops), decoder
  prefill of its ~1,760-token prompt, decode ms/token (PyTorch's kernels, then jvlm's
  streaming kernels), each as a fraction of its limit (FLOPs / peak for the compute-bound
  parts, bytes read per token / bandwidth for decode), the time to first token of a second
  question on the same image (feature + prefix cache), and a batch of four;
* ``int8``: decode with the int8 weight-only decoder, and its effect on the logits;
* ``baseline``: the same workload through Transformers (``SiglipVisionModel`` with all 27
  layers + ``Qwen3ForCausalLM``, SDPA, ``generate()`` with its default cache).

On a shared machine the speed drifts from minute to minute, so jvlm and the baseline are
measured alternately, ``--repeats`` times, and the best of each is kept.

    python bench/bench_inference.py                  # everything, full size (~15 min on 2 cores)
    python bench/bench_inference.py --quick          # 10 ViT / 4 decoder layers, 1x2 tiles
    python bench/bench_inference.py --parts limits,jvlm --threads 1 --out results.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time

import numpy as np
import torch

from jvlm.config import JinaVLMConfig
from jvlm.efficiency import efficiency_report, llm_body_params
from jvlm.inference.engine import Engine
from jvlm.inference.feature_cache import FeatureCache, PrefixCache
from jvlm.inference.request import ImageInput, Request, SamplingParams
from jvlm.model.vlm import JinaVLMForConditionalGeneration
from jvlm.processing.image import image_block_ids, image_input_idx, image_layout

PARTS = ("limits", "jvlm", "int8", "baseline")
FULL_IMAGE_WH = (2728, 2046)  # tiles as 3 rows x 4 cols: 12 tiles + thumbnail = 13 crops
QUICK_IMAGE_WH = (760, 380)  # 1 x 2 tiles


def best_time(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ------------------------------------------------------------------------------ limits
def measure_limits() -> dict:
    """bf16 GEMM peak (best of decoder- and ViT-shaped products) and streaming read bandwidth."""
    gflops = {}
    for m, k, n in ((2048, 2048, 6144), (4096, 1152, 4304), (4096, 4096, 4096)):
        a = torch.randn(m, k, dtype=torch.bfloat16)
        b = torch.randn(k, n, dtype=torch.bfloat16)
        gflops[f"{m}x{k}x{n}"] = 2 * m * k * n / best_time(lambda a=a, b=b: a @ b) / 1e9
    x = torch.ones(2**28)  # 1 GiB of fp32, far beyond any cache
    read = x.numel() * 4 / best_time(lambda: x.sum(), repeat=5) / 1e9
    y = torch.empty_like(x)
    copy = 2 * x.numel() * 4 / best_time(lambda: y.copy_(x), repeat=3) / 1e9
    return {"bf16_matmul_gflops": max(gflops.values()), "bf16_matmul_by_shape": gflops,
            "read_gbps": read, "copy_gbps": copy, "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------- the models
def random_init_(model: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """N(0, std) everywhere except norm scales (1) and shifts (0), in place in the model's dtype."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_f" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                p.normal_(0.0, std)
    return model


def build_on_cpu(factory, dtype=torch.bfloat16, meta: bool = True) -> torch.nn.Module:
    """Construct in ``dtype`` directly (no fp32 detour). ``meta``: build on the meta device and
    fill with ``random_init_`` (fast; only for models without computed buffers)."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        if not meta:
            return factory().eval()  # Transformers models initialise their own weights and buffers
        with torch.device("meta"):
            model = factory()
    finally:
        torch.set_default_dtype(prev)
    if any(True for _ in model.buffers()):
        raise ValueError("this model has buffers that the meta device would leave uninitialised; use meta=False")
    return random_init_(model.to_empty(device="cpu")).eval()


def jvlm_config(quick: bool) -> JinaVLMConfig:
    cfg = JinaVLMConfig.preset("jina-vlm")
    if quick:
        cfg.vision.n_layers = 10  # taps -4 and -10 still mean two different layers
        cfg.text.n_layers = 4
    return cfg


def build_jvlm(cfg: JinaVLMConfig) -> JinaVLMForConditionalGeneration:
    model = build_on_cpu(lambda: JinaVLMForConditionalGeneration(cfg))
    base = cfg.text.base_rows
    model.structural_token_ids = list(range(base, base + 6))  # extra rows 0-5 (spec section 2)
    model.model.im_patch_token_id = base + 2
    model.stop_token_ids = []
    return model


def synthetic_request(cfg: JinaVLMConfig, image_wh: tuple[int, int], question: int, seed: int,
                      max_new_tokens: int) -> Request:
    """A chat-shaped prompt with one image block; ids stand in for a tokenizer's."""
    base = cfg.text.base_rows
    lay = image_layout(image_wh[1], image_wh[0], cfg.image)
    block = image_block_ids(lay, im_start=base, im_end=base + 1, im_patch=base + 2, im_col=base + 3).tolist()
    head = [151643, 151644, 872, 198]  # BOS, <|im_start|>, "user", "\n"
    rng = np.random.default_rng(seed)
    words = rng.integers(1000, 100000, question).tolist()
    tail = [151645, 198, 151644, 77091, 198]  # end of turn, assistant header
    rel = image_input_idx(lay, cfg.image)
    idx = np.where(rel >= 0, rel + len(head), -1)
    g = np.random.default_rng(0)  # same pixels for every question: same image
    n_patch = cfg.vision.n_patches
    crops = g.uniform(-1, 1, (lay.n_crops, n_patch, cfg.vision.patch_dim)).astype(np.float32)
    image = ImageInput(image_input_idx=idx, crops=crops, masks=np.ones((lay.n_crops, n_patch), np.float32),
                       cache_key="bench-image", layout=lay, n_tokens=lay.n_block_tokens, tiling=lay.tiling)
    return Request(prompt_ids=head + block + words + tail, images=[image],
                   params=SamplingParams(max_new_tokens=max_new_tokens, ignore_eos=True))


def decode_bytes_per_token(cfg: JinaVLMConfig, context: int, weight_bytes: float = 2.0) -> float:
    """Bytes one decode step must read: decoder weights, LM head, and the KV cache so far."""
    t = cfg.text
    weights = (llm_body_params(cfg) + t.base_rows * t.hidden_size) * weight_bytes
    kv = 2 * t.n_layers * t.n_kv_heads * t.head_dim * 2 * context
    return weights + kv


def prefill_flops(cfg: JinaVLMConfig, tokens: int) -> float:
    """Decoder linear layers for every token, plus causal attention scores (QK^T and AV)."""
    t = cfg.text
    return 2 * llm_body_params(cfg) * tokens + 2 * 2 * t.n_layers * t.n_heads * t.head_dim * tokens * tokens / 2


# ------------------------------------------------------------------------------ parts
def decode_ms(engine: Engine, request: Request) -> float:
    """Milliseconds per generated token after the first (the first token belongs to prefill)."""
    res = engine.generate(request)
    return 1000 * (res.total_s - res.time_to_first_token_s) / (res.completion_tokens - 1)


def text_request(start: int, n_decode: int, length: int = 32) -> Request:
    return Request(prompt_ids=[151643] + list(range(start, start + length)),
                   params=SamplingParams(max_new_tokens=n_decode + 1, ignore_eos=True))


class _Clock:
    """A Transformers streamer that only records when each put() happens."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, _value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


class Baseline:
    """Transformers' SigLIP ViT (all layers, no pooling head) and Qwen3 at the same dimensions."""

    def __init__(self, cfg: JinaVLMConfig):
        from transformers import (
            Qwen3Config,
            Qwen3ForCausalLM,
            SiglipVisionConfig,
            SiglipVisionModel,
        )

        v, t = cfg.vision, cfg.text
        vcfg = SiglipVisionConfig(hidden_size=v.hidden_size, intermediate_size=v.mlp_size,
                                  num_hidden_layers=v.n_layers, num_attention_heads=v.n_heads,
                                  image_size=v.image_size, patch_size=v.patch_size, hidden_act="gelu_pytorch_tanh",
                                  layer_norm_eps=v.norm_eps, vision_use_head=False, attn_implementation="sdpa")
        qcfg = Qwen3Config(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.mlp_size,
                           num_hidden_layers=t.n_layers, num_attention_heads=t.n_heads,
                           num_key_value_heads=t.n_kv_heads, head_dim=t.head_dim,
                           max_position_embeddings=t.max_sequence_length, rope_theta=t.rope_theta,
                           rms_norm_eps=t.norm_eps, tie_word_embeddings=False, attn_implementation="sdpa")
        self.vit = build_on_cpu(lambda: SiglipVisionModel(vcfg), meta=False)
        self.lm = build_on_cpu(lambda: Qwen3ForCausalLM(qcfg), meta=False)
        self.lm.generation_config.eos_token_id = None
        self.lm.generation_config.pad_token_id = 0
        self.image_size = v.image_size

    @torch.inference_mode()
    def vit_s(self, n_crops: int) -> float:
        pixels = torch.rand(n_crops, 3, self.image_size, self.image_size, dtype=torch.bfloat16) * 2 - 1
        t0 = time.perf_counter()
        self.vit(pixel_values=pixels)
        return time.perf_counter() - t0

    @torch.inference_mode()
    def generate(self, prompt_tokens: int, n_decode: int) -> tuple[float, float]:
        """(time to first token s, decode ms/token) of ``generate()``."""
        ids = torch.randint(1000, 100000, (1, prompt_tokens))
        clock = _Clock()
        t0 = time.perf_counter()
        self.lm.generate(ids, max_new_tokens=n_decode + 1, min_new_tokens=n_decode + 1, do_sample=False,
                         streamer=clock)
        # put #0 is the prompt, put #1 the first new token
        return clock.times[1] - t0, 1000 * (clock.times[-1] - clock.times[1]) / n_decode


def bench_image(model, cfg, limits: dict, image_wh, repeats: int, baseline: Baseline | None) -> dict:
    """ViT, prefill and cached time to first token, alternating with the baseline's ViT and prefill."""
    eff = efficiency_report(*image_wh, cfg)
    connector = eff["prefill_flops"]["real"] - 2 * llm_body_params(cfg) * eff["tokens"]["block_tokens"]
    vit_flops = eff["vit_flops"]["linear"] + eff["vit_flops"]["attention"] + connector
    runs, base = [], []
    for r in range(repeats):
        engine = Engine(model, None, feature_cache=FeatureCache(), prefix_cache=PrefixCache(4 * 2**30))
        first = engine.generate(synthetic_request(cfg, image_wh, 12, seed=10 * r, max_new_tokens=2))
        second = engine.generate(synthetic_request(cfg, image_wh, 15, seed=10 * r + 1, max_new_tokens=2))
        runs.append((first, second))
        print(f"  jvlm #{r}: ViT {first.stats['vision_s']:.2f} s, prefill {first.stats['prefill_s']:.2f} s, "
              f"TTFT {first.time_to_first_token_s:.2f} s then {second.time_to_first_token_s:.3f} s", flush=True)
        if baseline is not None:
            vit = baseline.vit_s(eff["n_crops"])
            ttft, _ = baseline.generate(first.prompt_tokens, 1)
            base.append((vit, ttft))
            print(f"  transformers #{r}: ViT {vit:.2f} s, prefill {ttft:.2f} s", flush=True)
        del engine
        gc.collect()
    vit_s = min(f.stats["vision_s"] for f, _ in runs)
    prefill_s = min(f.stats["prefill_s"] for f, _ in runs)
    prompt = runs[0][0].prompt_tokens
    ttft1 = min(f.time_to_first_token_s for f, _ in runs)
    ttft2 = min(s.time_to_first_token_s for _, s in runs)
    peak = limits["bf16_matmul_gflops"]
    out = {
        "image_wh": image_wh, "crops": eff["n_crops"], "tiling": eff["tiling"], "prompt_tokens": prompt,
        "vit_s": vit_s, "vit_gflops": vit_flops / vit_s / 1e9, "vit_fraction_of_peak": vit_flops / vit_s / 1e9 / peak,
        "prefill_s": prefill_s, "prefill_gflops": prefill_flops(cfg, prompt) / prefill_s / 1e9,
        "prefill_fraction_of_peak": prefill_flops(cfg, prompt) / prefill_s / 1e9 / peak,
        "ttft_first_s": ttft1, "ttft_repeat_s": ttft2, "ttft_ratio": ttft1 / ttft2,
        "repeat_prefill_tokens": runs[0][1].stats.get("prefill_tokens"),
    }
    if base:
        out["baseline_vit_s"] = min(v for v, _ in base)
        out["baseline_prefill_s"] = min(p for _, p in base)
    return out


def bench_decode(model, cfg, limits: dict, image_wh, n_decode: int, repeats: int,
                 baseline: Baseline | None) -> dict:
    """Decode ms/token on a short prompt: PyTorch kernels, jvlm kernels, baseline, alternately;
    then with the image in context (prefix cache) and a batch of four."""
    from jvlm.inference import quantize

    short = 33
    engine = Engine(model, None, feature_cache=FeatureCache(), prefix_cache=PrefixCache(4 * 2**30))
    engine.generate(text_request(100, 2))  # warm up
    torch_ms, own_ms, base_ms = [], [], []
    for r in range(repeats):
        model.decode_kernels = None  # PyTorch's kernels (weights stay plain tensors below)
        for lin in quantize._decoder_linears(model, untie=False):
            if isinstance(lin.weight, quantize.StreamedWeight):
                lin.weight = lin.weight.plain()
        torch_ms.append(decode_ms(engine, text_request(200 + r, n_decode)))
        if quantize.use_cpu_kernels(model):
            own_ms.append(decode_ms(engine, text_request(300 + r, n_decode)))
        if baseline is not None:
            base_ms.append(baseline.generate(short, n_decode)[1])
        print(f"  decode #{r}: PyTorch kernels {torch_ms[-1]:.1f} ms, jvlm kernels "
              f"{own_ms[-1] if own_ms else float('nan'):.1f} ms, transformers "
              f"{base_ms[-1] if base_ms else float('nan'):.1f} ms", flush=True)
    best = min(own_ms or torch_ms)
    limit_ms = 1000 * decode_bytes_per_token(cfg, short + n_decode // 2) / (limits["read_gbps"] * 1e9)
    # With the image in context: the prefix cache skips the prefill, decoding reads the KV too.
    engine.generate(synthetic_request(cfg, image_wh, 12, seed=1, max_new_tokens=2))
    image_ms = decode_ms(engine, synthetic_request(cfg, image_wh, 14, seed=2, max_new_tokens=n_decode + 1))
    context = len(synthetic_request(cfg, image_wh, 14, 2, 1).prompt_ids) + n_decode // 2
    image_limit_ms = 1000 * decode_bytes_per_token(cfg, context) / (limits["read_gbps"] * 1e9)
    batch = [text_request(2000 + 40 * i, n_decode - 1, length=10 + 3 * i) for i in range(4)]
    t0 = time.perf_counter()
    results = engine.generate_many(batch)
    batch_tps = sum(r.completion_tokens for r in results) / (time.perf_counter() - t0)
    out = {
        "decode_ms_per_token_torch_kernels": min(torch_ms), "decode_ms_per_token_jvlm_kernels": min(own_ms) if own_ms else None,
        "decode_ms_per_token": best, "decode_limit_ms": limit_ms, "decode_fraction_of_bandwidth": limit_ms / best,
        "decode_gbps": decode_bytes_per_token(cfg, short + n_decode // 2) / (best / 1000) / 1e9,
        "image_context_tokens": context, "image_decode_ms_per_token": image_ms,
        "image_decode_limit_ms": image_limit_ms, "image_decode_fraction_of_bandwidth": image_limit_ms / image_ms,
        "batch4_tokens_per_s": batch_tps, "batch1_tokens_per_s": 1000 / best,
    }
    if base_ms:
        out["baseline_decode_ms_per_token"] = min(base_ms)
    return out


def bench_int8(model, cfg, limits: dict, n_decode: int, repeats: int) -> dict:
    """Decode speed with the int8 decoder (both kernels), and how far its logits move from bf16."""
    from jvlm.inference.quantize import Int8Weight, quantize_decoder_int8

    prompt = torch.tensor([[151643] + list(range(3000, 3063))])
    steps = torch.tensor([[4000 + i] for i in range(16)])

    def logits_trace():
        cache = model.new_cache(1, 128)
        out = [model(prompt, past_key_values=cache).logits[0].float()]  # (64, V) prefill path
        out += [model(s[None], past_key_values=cache).logits[0].float() for s in steps]  # decode path
        return torch.cat(out)  # (80, V)

    engine = Engine(model, None)
    with torch.inference_mode():
        ref = logits_trace()
        quantize_decoder_int8(model)
        q = logits_trace()
    diff = (q - ref).abs()
    kl = torch.nn.functional.kl_div(q.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean")
    int8_weights = [m.weight for m in model.modules() if isinstance(getattr(m, "weight", None), Int8Weight)]
    own_kernel = int8_weights[0]._ext
    own_ms, torch_ms = [], []
    for r in range(repeats):
        for w in int8_weights:
            w._ext = own_kernel
        own_ms.append(decode_ms(engine, text_request(500 + r, n_decode)))
        for w in int8_weights:  # the same int8 weights through PyTorch's own kernel
            w._ext = None
        torch_ms.append(decode_ms(engine, text_request(600 + r, n_decode)))
    for w in int8_weights:
        w._ext = own_kernel
    int8_limit = 1000 * decode_bytes_per_token(cfg, 40, weight_bytes=1.0) / (limits["read_gbps"] * 1e9)
    best = min(own_ms) if own_kernel is not None else min(torch_ms)
    return {
        "decode_ms_per_token": best, "decode_ms_per_token_torch_int8_kernel": min(torch_ms),
        "int8_limit_ms": int8_limit, "fraction_of_int8_limit": int8_limit / best,
        "logits_max_abs_diff": diff.max().item(), "logits_mean_abs_diff": diff.mean().item(),
        "logits_ref_std": ref.std().item(), "top1_agreement": (q.argmax(-1) == ref.argmax(-1)).float().mean().item(),
        "kl_bf16_to_int8": kl.item(),
    }


# ------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 ViT / 4 decoder layers and a 1x2-tile image")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--decode-tokens", type=int, default=None, help="tokens timed in decode (default 32, quick 8)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating repeats, best kept (default 2, quick 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    n_decode = args.decode_tokens or (8 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 2)
    cfg = jvlm_config(args.quick)
    image_wh = QUICK_IMAGE_WH if args.quick else FULL_IMAGE_WH
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
                 "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "quick": args.quick, "load_average_start": os.getloadavg()}

    limits = res["limits"] = measure_limits()
    print(f"limits: bf16 matmul {limits['bf16_matmul_gflops']:.0f} GFLOP/s, read {limits['read_gbps']:.1f} GB/s, "
          f"copy {limits['copy_gbps']:.1f} GB/s", flush=True)
    if not {"jvlm", "int8", "baseline"} & set(parts):
        return res
    t0 = time.perf_counter()
    model = build_jvlm(cfg)
    baseline = Baseline(cfg) if "baseline" in parts else None
    print(f"built the models ({cfg.text.n_layers} decoder / {cfg.vision.n_layers} ViT layers) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    if "jvlm" in parts or baseline is not None:
        r = res["image"] = bench_image(model, cfg, limits, image_wh, repeats, baseline)
        print(f"image: ViT {r['vit_s']:.2f} s ({r['vit_fraction_of_peak']:.0%} of peak), prefill {r['prefill_s']:.2f} s "
              f"for {r['prompt_tokens']} tokens ({r['prefill_fraction_of_peak']:.0%}), repeat-question TTFT "
              f"{r['ttft_ratio']:.0f}x sooner ({r['ttft_first_s']:.2f} s -> {r['ttft_repeat_s']:.3f} s)", flush=True)
        r = res["decode"] = bench_decode(model, cfg, limits, image_wh, n_decode, repeats, baseline)
        print(f"decode: {r['decode_ms_per_token']:.1f} ms/token ({r['decode_fraction_of_bandwidth']:.0%} of the "
              f"{r['decode_limit_ms']:.1f} ms bandwidth limit; PyTorch kernels "
              f"{r['decode_ms_per_token_torch_kernels']:.1f} ms); with the image in context "
              f"{r['image_decode_ms_per_token']:.1f} ms ({r['image_decode_fraction_of_bandwidth']:.0%}); "
              f"batch of 4: {r['batch4_tokens_per_s']:.1f} tokens/s", flush=True)
    if baseline is not None:
        i, d = res["image"], res["decode"]
        res["speedup_vs_transformers"] = {"vit": i["baseline_vit_s"] / i["vit_s"],
                                          "prefill": i["baseline_prefill_s"] / i["prefill_s"],
                                          "decode": d["baseline_decode_ms_per_token"] / d["decode_ms_per_token"]}
        print("speed-up over transformers: " + ", ".join(f"{k} {v:.2f}x" for k, v in res["speedup_vs_transformers"].items()),
              flush=True)
        del baseline
        gc.collect()
    if "int8" in parts:
        r = res["int8"] = bench_int8(model, cfg, limits, n_decode, repeats)
        print(f"int8: decode {r['decode_ms_per_token']:.1f} ms/token (int8 limit {r['int8_limit_ms']:.1f} ms; "
              f"PyTorch int8 kernel {r['decode_ms_per_token_torch_int8_kernel']:.1f} ms), logits max|diff| "
              f"{r['logits_max_abs_diff']:.3f} (std {r['logits_ref_std']:.2f}), top-1 agreement "
              f"{r['top1_agreement']:.1%}, KL {r['kl_bf16_to_int8']:.2e}", flush=True)
    res["load_average_end"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    main()
