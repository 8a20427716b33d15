"""A new Jina-VLM from its parts: a SigLIP vision checkpoint and a Qwen3 checkpoint (spec §11).

The paper starts from SigLIP2-So400M/14-384 and Qwen3-1.7B-Base; the connector and the 128
new embedding rows are new. The configs of both parts become a ``JinaVLMConfig`` here; their
tensors are mapped to the official layout by the parts adapter (``jvlm.layouts.parts``,
which also lists how the Hugging Face modules differ from ours), and the whole model is
then loaded strictly: every tensor the model needs must come from a part or be new, and
every tensor of a part must be used or deliberately ignored.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from jvlm import layouts, weights
from jvlm.config import (
    ConnectorConfig,
    ImageProcessingConfig,
    JinaVLMConfig,
    TextConfig,
    VisionConfig,
)
from jvlm.errors import CheckpointError, ModelFolderError, TokenizerError
from jvlm.layouts import parts
from jvlm.model.vlm import JinaVLMForConditionalGeneration

log = logging.getLogger(__name__)


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

    vision, text = _read(vision_dir, dtype), _read(text_dir, dtype)
    sd = layouts.to_official(parts.ADAPTER.join(vision, text), cfg, layout="parts")
    embed = sd["model.language_model.embedding.embedding"]
    gen = torch.Generator().manual_seed(seed)
    sd.update(_new_rows(embed, t.additional_vocab_size, gen))
    with torch.device("meta"):
        model = JinaVLMForConditionalGeneration(cfg)
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
