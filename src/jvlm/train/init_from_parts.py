"""A new Jina-VLM from its parts: a SigLIP vision checkpoint and a Qwen3 checkpoint (spec §11).

The paper starts from SigLIP2-So400M/14-384 and Qwen3-1.7B-Base; the connector and the 128
new embedding rows are new. Both parts are read in their Hugging Face layouts
(``SiglipVisionModel`` or full ``SiglipModel`` key names, with or without the
``vision_model.`` prefix; ``Qwen3ForCausalLM`` key names) and mapped by the tables below into
the official Jina-VLM layout, then loaded strictly: every tensor the model needs must come
from a part or be new, and every tensor of a part must be used or deliberately ignored
(SigLIP's pooling head and text tower).

Differences from the Hugging Face modules, handled here:
- SigLIP's Conv2d patch embedding [W, C, p, p] becomes a Linear over patches flattened in
  (dy, dx, channel) order, the order ``processing.image`` produces: [W, p*p*C].
- q/k/v projections are fused into one ``qkv_w`` with separate bias vectors.
- Qwen3's MLP ``down(silu(gate(x)) * up(x))`` is stored as one ``up`` = [up_proj | gate_proj]
  ([value | gate], spec §7).
- Qwen3-1.7B ties lm_head to the embeddings; the release stores lm_head separately, so the
  embedding is copied into an untied head.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch

from jvlm import weights
from jvlm.config import (
    ConnectorConfig,
    ImageProcessingConfig,
    JinaVLMConfig,
    TextConfig,
    VisionConfig,
)
from jvlm.errors import CheckpointError, ModelFolderError, TokenizerError
from jvlm.model.vlm import JinaVLMForConditionalGeneration

log = logging.getLogger(__name__)

Combine = Callable[..., torch.Tensor]


def _cat(*ts: torch.Tensor) -> torch.Tensor:
    return torch.cat(ts, dim=0)


def _conv_to_linear(w: torch.Tensor) -> torch.Tensor:
    """[W, C, p, p] Conv2d kernel -> [W, p*p*C] Linear weight over (dy, dx, c)-ordered patches."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


# (our key under model.vision_model., SigLIP keys (after stripping 'vision_model.'), combine)
SIGLIP_TABLE: list[tuple[str, tuple[str, ...], Combine | None]] = [
    ("patch_embed.proj.weight", ("embeddings.patch_embedding.weight",), _conv_to_linear),
    ("patch_embed.proj.bias", ("embeddings.patch_embedding.bias",), None),
    ("pos_embed", ("embeddings.position_embedding.weight",), None),
    ("layers.{L}.attn_lnorm.weight", ("encoder.layers.{L}.layer_norm1.weight",), None),
    ("layers.{L}.attn_lnorm.bias", ("encoder.layers.{L}.layer_norm1.bias",), None),
    ("layers.{L}.attn.qkv_w.weight", tuple(f"encoder.layers.{{L}}.self_attn.{x}_proj.weight" for x in "qkv"), _cat),
    ("layers.{L}.attn.q_b", ("encoder.layers.{L}.self_attn.q_proj.bias",), None),
    ("layers.{L}.attn.k_b", ("encoder.layers.{L}.self_attn.k_proj.bias",), None),
    ("layers.{L}.attn.v_b", ("encoder.layers.{L}.self_attn.v_proj.bias",), None),
    ("layers.{L}.attn.out.weight", ("encoder.layers.{L}.self_attn.out_proj.weight",), None),
    ("layers.{L}.attn.out.bias", ("encoder.layers.{L}.self_attn.out_proj.bias",), None),
    ("layers.{L}.ffn_lnorm.weight", ("encoder.layers.{L}.layer_norm2.weight",), None),
    ("layers.{L}.ffn_lnorm.bias", ("encoder.layers.{L}.layer_norm2.bias",), None),
    ("layers.{L}.ffn.up.weight", ("encoder.layers.{L}.mlp.fc1.weight",), None),
    ("layers.{L}.ffn.up.bias", ("encoder.layers.{L}.mlp.fc1.bias",), None),
    ("layers.{L}.ffn.down.weight", ("encoder.layers.{L}.mlp.fc2.weight",), None),
    ("layers.{L}.ffn.down.bias", ("encoder.layers.{L}.mlp.fc2.bias",), None),
    ("post_lnorm.weight", ("post_layernorm.weight",), None),
    ("post_lnorm.bias", ("post_layernorm.bias",), None),
]
SIGLIP_IGNORED = re.compile(r"^(head\.|text_model\.|logit_scale$|logit_bias$)")

