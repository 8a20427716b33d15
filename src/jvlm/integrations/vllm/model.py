"""Jina-VLM as a vLLM model: ``JinaVLMForConditionalGeneration``, the released architecture name.

What runs where:

- **Decoder** (Qwen3 layout): vLLM's own layers -- ``QKVParallelLinear`` / ``RowParallelLinear``
  attention projections, ``MergedColumnParallelLinear`` for the SwiGLU up projection, vLLM's
  paged ``Attention``, ``get_rope`` and ``RMSNorm`` -- so it shards over tensor-parallel ranks
  and uses vLLM's KV cache and kernels.
- **ViT and connector**: ``jvlm.model.vision.VisionTransformer`` (with its ``vl_connector``),
  the module the project itself runs, replicated on every rank. They process each image once
  at prefill and are small beside the decoder (0.4 B of 2.5 B parameters in the release).

Module names follow the checkpoint (``attn.qkv_w``, ``attn.out``, ``ffn.up``, ``attn_lnorm``,
``ln_f``...), so ``load_weights`` maps the official keys almost one to one. Three keys need
more than a rename: the fused text ``qkv_w`` is loaded as its q/k/v shards with ``q_b/k_b/v_b``
as the projection's bias; ``ffn.up`` is ``[value | gate]`` while vLLM's ``SiluAndMul`` wants
``[gate | value]``, so the halves swap shards; ``embedding.embedding`` and
``embedding.new_embedding`` become one vocabulary-parallel table.

Image features are *added* onto the ``<im_patch>`` embeddings (spec §8), not substituted for
them: ``embed_input_ids`` adds them where vLLM would overwrite.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.rotary_embedding import get_rope
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.interfaces import SupportsMultiModal
from vllm.model_executor.models.utils import maybe_prefix
from vllm.multimodal import MULTIMODAL_REGISTRY

from jvlm.config import SpecialTokens, TextConfig
from jvlm.errors import CheckpointError
from jvlm.integrations.vllm.processing import (
    JinaVLMDummyInputsBuilder,
    JinaVLMMultiModalProcessor,
    JinaVLMProcessingInfo,
)
from jvlm.model.vision import VisionTransformer

log = logging.getLogger(__name__)


class JinaVLMTextAttention(nn.Module):
    """GQA with per-head q/k RMSNorm before RoPE (Qwen3); q/k/v biases always added (Corrections 1)."""

    def __init__(self, cfg: TextConfig, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        if cfg.n_heads % tp or (cfg.n_kv_heads % tp and tp % cfg.n_kv_heads):
            raise ValueError(f"tensor parallel size {tp} does not divide the decoder's {cfg.n_heads} heads / "
                             f"{cfg.n_kv_heads} kv heads; pick a size that does")
        self.head_dim = cfg.head_dim
        self.n_heads = cfg.n_heads // tp
        self.n_kv_heads = max(1, cfg.n_kv_heads // tp)
        self.q_size, self.kv_size = self.n_heads * cfg.head_dim, self.n_kv_heads * cfg.head_dim
        quant = vllm_config.quant_config
        self.qkv_w = QKVParallelLinear(cfg.hidden_size, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, bias=True,
                                       quant_config=quant, prefix=f"{prefix}.qkv_w")
        self.out = RowParallelLinear(cfg.n_heads * cfg.head_dim, cfg.hidden_size, bias=False, quant_config=quant,
                                     prefix=f"{prefix}.out")
        self.q_lnorm = RMSNorm(cfg.head_dim, eps=cfg.norm_eps)
        self.k_lnorm = RMSNorm(cfg.head_dim, eps=cfg.norm_eps)
        self.rotary_emb = get_rope(cfg.head_dim, max_position=cfg.max_sequence_length,
                                   rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
        self.attn = Attention(self.n_heads, cfg.head_dim, cfg.head_dim ** -0.5, num_kv_heads=self.n_kv_heads,
                              cache_config=vllm_config.cache_config, quant_config=quant, prefix=f"{prefix}.attn")

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        qkv, _ = self.qkv_w(x)  # (T, (H + 2 KV) * D) on this rank
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = self.q_lnorm(q.view(-1, self.n_heads, self.head_dim)).view(q.shape)  # norm per head, then RoPE
        k = self.k_lnorm(k.view(-1, self.n_kv_heads, self.head_dim)).view(k.shape)
        q, k = self.rotary_emb(positions, q, k)
        y, _ = self.out(self.attn(q, k, v))
        return y


class JinaVLMTextMLP(nn.Module):
    """SwiGLU. ``up`` holds [gate | value] here (vLLM's SiluAndMul order); the checkpoint's
    [value | gate] halves are swapped at load time."""

    def __init__(self, cfg: TextConfig, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        quant = vllm_config.quant_config
        self.up = MergedColumnParallelLinear(cfg.hidden_size, [cfg.mlp_size, cfg.mlp_size], bias=False,
                                             quant_config=quant, prefix=f"{prefix}.up")
        self.down = RowParallelLinear(cfg.mlp_size, cfg.hidden_size, bias=False, quant_config=quant,
                                      prefix=f"{prefix}.down")
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, _ = self.up(x)
        y, _ = self.down(self.act(u))
        return y


class JinaVLMTextBlock(nn.Module):
    def __init__(self, cfg: TextConfig, vllm_config: VllmConfig, prefix: str):
        super().__init__()
        self.attn_lnorm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.attn = JinaVLMTextAttention(cfg, vllm_config, f"{prefix}.attn")
        self.ffn_lnorm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.ffn = JinaVLMTextMLP(cfg, vllm_config, f"{prefix}.ffn")

    def forward(self, positions, x, residual):
        # vLLM's fused norm keeps the residual stream apart: same sums as x += attn(norm(x)).
        if residual is None:
            residual, x = x, self.attn_lnorm(x)
        else:
            x, residual = self.attn_lnorm(x, residual)
        x = self.attn(positions, x)
        x, residual = self.ffn_lnorm(x, residual)
        return self.ffn(x), residual


class JinaVLMTextModel(nn.Module):
    """The decoder over token ids or embeddings; ``embedding`` covers base + extra rows."""

    def __init__(self, cfg: TextConfig, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        self.cfg = cfg
        self.embedding = VocabParallelEmbedding(cfg.total_rows, cfg.hidden_size,
                                                quant_config=vllm_config.quant_config,
                                                prefix=f"{prefix}.embedding")
        self.layers = nn.ModuleList(JinaVLMTextBlock(cfg, vllm_config, f"{prefix}.layers.{i}")
                                    for i in range(cfg.n_layers))
        self.ln_f = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(input_ids)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)  # (T, hidden)
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual)
        x, _ = self.ln_f(x, residual)
        return x


@MULTIMODAL_REGISTRY.register_processor(JinaVLMMultiModalProcessor, info=JinaVLMProcessingInfo,
                                        dummy_inputs=JinaVLMDummyInputsBuilder)
class JinaVLMForConditionalGeneration(nn.Module, SupportsMultiModal):
    """The whole model for vLLM: ViT + connector (jvlm modules), decoder and head (vLLM layers)."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return SpecialTokens().image
        raise ValueError(f"Jina-VLM takes images only, not {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        hf_config = vllm_config.model_config.hf_config
        self.jvlm_config = cfg = hf_config.to_jvlm()
        text = cfg.text
        self.tie_word_embeddings = text.tie_word_embeddings
        with self._mark_tower_model(vllm_config, "image"):
            self.vision_model = VisionTransformer(cfg)  # keys: model.vision_model.* (connector inside)
        with self._mark_language_model(vllm_config):
            self.language_model = JinaVLMTextModel(text, vllm_config, maybe_prefix(prefix, "language_model"))
        self.lm_head = ParallelLMHead(text.base_rows, text.hidden_size, quant_config=vllm_config.quant_config,
                                      prefix=maybe_prefix(prefix, "lm_head"))
        self.logits_processor = LogitsProcessor(text.base_rows)

    def get_language_model(self) -> nn.Module:
        return self.language_model

    # ------------------------------------------------------------------ images
    def embed_multimodal(self, **kwargs: object) -> list[torch.Tensor]:
        """Features of each image, ordered like its ``<im_patch>`` tokens: [(n_patch_tokens, hidden)]."""
        images = kwargs.get("images")
        if images is None:
            return []
        masks, idx, num_crops = kwargs["image_masks"], kwargs["image_input_idx"], kwargs["num_crops"]
        images, masks, idx = (_flat(t) for t in (images, masks, idx))  # (crops, P, 588), (crops, P), (crops, K)
        feats = self.vision_model(images[None], masks[None])[0]  # (crops, K, hidden)
        out = []
        counts = [int(n) for n in _flat(num_crops).reshape(-1).tolist()]
        for f, i in zip(feats.split(counts), idx.split(counts)):
            i = i.to(f.device).reshape(-1)
            keep = i >= 0  # dropped overlap cells feed no token
            order = torch.argsort(i[keep])  # block position order = the order vLLM fills placeholders
            out.append(f.reshape(-1, f.shape[-1])[keep][order])
        return out

    def embed_input_ids(self, input_ids: torch.Tensor, multimodal_embeddings=None, *,
                        is_multimodal: torch.Tensor | None = None) -> torch.Tensor:
        embeds = self.language_model.embed_input_ids(input_ids)  # (T, hidden), <im_patch> rows included
        if multimodal_embeddings is None or len(multimodal_embeddings) == 0:
            return embeds
        if is_multimodal is None:
            raise ValueError("image features were given without the positions they belong to (is_multimodal)")
        feats = torch.cat([e.reshape(-1, embeds.shape[-1]) for e in multimodal_embeddings])
        mask = is_multimodal.to(embeds.device)
        n_slots = int(mask.sum())
        if n_slots != feats.shape[0]:
            raise ValueError(f"image features and <im_patch> tokens disagree: {feats.shape[0]} features for "
                             f"{n_slots} <im_patch> positions")
        embeds[mask] = embeds[mask] + feats.to(embeds.dtype)  # added onto <im_patch> (spec §8)
        return embeds

    # ------------------------------------------------------------------ decoding
    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor:
        return self.language_model(input_ids, positions, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)

    # ------------------------------------------------------------------ weights
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Official checkpoint keys -> this module tree; returns the parameter names loaded."""
        params = dict(self.named_parameters())
        text = self.jvlm_config.text
        loaded: set[str] = set()
        table: dict[str, torch.Tensor] = {}

        def put(name: str, tensor: torch.Tensor, *shard) -> None:
            if name not in params:
                raise CheckpointError(f"checkpoint tensor maps to {name!r}, which this model does not have")
            param = params[name]
            getattr(param, "weight_loader", default_weight_loader)(param, tensor, *shard)
            loaded.add(name)

        for key, tensor in weights:
            if key.startswith("model.vision_model."):
                put("vision_model." + key[len("model.vision_model."):], tensor)
            elif key == "lm_head.weight":
                put("lm_head.weight", tensor)
            elif key.startswith("model.language_model."):
                rest = key[len("model.language_model."):]
                m = re.fullmatch(r"(layers\.\d+\.)(attn\.qkv_w\.weight|attn\.[qkv]_b|ffn\.up\.weight)", rest)
                if rest in ("embedding.embedding", "embedding.new_embedding"):
                    table[rest] = tensor
                elif m is None:
                    put("language_model." + rest, tensor)
                elif m.group(2) == "attn.qkv_w.weight":
                    q, k, v = tensor.split([text.n_heads * text.head_dim, text.n_kv_heads * text.head_dim,
                                            text.n_kv_heads * text.head_dim])
                    for shard, t in (("q", q), ("k", k), ("v", v)):
                        put(f"language_model.{m.group(1)}attn.qkv_w.weight", t, shard)
                elif m.group(2) == "ffn.up.weight":
                    value, gate = tensor.split([text.mlp_size, text.mlp_size])  # [value | gate] on disk
                    put(f"language_model.{m.group(1)}ffn.up.weight", gate, 0)
                    put(f"language_model.{m.group(1)}ffn.up.weight", value, 1)
                else:  # attn.q_b / k_b / v_b -> the fused projection's bias shards
                    put(f"language_model.{m.group(1)}attn.qkv_w.bias", tensor, m.group(2)[-3])
            else:
                raise CheckpointError(f"unexpected checkpoint tensor {key!r} for JinaVLMForConditionalGeneration")
        missing_table = {"embedding.embedding", "embedding.new_embedding"} - set(table)
        if missing_table:
            raise CheckpointError(f"the checkpoint lacks model.language_model.{sorted(missing_table)[0]}")
        put("language_model.embedding.weight",
            torch.cat([table["embedding.embedding"], table["embedding.new_embedding"]]))  # (total_rows, hidden)
        if "lm_head.weight" not in loaded:
            if not self.tie_word_embeddings:
                raise CheckpointError("the checkpoint has no lm_head.weight and text_config.tie_word_embeddings "
                                      "is false; the head cannot be built")
            put("lm_head.weight", table["embedding.embedding"])  # tied: the base rows only
        return loaded


def _flat(x) -> torch.Tensor:
    """vLLM hands flat per-crop fields over as one tensor, or as a list of per-item tensors."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.cat([t if t.dim() else t[None] for t in x])
