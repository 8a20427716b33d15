"""Inference speed at the full jina-vlm dimensions, against this machine's limits and its peers.

Not a test: it takes minutes. Weights are random bf16 (the release's dtype), built directly
in memory (no checkpoint is written), which is all a speed measurement needs. One run reports:

* ``limits`` of this machine, measured here: GEMM GFLOP/s in the compute dtype and in fp32,
  memory read and copy bandwidth;
* ``jvlm``, through the engine, on the path ``jvlm infer`` takes (``--dtype`` and ``--isa``
  choose another): ViT + connector time for a 3x4-tile image (13 crops), decoder prefill of
  its ~1,760-token prompt, each as a fraction of the GEMM peak; decode ms/token with
  PyTorch's kernels and with jvlm's, as a fraction of the read limit (bytes per token /
  bandwidth, the bandwidth measured just before and after that timing, the higher of the two:
  a shared host's bandwidth moves within minutes; the start-of-run limit is kept too);
  decode with the image in context; a batch of four against one request alone;
  the time to first token of a second question on the same image;
* ``int8`` and ``int4``: decode with int8 / int4 weights against their own read limits, and
  how far their logits move from the float model's (KL, mean |diff|, argmax agreement);
* ``baseline``: the same workload through Transformers in its default configuration
  (``SiglipVisionModel`` with all 27 layers + ``Qwen3ForCausalLM`` in bf16, SDPA,
  ``generate()``);
* ``llama``: llama.cpp's ``llama-bench`` on the same random decoder converted to GGUF (BF16,
  Q8_0, Q4_K_M), when ``scripts/build_llama_cpp.sh`` has built it (``bench/peer_llama_cpp.py``).

On a shared machine the speed drifts from minute to minute, so jvlm and the baseline are
measured alternately, ``--repeats`` times, and the best of each is kept.

    python bench/bench_inference.py --threads 2 --out results.json     # everything, full size
    python bench/bench_inference.py --quick                            # 10 ViT / 4 decoder layers
    python bench/bench_inference.py --dtype fp32 --isa avx2            # the AVX2 path on any x86 CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import numpy as np
import torch
from torch import nn

from jvlm import memory
from jvlm.config import JinaVLMConfig
from jvlm.efficiency import efficiency_report, llm_body_params
from jvlm.hardware import choose_compute_dtype, cpu_name, dtype_name, simd_summary
from jvlm.inference import int4, kernels
from jvlm.inference.engine import Engine
from jvlm.inference.feature_cache import FeatureCache, PrefixCache
from jvlm.inference.quantize import Int4Linear, Int8Linear, decoder_linears, describe, prepare_decoding
from jvlm.inference.request import ImageInput, Request, SamplingParams
from jvlm.model.vlm import JinaVLMForConditionalGeneration
from jvlm.processing.image import image_block_ids, image_input_idx, image_layout

PARTS = ("limits", "jvlm", "int8", "int4", "baseline", "llama")
FULL_IMAGE_WH = (2728, 2046)  # tiles as 3 rows x 4 cols: 12 tiles + thumbnail = 13 crops
QUICK_IMAGE_WH = (760, 380)  # 1 x 2 tiles
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: token ids below stand for a Qwen tokenizer's; they are taken modulo the model's base
#: vocabulary, so the script also runs on a small preset (``--preset tiny``, a smoke test)
ID_RANGE = 151936


def tid(i: int) -> int:
    return i % ID_RANGE


#: bytes per decoder weight of each decode format (int4: + one fp16 scale per group; int8's one
#: scale per row is negligible)
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5 + 2 / int4.GROUP_SIZE}


def best_time(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ------------------------------------------------------------------------------ limits
def gemm_peak(dtype: torch.dtype, scale: int = 1) -> dict:
    """Best GFLOP/s of GEMMs shaped like the ViT and decoder products, in ``dtype`` (each
    dimension divided by ``scale``: a quick look, not a limit)."""
    out = {}
    for m, k, n in ((2048, 2048, 6144), (4096, 1152, 4304), (4096, 4096, 4096)):
        m, k, n = m // scale, k // scale, n // scale
        a = torch.randn(m, k, dtype=dtype)
        b = torch.randn(n, k, dtype=dtype)  # weight-shaped, as F.linear sees it
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / best_time(lambda a=a, b=b: torch.nn.functional.linear(a, b)) / 1e9
    return {"gflops": max(out.values()), "by_shape": out}


def measure_limits(dtypes: list[torch.dtype], scale: int = 1) -> dict:
    """GEMM peaks in each of ``dtypes`` and streaming read / copy bandwidth (``scale`` > 1:
    smaller products and buffers, for a smoke test)."""
    res = {"gemm": {dtype_name(d): gemm_peak(d, scale) for d in dtypes}, "scale": scale}
    res["read_gbps"] = read_gbps(scale, mib=1024, repeat=5)  # far beyond any cache
    x = torch.ones(2**28 // scale)
    y = torch.empty_like(x)
    res["copy_gbps"] = 2 * x.numel() * 4 / best_time(lambda: y.copy_(x), repeat=3) / 1e9
    res["threads"] = torch.get_num_threads()
    on, why = memory.huge_pages()
    res["huge_pages"] = why if on else f"no: {why}"
    return res


def read_gbps(scale: int = 1, mib: int = 256, repeat: int = 3) -> float:
    """Read bandwidth now: the best ``sum`` over ``mib`` MiB of fp32 (divided by ``scale``), in
    2 MiB pages where the OS offers them, as jvlm's streamed weights are (``jvlm.memory``;
    a sum over 4 KiB pages reads some 15% slower on Zen 4). On a shared host it moves by tens
    of percent within minutes, so besides the start-of-run limit each decode timing is set
    against one measured beside it."""
    x = memory.place(torch.ones(mib * 2**18 // scale))
    return x.numel() * 4 / best_time(lambda: x.sum(), repeat=repeat) / 1e9


def timed_beside_bandwidth(fn, scale: int = 1) -> tuple[float, float]:
    """(fn(), the higher of the read bandwidths measured just before and just after it, GB/s):
    the higher one, so that a fraction of the read limit is never flattered by a slow moment."""
    before = read_gbps(scale)
    value = fn()
    return value, max(before, read_gbps(scale))


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


def jvlm_config(quick: bool, preset: str = "jina-vlm") -> JinaVLMConfig:
    cfg = JinaVLMConfig.preset(preset)
    if quick and preset == "jina-vlm":
        cfg.vision.n_layers = 10  # taps -4 and -10 still mean two different layers
        cfg.text.n_layers = 4
    return cfg


def build_jvlm(cfg: JinaVLMConfig, compute: torch.dtype) -> JinaVLMForConditionalGeneration:
    """bf16 weights (as the release stores them) computed in ``compute``, as the loader does."""
    model = build_on_cpu(lambda: JinaVLMForConditionalGeneration(cfg))
    if compute != torch.bfloat16:
        for module in model.modules():  # one module at a time: peak memory stays near one copy
            for name, p in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(p.detach().to(compute), requires_grad=False))
    model.stored_dtype = torch.bfloat16
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
    head = [tid(i) for i in (151643, 151644, 872, 198)]  # BOS, <|im_start|>, "user", "\n"
    rng = np.random.default_rng(seed)
    words = [tid(i) for i in rng.integers(1000, 100000, question).tolist()]
    tail = [tid(i) for i in (151645, 198, 151644, 77091, 198)]  # end of turn, assistant header
    rel = image_input_idx(lay, cfg.image)
    idx = np.where(rel >= 0, rel + len(head), -1)
    g = np.random.default_rng(0)  # same pixels for every question: same image
    n_patch = cfg.vision.n_patches
    crops = g.uniform(-1, 1, (lay.n_crops, n_patch, cfg.vision.patch_dim)).astype(np.float32)
    image = ImageInput(image_input_idx=idx, crops=crops, masks=np.ones((lay.n_crops, n_patch), np.float32),
                       cache_key="bench-image", layout=lay, n_tokens=lay.n_block_tokens, tiling=lay.tiling)
    return Request(prompt_ids=head + block + words + tail, images=[image],
                   params=SamplingParams(max_new_tokens=max_new_tokens, ignore_eos=True))


def decode_bytes_per_token(cfg: JinaVLMConfig, context: int, fmt: str, kv_bytes: int) -> float:
    """Bytes one decode step must read: decoder weights and LM head in ``fmt``, and the KV
    cache so far (``kv_bytes`` per element: the compute dtype's)."""
    t = cfg.text
    weights = (llm_body_params(cfg) + t.base_rows * t.hidden_size) * WEIGHT_BYTES[fmt]
    kv = 2 * t.n_layers * t.n_kv_heads * t.head_dim * kv_bytes * context
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
    return Request(prompt_ids=[tid(151643)] + [tid(i) for i in range(start, start + length)],
                   params=SamplingParams(max_new_tokens=n_decode + 1, ignore_eos=True))


def batch_step_ms(engine: Engine, start: int, n_decode: int, rows: int = 4, repeats: int = 3) -> float:
    """ms per decode step of ``rows`` equal requests decoding together (after the last one's
    first token, every step advances all of them); the best of ``repeats`` runs."""
    best = float("inf")
    for r in range(repeats):
        results = engine.generate_many([text_request(start + 200 * r + 40 * i, n_decode) for i in range(rows)])
        begin = max(res.time_to_first_token_s for res in results)
        end = max(res.total_s for res in results)
        best = min(best, 1000 * (end - begin) / (n_decode - 1))
    return best


class _Clock:
    """A Transformers streamer that only records when each put() happens."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, _value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def qwen3_dims(cfg: JinaVLMConfig) -> dict:
    """The decoder's dimensions as a Transformers ``Qwen3Config`` names them."""
    t = cfg.text
    return dict(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.mlp_size,
                num_hidden_layers=t.n_layers, num_attention_heads=t.n_heads, num_key_value_heads=t.n_kv_heads,
                head_dim=t.head_dim, max_position_embeddings=t.max_sequence_length, rope_theta=t.rope_theta,
                rms_norm_eps=t.norm_eps, tie_word_embeddings=False)


class Baseline:
    """Transformers' SigLIP ViT (all layers, no pooling head) and Qwen3 at the same dimensions,
    in bf16: what ``from_pretrained`` gives for the release's weights by default."""

    def __init__(self, cfg: JinaVLMConfig):
        from transformers import Qwen3Config, Qwen3ForCausalLM, SiglipVisionConfig, SiglipVisionModel

        v = cfg.vision
        vcfg = SiglipVisionConfig(hidden_size=v.hidden_size, intermediate_size=v.mlp_size,
                                  num_hidden_layers=v.n_layers, num_attention_heads=v.n_heads,
                                  image_size=v.image_size, patch_size=v.patch_size, hidden_act="gelu_pytorch_tanh",
                                  layer_norm_eps=v.norm_eps, vision_use_head=False, attn_implementation="sdpa")
        qcfg = Qwen3Config(**qwen3_dims(cfg), attn_implementation="sdpa")
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
        ids = torch.randint(1000, 100000, (1, prompt_tokens)) % ID_RANGE
        clock = _Clock()
        t0 = time.perf_counter()
        self.lm.generate(ids, max_new_tokens=n_decode + 1, min_new_tokens=n_decode + 1, do_sample=False,
                         streamer=clock)
        # put #0 is the prompt, put #1 the first new token
        return clock.times[1] - t0, 1000 * (clock.times[-1] - clock.times[1]) / n_decode


def new_engine(model, warm: bool = False) -> Engine:
    engine = Engine(model, None, feature_cache=FeatureCache(), prefix_cache=PrefixCache(4 * 2**30))
    if warm:
        engine.generate(text_request(100, 2))
    return engine


#: Decode timings are cheap (a few seconds), and on a shared host one of two can land in a slow
#: minute (a run once measured int4 at 96 ms/token with its batch of four at 104 ms/step), so
#: they take the best of at least this many.
DECODE_REPEATS = 5


def best_decode_ms(engine: Engine, start: int, n_decode: int, repeats: int) -> float:
    runs = max(repeats, DECODE_REPEATS)
    return min(decode_ms(engine, text_request(start + r, n_decode)) for r in range(runs))


def bench_torch_decode(model, n_decode: int, repeats: int, baseline: Baseline | None) -> dict:
    """Decode with PyTorch's kernels (plain ``nn.Linear`` in the compute dtype, SDPA),
    alternating with the baseline's ``generate()``; before the model is prepared for decoding."""
    engine = new_engine(model, warm=True)
    torch_ms, base_ms = [], []
    for r in range(repeats):
        torch_ms.append(decode_ms(engine, text_request(200 + r, n_decode)))
        if baseline is not None:
            base_ms.append(baseline.generate(33, n_decode)[1])
        print(f"  decode #{r}: jvlm with PyTorch's kernels {torch_ms[-1]:.1f} ms, transformers "
              f"{base_ms[-1] if base_ms else float('nan'):.1f} ms", flush=True)
    out = {"torch_kernels_ms": min(torch_ms), "torch_kernels_batch4_step_ms": batch_step_ms(engine, 800, n_decode)}
    if base_ms:
        out["baseline_ms"] = min(base_ms)
    return out


def bench_image(model, cfg, limits: dict, compute: str, image_wh, repeats: int, baseline: Baseline | None) -> dict:
    """ViT, prefill and cached time to first token, alternating with the baseline's ViT and prefill."""
    eff = efficiency_report(*image_wh, cfg)
    connector = eff["prefill_flops"]["real"] - 2 * llm_body_params(cfg) * eff["tokens"]["block_tokens"]
    vit_flops = eff["vit_flops"]["linear"] + eff["vit_flops"]["attention"] + connector
    runs, base = [], []
    for r in range(repeats):
        engine = new_engine(model)
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
    peak = limits["gemm"][compute]["gflops"]
    out = {
        "image_wh": image_wh, "crops": eff["n_crops"], "tiling": eff["tiling"], "prompt_tokens": prompt,
        "vit_s": vit_s, "vit_gflops": vit_flops / vit_s / 1e9, "vit_fraction_of_peak": vit_flops / vit_s / 1e9 / peak,
        "prefill_s": prefill_s, "prefill_gflops": prefill_flops(cfg, prompt) / prefill_s / 1e9,
        "prefill_fraction_of_peak": prefill_flops(cfg, prompt) / prefill_s / 1e9 / peak,
        "prefill_tokens_per_s": prompt / prefill_s,
        "ttft_first_s": ttft1, "ttft_repeat_s": ttft2, "ttft_ratio": ttft1 / ttft2,
    }
    if base:
        out["baseline_vit_s"] = min(v for v, _ in base)
        out["baseline_prefill_s"] = min(p for _, p in base)
    return out


def bench_kernel_decode(model, cfg, limits: dict, image_wh, n_decode: int, repeats: int, fmt: str) -> dict:
    """Decode ms/token on the prepared model (short prompt), with the image in context (prefix
    cache), and a batch of four; each against the read limit of ``fmt``."""
    kv_bytes = model.compute_dtype.itemsize
    scale = limits.get("scale", 1)
    engine = new_engine(model, warm=True)
    ms, gbps = timed_beside_bandwidth(lambda: best_decode_ms(engine, 300, n_decode, repeats), scale)
    limit_ms = 1000 * decode_bytes_per_token(cfg, 33 + n_decode // 2, fmt, kv_bytes) / (gbps * 1e9)
    start_limit_ms = limit_ms * gbps / limits["read_gbps"]
    out = {"ms": ms, "read_gbps_beside": gbps, "limit_ms": limit_ms, "fraction_of_limit": limit_ms / ms,
           "start_limit_ms": start_limit_ms, "fraction_of_start_limit": start_limit_ms / ms,
           "batch4_step_ms": batch_step_ms(engine, 2000, n_decode)}
    out["batch4_over_one"] = out["batch4_step_ms"] / ms
    if image_wh is not None:
        engine.generate(synthetic_request(cfg, image_wh, 12, seed=1, max_new_tokens=2))  # fills the caches
        request = synthetic_request(cfg, image_wh, 14, seed=2, max_new_tokens=n_decode + 1)
        context = len(request.prompt_ids) + n_decode // 2
        image_ms, gbps = timed_beside_bandwidth(lambda: decode_ms(engine, request), scale)
        image_limit = 1000 * decode_bytes_per_token(cfg, context, fmt, kv_bytes) / (gbps * 1e9)
        out.update(image_context_tokens=context, image_ms=image_ms, image_limit_ms=image_limit,
                   image_fraction_of_limit=image_limit / image_ms)
    return out


@torch.inference_mode()
def logits_trace(model) -> torch.Tensor:
    """fp32 logits of a 64-token prefill and 16 decode steps: (80, V), both paths of every layer."""
    prompt = torch.tensor([[tid(i) for i in [151643, *range(3000, 3063)]]])
    cache = model.new_cache(1, 128)
    out = [model(prompt, past_key_values=cache).logits[0].float()]
    out += [model(torch.tensor([[tid(4000 + i)]]), past_key_values=cache).logits[0].float() for i in range(16)]
    return torch.cat(out)


def logit_change(q: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (q - ref).abs()
    kl = torch.nn.functional.kl_div(q.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean")
    return {"kl": kl.item(), "logits_mean_abs_diff": diff.mean().item(), "logits_max_abs_diff": diff.max().item(),
            "logits_ref_std": ref.std().item(), "top1_agreement": (q.argmax(-1) == ref.argmax(-1)).float().mean().item()}


def float_weights(model) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """(parent, attribute, weight) of every decoder linear layer, in the float format it runs."""
    found = [(parent, name, lin.weight.detach()) for parent, name, lin in decoder_linears(model)]
    t = model.cfg.text
    if len(found) != 4 * t.n_layers + 1:  # qkv, out, up, down per layer, and the LM head
        raise RuntimeError(f"found {len(found)} decoder linear layers, expected {4 * t.n_layers + 1}")
    return found


def bench_quantized(model, cfg, limits: dict, fmt: str, saved, ref: torch.Tensor, ks, n_decode: int,
                    repeats: int) -> dict:
    """Swap every decoder linear layer for ``fmt`` (from the float weights in ``saved``), then
    its logits against the float model's and its decode speed against its read limit."""
    cls = {"int8": Int8Linear, "int4": Int4Linear}[fmt]
    compute = model.compute_dtype
    t0 = time.perf_counter()
    with torch.no_grad():
        for parent, name, w in saved:
            setattr(parent, name, cls(w, compute, ks))
    quantize_s = time.perf_counter() - t0
    out = {"quantize_s": quantize_s, "setup": describe(model).as_dict(),
           "layers_in_format": sum(isinstance(m, cls) for m in model.modules()), "layers": len(saved),
           **logit_change(logits_trace(model), ref)}
    out.update(bench_kernel_decode(model, cfg, limits, None, n_decode, repeats, fmt))
    if fmt == "int8" and ks is not None:  # the same int8 weights through PyTorch's own kernel
        layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
        for m in layers:
            m.kernels = None
        out["torch_int8_kernel_ms"] = best_decode_ms(new_engine(model, warm=True), 600, n_decode, repeats)
        for m in layers:
            m.kernels = ks
    return out


def bench_llama(cfg, threads: int, prompt_tokens: int, n_decode: int) -> dict:
    try:
        import peer_llama_cpp  # bench/peer_llama_cpp.py, beside this script
    except ImportError as e:
        return {"skipped": f"bench/peer_llama_cpp.py cannot be imported: {e}"}
    # Tied embeddings as in Qwen3-1.7B: the GGUF then holds one table, which decode reads once
    # as the output head, the same bytes as jvlm's separate head.
    return peer_llama_cpp.run(qwen3_dims(cfg) | {"tie_word_embeddings": True}, threads=threads,
                              prompt_tokens=prompt_tokens, gen_tokens=n_decode, repetitions=2,
                              decode_depth=prompt_tokens, verbose=True, bandwidth=read_gbps)


# ------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 ViT / 4 decoder layers and a 1x2-tile image")
    ap.add_argument("--preset", default="jina-vlm", choices=("jina-vlm", "tiny"),
                    help="model dimensions (tiny: a smoke test of this script, its numbers mean nothing)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto",
                    help="compute dtype of jvlm (weights stay bf16); auto: what `jvlm infer` picks on this CPU")
    ap.add_argument("--isa", choices=("auto", *kernels.ISAS, "torch"), default="auto",
                    help="decode kernel build (auto: the best this CPU runs; torch: none)")
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
    cfg = jvlm_config(args.quick, args.preset)
    global ID_RANGE
    ID_RANGE = cfg.text.base_rows
    small = args.quick or args.preset != "jina-vlm"
    n_decode = args.decode_tokens or (8 if small else 32)
    repeats = args.repeats or (3 if small else 2)
    image_wh = QUICK_IMAGE_WH if small else FULL_IMAGE_WH
    if args.dtype == "auto":
        compute, why = choose_compute_dtype(torch.bfloat16, "cpu")
    else:
        compute, why = DTYPES[args.dtype], f"--dtype {args.dtype}"
    cname = dtype_name(compute)
    ks = None if args.isa == "torch" else kernels.load(None if args.isa == "auto" else args.isa)
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": f"{cpu_name()} ({simd_summary()})",
                 "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "quick": args.quick, "compute_dtype": cname, "dtype_reason": why,
                 "kernels": ks.name if ks is not None else "pytorch", "load_average_start": os.getloadavg()}
    print(f"{res['cpu']}, {res['threads']} threads; jvlm computes in {cname} ({why}); decode kernels "
          f"{res['kernels']}", flush=True)

    limits = res["limits"] = measure_limits(sorted({compute, torch.float32}, key=str),
                                            scale=1 if args.preset == "jina-vlm" else 4)
    print("limits: " + ", ".join(f"{k} GEMM {v['gflops']:.0f} GFLOP/s" for k, v in limits["gemm"].items())
          + f", read {limits['read_gbps']:.1f} GB/s, copy {limits['copy_gbps']:.1f} GB/s"
          + f" (streamed tensors in huge pages: {limits['huge_pages']})", flush=True)
    if "llama" in parts:
        r = res["llama_cpp"] = bench_llama(cfg, res["threads"], 256 if small else 1765, n_decode)
        print(f"llama.cpp: {json.dumps(r)}", flush=True)
    if not {"jvlm", "int8", "int4", "baseline"} & set(parts):
        return _finish(res, args.out)
    t0 = time.perf_counter()
    model = build_jvlm(cfg, compute)
    baseline = Baseline(cfg) if "baseline" in parts else None
    print(f"built the models ({cfg.text.n_layers} decoder / {cfg.vision.n_layers} ViT layers) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)

    if "jvlm" in parts or baseline is not None:
        r = res["decode_torch"] = bench_torch_decode(model, n_decode, repeats, baseline)
    prepare_decoding(model, None, ks, stored_dtype=torch.bfloat16)  # what `jvlm infer` runs
    setup = describe(model, args.dtype)
    res["setup"] = setup.as_dict()
    print(f"decode path: {res['setup']}", flush=True)
    if "jvlm" in parts or baseline is not None:
        r = res["image"] = bench_image(model, cfg, limits, cname, image_wh, repeats, baseline)
        print(f"image: ViT {r['vit_s']:.2f} s ({r['vit_fraction_of_peak']:.0%} of the {cname} peak), prefill "
              f"{r['prefill_s']:.2f} s for {r['prompt_tokens']} tokens ({r['prefill_fraction_of_peak']:.0%}, "
              f"{r['prefill_tokens_per_s']:.1f} tokens/s), repeat-question TTFT {r['ttft_ratio']:.0f}x sooner "
              f"({r['ttft_first_s']:.2f} s -> {r['ttft_repeat_s']:.3f} s)", flush=True)
        r = res["decode"] = bench_kernel_decode(model, cfg, limits, image_wh, n_decode, repeats, setup.weights)
        t = res["decode_torch"]
        print(f"decode ({setup.weights} weights, {setup.linear_kernel}): {r['ms']:.1f} ms/token "
              f"({r['fraction_of_limit']:.0%} of the {r['limit_ms']:.1f} ms read limit at {r['read_gbps_beside']:.1f} "
              f"GB/s measured beside it, {r['fraction_of_start_limit']:.0%} of the start's; PyTorch's kernels "
              f"{t['torch_kernels_ms']:.1f} ms); image in context {r['image_ms']:.1f} ms "
              f"({r['image_fraction_of_limit']:.0%}); batch of 4: {r['batch4_step_ms']:.1f} ms/step = "
              f"{r['batch4_over_one']:.2f}x one (PyTorch's kernels: "
              f"{t['torch_kernels_batch4_step_ms'] / t['torch_kernels_ms']:.2f}x)", flush=True)
    if baseline is not None:
        i, d = res["image"], res["decode"]
        res["speedup_vs_transformers"] = {"vit": i["baseline_vit_s"] / i["vit_s"],
                                          "prefill": i["baseline_prefill_s"] / i["prefill_s"],
                                          "decode": res["decode_torch"]["baseline_ms"] / d["ms"]}
        print("speed-up over transformers: " + ", ".join(f"{k} {v:.2f}x" for k, v in res["speedup_vs_transformers"].items()),
              flush=True)
        del baseline
        gc.collect()
    wanted = [f for f in ("int8", "int4") if f in parts and (f != "int4" or ks is not None)]
    if "int4" in parts and ks is None:
        res["int4"] = {"skipped": "int4 needs the decode kernels (--isa torch or none for this CPU)"}
    if wanted:
        saved = float_weights(model)
        ref = logits_trace(model)
        for fmt in wanted:
            r = res[fmt] = bench_quantized(model, cfg, limits, fmt, saved, ref, ks, n_decode, repeats)
            extra = (f"; PyTorch's int8 kernel {r['torch_int8_kernel_ms']:.1f} ms"
                     if "torch_int8_kernel_ms" in r else "")
            print(f"{fmt}: decode {r['ms']:.1f} ms/token ({r['fraction_of_limit']:.0%} of its {r['limit_ms']:.1f} ms "
                  f"read limit at {r['read_gbps_beside']:.1f} GB/s, {r['fraction_of_start_limit']:.0%} of the start's"
                  f"{extra}), batch of 4 {r['batch4_over_one']:.2f}x one; vs float logits: KL {r['kl']:.2e}, "
                  f"mean |diff| {r['logits_mean_abs_diff']:.3f} (std {r['logits_ref_std']:.2f}), top-1 "
                  f"{r['top1_agreement']:.0%}; quantized in {r['quantize_s']:.0f} s", flush=True)
    if "llama_cpp" in res and "quants" in res["llama_cpp"]:
        res["vs_llama_cpp"] = versus_llama(res)
        for row in res["vs_llama_cpp"]:
            around = row.get("llama_cpp_read_gbps_around")
            when = (f" (read bandwidth: jvlm's row {row['jvlm_read_gbps_beside']:.0f} GB/s, llama.cpp's "
                    f"{around[0]:.0f} -> {around[1]:.0f} GB/s)" if around and row.get("jvlm_read_gbps_beside") else "")
            print(f"vs llama.cpp {row['what']}: jvlm {row['jvlm']:.1f} {row['unit']}, llama.cpp {row['llama_cpp']:.1f} "
                  f"-> jvlm {row['jvlm_advantage']:.2f}x{when}", flush=True)
    return _finish(res, args.out)


def versus_llama(res: dict) -> list[dict]:
    """jvlm beside llama.cpp at equal bits: decode ms/token (lower is better) and prefill
    tokens/s (higher is better); ``jvlm_advantage`` > 1 where jvlm is faster."""
    q = res["llama_cpp"]["quants"]
    rows = []
    pairs = (("bf16", res.get("decode"), "BF16"), ("int8", res.get("int8"), "Q8_0"), ("int4", res.get("int4"), "Q4_K_M"))
    for ours, mine, theirs in pairs:
        if mine and "ms" in mine and q.get(theirs, {}).get("decode_ms_per_token"):
            rows.append({"what": f"decode {ours} vs {theirs}", "unit": "ms/token", "jvlm": mine["ms"],
                         "llama_cpp": q[theirs]["decode_ms_per_token"],
                         "jvlm_advantage": q[theirs]["decode_ms_per_token"] / mine["ms"],
                         "jvlm_read_gbps_beside": mine.get("read_gbps_beside"),
                         "llama_cpp_read_gbps_around": q[theirs].get("read_gbps_around")})
    image = res.get("image")
    if image and q.get("BF16", {}).get("prefill_tok_s"):
        rows.append({"what": f"prefill ({res['compute_dtype']}) vs BF16", "unit": "tokens/s",
                     "jvlm": image["prefill_tokens_per_s"], "llama_cpp": q["BF16"]["prefill_tok_s"],
                     "jvlm_advantage": image["prefill_tokens_per_s"] / q["BF16"]["prefill_tok_s"]})
    return rows


def _finish(res: dict, out: str | None) -> dict:
    res["load_average_end"] = os.getloadavg()
    if out:
        with open(out, "w") as fh:
            json.dump(res, fh, indent=2, default=str)
    return res


if __name__ == "__main__":
    main()