# (our key under model.language_model. or top level, Qwen3 keys, combine)
QWEN3_TABLE: list[tuple[str, tuple[str, ...], Combine | None]] = [
    ("embedding.embedding", ("model.embed_tokens.weight",), None),
    ("layers.{L}.attn_lnorm.weight", ("model.layers.{L}.input_layernorm.weight",), None),
    ("layers.{L}.attn.qkv_w.weight", tuple(f"model.layers.{{L}}.self_attn.{x}_proj.weight" for x in "qkv"), _cat),
    ("layers.{L}.attn.q_lnorm.weight", ("model.layers.{L}.self_attn.q_norm.weight",), None),
    ("layers.{L}.attn.k_lnorm.weight", ("model.layers.{L}.self_attn.k_norm.weight",), None),
    ("layers.{L}.attn.out.weight", ("model.layers.{L}.self_attn.o_proj.weight",), None),
    ("layers.{L}.ffn_lnorm.weight", ("model.layers.{L}.post_attention_layernorm.weight",), None),
    # differs from Qwen3: one fused [value | gate] matrix; value = up_proj, gate = gate_proj
    ("layers.{L}.ffn.up.weight", ("model.layers.{L}.mlp.up_proj.weight", "model.layers.{L}.mlp.gate_proj.weight"), _cat),
    ("layers.{L}.ffn.down.weight", ("model.layers.{L}.mlp.down_proj.weight",), None),
    ("ln_f.weight", ("model.norm.weight",), None),
]
# Qwen3 has no q/k/v biases unless attention_bias is set; ours are always added (zeros then).
QWEN3_BIASES = [("layers.{L}.attn.q_b", "model.layers.{L}.self_attn.q_proj.bias"),
                ("layers.{L}.attn.k_b", "model.layers.{L}.self_attn.k_proj.bias"),
                ("layers.{L}.attn.v_b", "model.layers.{L}.self_attn.v_proj.bias")]


