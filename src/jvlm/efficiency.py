"""What one image costs: tokens, prefill FLOPs and KV-cache bytes, in the paper's convention and for real.

The paper's efficiency table (12 tiles + thumbnail, "no pooling vs pooling": 9,477 vs 2,366
visual tokens, 27.2 vs 6.9 TFLOPs, 2.12 vs 0.53 GB of KV cache) uses *nominal* token counts,
13 x 729 and 13 x round(729 / 4). The real processor keeps fewer features (overlap cells are
dropped) but adds row, start and end tokens; ``image_layout`` gives those counts. This module
reproduces the paper's figures (spec section 12) and prints the real ones beside them.

Conventions, all derived from the config (nothing is hard-coded for the release):
- FLOPs count 2 per weight per token for linear layers only: the decoder body (no embeddings,
  no lm_head, no attention scores) plus the projector; on the pooled side also the pooling
  attention's q/kv/out projections. Biases are additions, not multiply-adds, and are left out.
- Paper KV cache: 2 (K, V) x layers x hidden x 2 bytes per token, and "GB" = 10^6 KiB. That
  ignores grouped-query attention; the true bf16 cache uses n_kv_heads x head_dim per layer.
"""

from __future__ import annotations

from typing import Any

from jvlm.config import JinaVLMConfig
from jvlm.processing.image import image_layout

_BF16_BYTES = 2
_PAPER_GB_BYTES = 1024 * 10**6  # the paper's "GB": 10^6 KiB


def llm_body_params(cfg: JinaVLMConfig) -> int:
    """Decoder weights every token multiplies: attention, MLP and norm weights, plus the final norm."""
    t = cfg.text
    q, kv = t.n_heads * t.head_dim, t.n_kv_heads * t.head_dim
    attn = t.hidden_size * (q + 2 * kv) + q * t.hidden_size + 2 * t.head_dim  # qkv, out, q/k norms
    mlp = t.hidden_size * 2 * t.mlp_size + t.mlp_size * t.hidden_size  # fused value|gate up, down
    return t.n_layers * (attn + mlp + 2 * t.hidden_size) + t.hidden_size


def projector_params(cfg: JinaVLMConfig) -> int:
    """SwiGLU projector from the pooled width into the decoder width (no biases)."""
    width, inner = cfg.vision.hidden_size, cfg.connector.projector_size
    return width * 2 * inner + inner * cfg.text.hidden_size


def _pooling_shapes(cfg: JinaVLMConfig) -> tuple[int, int, int]:
    """(concatenated feature width, attention inner width, output width) of the 2x2 pooling."""
    feat = len(cfg.vision.vit_layers) * cfg.vision.hidden_size
    return feat, cfg.connector.n_heads * cfg.connector.head_dim, cfg.vision.hidden_size


def vit_linear_params(cfg: JinaVLMConfig) -> int:
    """ViT weights multiplied per patch over the blocks that must run to reach every tap."""
    v = cfg.vision
    block = 4 * v.hidden_size**2 + 2 * v.hidden_size * v.mlp_size  # qkv + out, up + down
    return v.patch_dim * v.hidden_size + v.n_layers_used() * block