def map_keys(sd: dict[str, torch.Tensor], table, n_layers: int, prefix: str, what: str,
             ignored: re.Pattern | None = None) -> dict[str, torch.Tensor]:
    """Apply a key table strictly: every source key must be used or ignored, none missing."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for ours, theirs, combine in table:
        for layer in range(n_layers) if "{L}" in ours else [None]:
            names = [t.replace("{L}", str(layer)) for t in theirs]
            absent = [n for n in names if n not in sd]
            if absent:
                missing.extend(absent)
                continue
            tensors = [sd[n] for n in names]
            out[prefix + ours.replace("{L}", str(layer))] = combine(*tensors) if combine else tensors[0]
            used.update(names)
    unused = sorted(k for k in sd if k not in used and not (ignored and ignored.search(k)))
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {', '.join(missing[:10])}")
        if unused:
            parts.append(f"{len(unused)} not understood: {', '.join(unused[:10])}")
        raise CheckpointError(f"the {what} checkpoint does not match its config — " + " | ".join(parts))
    return out


# ------------------------------------------------------------------- configs
def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFolderError(f"{folder} has no config.json; expected a Hugging Face model folder")
    return json.loads(path.read_text())


def vision_config_from_siglip(hf: dict, vit_layers: tuple[int, ...]) -> VisionConfig:
    """SiglipVisionConfig (or SiglipConfig.vision_config) -> our VisionConfig."""
    if hf.get("model_type") in ("siglip", "siglip2"):
        hf = hf.get("vision_config") or {}
    if hf.get("model_type", "siglip_vision_model") not in ("siglip_vision_model",):
        raise CheckpointError(
            f"vision part has model_type {hf.get('model_type')!r}; expected a fixed-resolution SigLIP "
            "(siglip_vision_model), e.g. google/siglip2-so400m-patch14-384 — NaFlex SigLIP2 is not supported"
        )
    act = hf.get("hidden_act", "gelu_pytorch_tanh")
    if act != "gelu_pytorch_tanh":
        raise CheckpointError(f"vision part uses activation {act!r}; the Jina-VLM ViT uses gelu_pytorch_tanh")
    patch = int(hf.get("patch_size", 16))
    grid = int(hf.get("image_size", 224)) // patch
    hidden, heads = int(hf.get("hidden_size", 768)), int(hf.get("num_attention_heads", 12))
    if int(hf.get("num_channels", 3)) != 3:
        raise CheckpointError("vision part must take 3-channel images")
    return VisionConfig(
        n_layers=int(hf.get("num_hidden_layers", 12)), hidden_size=hidden, n_heads=heads, head_dim=hidden // heads,
        mlp_size=int(hf.get("intermediate_size", 3072)), activation=act,
        image_size=grid * patch,  # SigLIP 384 px with 14 px patches sees 27 x 27 patches = 378 px
        patch_size=patch, n_channels=3, norm_eps=float(hf.get("layer_norm_eps", 1e-6)), norm_bias=True,
        vit_layers=tuple(vit_layers),
    )


def text_config_from_qwen3(hf: dict) -> TextConfig:
    if hf.get("model_type") != "qwen3":
        raise CheckpointError(f"text part has model_type {hf.get('model_type')!r}; expected 'qwen3'")
    if hf.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"text part uses activation {hf.get('hidden_act')!r}; expected silu")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise CheckpointError(f"text part uses RoPE scaling {rope}; only plain RoPE is supported")
    if hf.get("use_sliding_window"):
        raise CheckpointError("text part uses sliding-window attention, which the Jina-VLM decoder does not have")
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 1_000_000.0)))
    hidden, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    return TextConfig(
        n_layers=int(hf["num_hidden_layers"]), hidden_size=hidden, n_heads=heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or heads), head_dim=int(hf.get("head_dim") or hidden // heads),
        mlp_size=int(hf["intermediate_size"]), vocab_size=int(hf["vocab_size"]), embedding_size=None,
        additional_vocab_size=128, rope_theta=theta, norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qk_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        max_sequence_length=int(hf.get("max_position_embeddings", 40960)),
        tie_word_embeddings=False,  # the release stores lm_head separately (spec §9.1)
    )


# ------------------------------------------------------------------ tokenizer
def tokenizer_for_parts(spec: str | None, text_dir: Path, base_rows: int):
    """The tokenizer with the 128 Jina-VLM tokens on rows ``base_rows``.. .

    ``spec``: "tiny", "qwen" (rebuilt from qwen.tiktoken), or a folder; default the Qwen3 folder.
    A folder whose tokenizer lacks the Jina-VLM tokens is extended the way the project's own
    Qwen tokenizer is built (fillers up to ``base_rows``, then the extra tokens).
    """
    from transformers import PreTrainedTokenizerFast

    from jvlm.processing import text
    from jvlm.tools import tokenizers

    if spec == "tiny":
        return tokenizers.build_tiny_tokenizer()
    if spec == "qwen":
        return tokenizers.build_qwen_tokenizer()
    folder = Path(spec) if spec else text_dir
    if not (folder / "tokenizer.json").is_file():
        raise ModelFolderError(
            f"{folder} has no tokenizer.json; set model.tokenizer to a tokenizer folder, 'qwen' or 'tiny'"
        )
    if (folder / "tokenizer_config.json").is_file():
        tok = text.load_tokenizer(folder)
        if tok.convert_tokens_to_ids(text.STRUCTURAL_TOKENS[0]) == base_rows:
            return tok  # already a Jina-VLM tokenizer
    raw = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    if raw.convert_tokens_to_ids(text.ENDOFTEXT) is None:
        raise TokenizerError(f"{folder}'s tokenizer has no {text.ENDOFTEXT}; expected a Qwen3 tokenizer")
    backend = raw.backend_tokenizer
    # Qwen's own added tokens are already in the file, so nothing is added before the fillers.
    tokenizers.add_jvlm_tokens(backend, (), base_rows, 128)
    return tokenizers.wrap_tokenizer(backend, raw.model_max_length if raw.model_max_length < 10**9 else 40960)


# -------------------------------------------------------------------- build
def build_from_parts(vision_dir: str | Path, text_dir: str | Path, tokenizer: str | None = None,
                     vit_layers: tuple[int, ...] = (-4, -10), projector_size: int | None = None,
                     seed: int = 0, connector_init_std: float = 0.02, dtype: torch.dtype = torch.float32):
    """``(model, processor)``: SigLIP + Qwen3 weights, a fresh connector and fresh new rows."""
    from jvlm.processing.processor import JinaVLMProcessor

    vision_dir, text_dir = Path(vision_dir), Path(text_dir)
    v = vision_config_from_siglip(_read_config(vision_dir), vit_layers)
    t = text_config_from_qwen3(_read_config(text_dir))
    c = ConnectorConfig(n_heads=v.n_heads, head_dim=v.head_dim, projector_size=projector_size or t.mlp_size)
    image = ImageProcessingConfig(crop_size=v.image_size, patch_size=v.patch_size)
    cfg = JinaVLMConfig(vision=v, connector=c, text=t, image=image)
    tok = tokenizer_for_parts(tokenizer, text_dir, t.base_rows)
    processor = JinaVLMProcessor(tok, cfg)
    ids = processor.token_ids
    if ids.im_start != t.base_rows:
        raise TokenizerError(f"<im_start> has id {ids.im_start}, but the new rows start at {t.base_rows} (Qwen3 "
                             "vocab_size); the tokenizer does not belong to this Qwen3 checkpoint")
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id, cfg.image_token_index = ids.bos, ids.eos[0], ids.pad, ids.image
    cfg.validate()

    sd = {}
    vis = {re.sub(r"^vision_model\.", "", k): x for k, x in _read(vision_dir, dtype).items()}
    sd.update(map_keys(vis, SIGLIP_TABLE, v.n_layers, "model.vision_model.", "SigLIP", SIGLIP_IGNORED))
    qwen = _read(text_dir, dtype)
    biases = {}
    for ours, theirs in QWEN3_BIASES:
        for layer in range(t.n_layers):
            key = theirs.replace("{L}", str(layer))
            if key in qwen:
                biases["model.language_model." + ours.replace("{L}", str(layer))] = qwen.pop(key)
    head = qwen.pop("lm_head.weight", None)
    sd.update(map_keys(qwen, QWEN3_TABLE, t.n_layers, "model.language_model.", "Qwen3"))
    embed = sd["model.language_model.embedding.embedding"]
    sd["lm_head.weight"] = head if head is not None else embed.clone()  # untie a tied Qwen3 head
    gen = torch.Generator().manual_seed(seed)
    sd.update(_new_rows(embed, t.additional_vocab_size, gen))
    with torch.device("meta"):
        model = JinaVLMForConditionalGeneration(cfg)
    for key, p in model.state_dict().items():
        if key not in sd and key.startswith("model.language_model.") and key.endswith(("q_b", "k_b", "v_b")):
            sd[key] = biases.get(key, torch.zeros(p.shape, dtype=dtype))
    sd.update(_fresh_connector(model, gen, connector_init_std, dtype))
    weights.load_into(model, sd)
    model.use_token_ids(processor.token_ids)
    log.info("built a Jina-VLM from %s + %s: %.1fM parameters", vision_dir.name, text_dir.name,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, processor


def _read(folder: Path, dtype) -> dict[str, torch.Tensor]:
    return weights.read_tensors(weights.checkpoint_files(folder), dtype)


def _new_rows(embed: torch.Tensor, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """New token rows drawn around the average token (per-dimension mean and spread), so the
    decoder first sees them as ordinary-looking inputs yet each row is distinct."""
    e = embed.float()
    rows = e.mean(0) + torch.randn(n, e.shape[1], generator=gen) * e.std(0)
    return {"model.language_model.embedding.new_embedding": rows.to(embed.dtype)}


def _fresh_connector(model, gen: torch.Generator, std: float, dtype) -> dict[str, torch.Tensor]:
    """Connector weights ~ N(0, std); biases and the two padding embeddings start at zero."""
    out = {}
    for key, p in model.state_dict().items():
        if not key.startswith("model.vision_model.vl_connector."):
            continue
        if key.endswith(("bias", "_b", "pad_embed")):
            out[key] = torch.zeros(p.shape, dtype=dtype)
        else:
            out[key] = (torch.randn(p.shape, generator=gen) * std).to(dtype)
    return out