def efficiency_report(width: int, height: int, cfg: JinaVLMConfig, max_crops: int | None = None) -> dict[str, Any]:
    """Token, FLOP and KV-cache figures for one ``width`` x ``height`` image (see the module doc)."""
    im, t, v = cfg.image, cfg.text, cfg.vision
    lay = image_layout(height, width, im, max_crops)
    n = lay.n_crops
    patches_per_crop = im.grid * im.grid  # 729
    window = im.pooling_h * im.pooling_w
    th, tw = lay.crop_pooled_hw

    nominal_unpooled = n * patches_per_crop  # 13 * 729 = 9,477
    nominal_pooled = n * round(patches_per_crop / window)  # 13 * 182 = 2,366
    connector_tokens = n * th * tw  # pooled cells computed before overlap cells are dropped

    body, proj = llm_body_params(cfg), projector_params(cfg)
    feat, inner, out = _pooling_shapes(cfg)

    def pooling_flops(kv_inputs: int, queries: int) -> int:
        return 2 * (feat * 2 * inner * kv_inputs + feat * inner * queries + inner * out * queries)

    # The paper's columns are attention pooling by definition; the "real" column and the
    # parameter count follow the configured connector: "mean" and "none" average each
    # window (additions only) and then apply just the ``out`` matrix.
    attention = cfg.connector.pooling_type == "attention_meanq"
    pooling_params = feat * 3 * inner + inner * out if attention else feat * out
    real_pooling = (pooling_flops(connector_tokens * window, connector_tokens) if attention
                    else 2 * feat * out * connector_tokens)

    flops_unpooled = 2 * (body + proj) * nominal_unpooled
    flops_pooled = 2 * (body + proj) * nominal_pooled + pooling_flops(nominal_unpooled, nominal_pooled)
    # What the model really does: the decoder reads the whole image block; the connector pools
    # every 2x2 window of the zero-padded grid and projects every pooled cell.
    flops_real = (
        2 * body * lay.n_block_tokens
        + 2 * proj * connector_tokens
        + real_pooling
    )

    kv_paper = 2 * t.n_layers * t.hidden_size * _BF16_BYTES
    kv_gqa = 2 * t.n_layers * t.n_kv_heads * t.head_dim * _BF16_BYTES
    vit_tokens = n * v.n_patches
    vit_linear = 2 * vit_linear_params(cfg) * vit_tokens
    vit_attention = 2 * 2 * v.n_patches * v.hidden_size * v.n_layers_used() * vit_tokens  # QK^T and AV

    return {
        "width": width,
        "height": height,
        "max_crops": im.max_crops if max_crops is None else max_crops,
        "resized_hw": lay.resized_hw,
        "tiling": lay.tiling,
        "stretched_hw": lay.stretched_hw,
        "pooled_hw": lay.pooled_hw,
        "n_crops": n,
        "tokens": {
            "nominal_unpooled": nominal_unpooled,
            "nominal_pooled": nominal_pooled,
            "feature_tokens": lay.n_feature_tokens,
            "block_tokens": lay.n_block_tokens,
            "connector_tokens": connector_tokens,
        },
        "params": {
            "llm_body": body,
            "projector": proj,
            "pooling": pooling_params,
            "vit_linear": vit_linear_params(cfg),
            "vit_layers_used": v.n_layers_used(),
        },
        "prefill_flops": {"paper_unpooled": flops_unpooled, "paper_pooled": flops_pooled, "real": flops_real},
        "kv_bytes_per_token": {"paper": kv_paper, "gqa": kv_gqa},
        "kv_cache": {
            "paper_gb_unpooled": nominal_unpooled * kv_paper / _PAPER_GB_BYTES,
            "paper_gb_pooled": nominal_pooled * kv_paper / _PAPER_GB_BYTES,
            "paper_gb_real": lay.n_block_tokens * kv_paper / _PAPER_GB_BYTES,
            "gqa_bytes_unpooled": nominal_unpooled * kv_gqa,
            "gqa_bytes_pooled": nominal_pooled * kv_gqa,
            "gqa_bytes_real": lay.n_block_tokens * kv_gqa,
        },
        "vit_flops": {"linear": vit_linear, "attention": vit_attention},
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table: the paper's nominal figures beside what this model really uses."""
    r, tok, fl, kv = report, report["tokens"], report["prefill_flops"], report["kv_cache"]
    rows, cols = r["tiling"]
    (rh, rw), (sh, sw), (ph, pw) = r["resized_hw"], r["stretched_hw"], r["pooled_hw"]
    per_tok = r["kv_bytes_per_token"]
    f_div, f_unit = _unit(fl["paper_unpooled"], "FLOPs")
    b_div, b_unit = _unit(kv["gqa_bytes_unpooled"], "B")
    # The paper's "GB" is 10^6 KiB; smaller models fall back to plain decimal units.
    paper_div = 1.0 if b_unit == "GB" else b_div / _PAPER_GB_BYTES
    vit = r["vit_flops"]
    lines = [
        f"Image {r['width']}×{r['height']} (W×H), max_crops {r['max_crops']}",
        f"  smart-resized   {rw}×{rh}",
        f"  tiling          {cols} cols × {rows} rows = {rows * cols} tiles + thumbnail = {r['n_crops']} crops",
        f"  stretched to    {sw}×{sh}",
        f"  pooled grid     {pw}×{ph} over the tiles, plus the thumbnail's grid",
        "",
        _row("", "no pooling", "pooling", "real"),
        _row("", "(paper)", "(paper)", "(this model)"),
        _row("visual tokens", f"{tok['nominal_unpooled']:,}", f"{tok['nominal_pooled']:,}", f"{tok['block_tokens']:,}"),
        _row("  of which receive features", "", "", f"{tok['feature_tokens']:,}"),
        _row(f"LLM prefill {f_unit}", f"{fl['paper_unpooled'] / f_div:.1f}", f"{fl['paper_pooled'] / f_div:.1f}",
             f"{fl['real'] / f_div:.2f}"),
        _row(f"KV cache, paper {b_unit}", f"{kv['paper_gb_unpooled'] / paper_div:.2f}",
             f"{kv['paper_gb_pooled'] / paper_div:.2f}", f"{kv['paper_gb_real'] / paper_div:.2f}"),
        _row(f"KV cache, GQA bf16 {b_unit}", f"{kv['gqa_bytes_unpooled'] / b_div:.2f}",
             f"{kv['gqa_bytes_pooled'] / b_div:.2f}", f"{kv['gqa_bytes_real'] / b_div:.2f}"),
        "",
        (
            f"ViT ({r['n_crops']} crops, {r['params']['vit_layers_used']} blocks run, same with or without pooling): "
            f"{vit['linear'] / f_div:.1f} {f_unit} in linear layers + {vit['attention'] / f_div:.1f} in attention scores"
        ),
        "Paper convention: 2 FLOPs per weight per token (decoder body + projector, plus the pooling",
        f"projections on the pooled side); KV cache {per_tok['paper']:,} B/token (2 x layers x hidden x",
        f"2 bytes, GB = 10^6 KiB). With grouped-query attention the cache is {per_tok['gqa']:,} B/token.",
    ]
    return "\n".join(lines)


def _unit(value: float, base: str) -> tuple[float, str]:
    """A divisor and unit so the table stays readable for the release and for tiny test models."""
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if value >= div:
            return div, prefix + base
    return 1e3, "k" + base


def _row(label: str, a: str, b: str, c: str) -> str:
    return f"{label:<30}{a:>13}{b:>13}{c:>14}"
