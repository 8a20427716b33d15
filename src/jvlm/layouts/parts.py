"""The parts layout: a SigLIP vision checkpoint and a Qwen3 checkpoint, read to start training.

The paper starts from SigLIP2-So400M/14-384 and Qwen3-1.7B-Base (spec §11). Both parts are
in their Hugging Face layouts (``SiglipVisionModel`` or full ``SiglipModel`` key names, with
or without the ``vision_model.`` prefix; ``Qwen3ForCausalLM`` key names); ``ADAPTER.join``
puts them into one state dict under the ``siglip.`` and ``qwen3.`` namespaces, so the layout
is recognisable and no key of one part can be mistaken for one of the other. Mapping is
strict: every tensor our model takes from a part must be there, and every tensor of a part
must be used or deliberately ignored (SigLIP's pooling head and text tower). The connector
and the new embedding rows are not in either part; the caller adds them. Another vision
tower's parts layout is a ``VisionPart`` (its key table) and one more ``PartsLayout``.

Differences from the Hugging Face modules, handled by the tables below:
- SigLIP's Conv2d patch embedding [W, C, p, p] becomes a Linear over patches flattened in
  (dy, dx, channel) order, the order ``processing.image`` produces: [W, p*p*C].
- q/k/v projections are fused into one ``qkv_w`` with separate bias vectors.
- Qwen3's MLP ``down(silu(gate(x)) * up(x))`` is stored as one ``up`` = [up_proj | gate_proj]
  ([value | gate], spec §7).
- Qwen3 has q/k/v biases only with ``attention_bias``; ours always exist, zero when absent.
- Qwen3-1.7B ties lm_head to the embeddings; the release stores lm_head separately, so the
  embedding is copied into an untied head.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from jvlm.config import JinaVLMConfig
from jvlm.errors import CheckpointError
from jvlm.layouts import official
from jvlm.layouts.base import StateDict, StateDictAdapter

#: the Qwen3 part's namespace in a parts state dict (the vision part's is in its ``VisionPart``)
TEXT_NAMESPACE = "qwen3."

Combine = Callable[..., torch.Tensor]
#: (our key under the table's prefix, the part's keys, how to combine them or None for one key);
#: ``{L}`` in a key stands for each layer number
Table = list[tuple[str, tuple[str, ...], Combine | None]]


def _cat(*ts: torch.Tensor) -> torch.Tensor:
    return torch.cat(ts, dim=0)


def _conv_to_linear(w: torch.Tensor) -> torch.Tensor:
    """[W, C, p, p] Conv2d kernel -> [W, p*p*C] Linear weight over (dy, dx, c)-ordered patches."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


# our keys under model.vision_model.; SigLIP keys after stripping 'vision_model.'
SIGLIP_TABLE: Table = [
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

# our keys under model.language_model.; Qwen3ForCausalLM keys
QWEN3_TABLE: Table = [
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
# Optional Qwen3 tensors (attention_bias): taken when present, zeros otherwise.
QWEN3_BIASES: list[tuple[str, str]] = [
    ("layers.{L}.attn.q_b", "model.layers.{L}.self_attn.q_proj.bias"),
    ("layers.{L}.attn.k_b", "model.layers.{L}.self_attn.k_proj.bias"),
    ("layers.{L}.attn.v_b", "model.layers.{L}.self_attn.v_proj.bias"),
]


def map_keys(sd: StateDict, table: Table, n_layers: int, prefix: str, what: str,
             ignored: re.Pattern | None = None) -> StateDict:
    """Apply a key table strictly: every source key must be used or ignored, none missing."""
    out: StateDict = {}
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


@dataclass(frozen=True)
class VisionPart:
    """A vision checkpoint in its Transformers layout, as one part of a parts state dict."""

    #: what error messages call it
    title: str
    #: the part's namespace in a parts state dict
    namespace: str
    #: its key table (our keys under ``model.vision_model.``)
    table: Table
    #: its tensors our model does not take (another tower, a pooling head)
    ignored: re.Pattern | None = None
    #: a key prefix some of its checkpoints have and others not, removed before the table applies
    optional_prefix: str = ""


SIGLIP = VisionPart("SigLIP", "siglip.", SIGLIP_TABLE, ignored=SIGLIP_IGNORED, optional_prefix="vision_model.")


class PartsLayout(StateDictAdapter):
    """A vision part plus a Qwen3 part (``TEXT_NAMESPACE``), mapped to official names.

    Everything but the connector and the new embedding rows comes out; the caller adds those.
    The layout is recognised by its vision namespace, which tells the parts layouts apart.
    """

    def __init__(self, name: str, vision: VisionPart) -> None:
        self.name = name
        self.prefixes = (vision.namespace,)
        self.vision = vision

    def join(self, vision: StateDict, text: StateDict) -> StateDict:
        """One parts state dict from the vision checkpoint's and the Qwen3 checkpoint's tensors."""
        return {**{self.vision.namespace + k: t for k, t in vision.items()},
                **{TEXT_NAMESPACE + k: t for k, t in text.items()}}

    def to_official(self, sd: StateDict, cfg: JinaVLMConfig) -> StateDict:
        vision, text = self._split(sd)
        part = self.vision
        out = map_keys(vision, part.table, cfg.vision.n_layers, "model.vision_model.", part.title, part.ignored)
        for ours, theirs in QWEN3_BIASES:
            for layer in range(cfg.text.n_layers):
                key = theirs.replace("{L}", str(layer))
                if key in text:
                    out["model.language_model." + ours.replace("{L}", str(layer))] = text.pop(key)
        head = text.pop("lm_head.weight", None)
        out.update(map_keys(text, QWEN3_TABLE, cfg.text.n_layers, "model.language_model.", "Qwen3"))
        embed = out["model.language_model.embedding.embedding"]
        out["lm_head.weight"] = head if head is not None else embed.clone()  # untie a tied Qwen3 head
        official.zero_absent_text_biases(out, official.expected_shapes(cfg))
        return out

    def _split(self, sd: StateDict) -> tuple[StateDict, StateDict]:
        """(vision part without its namespace and optional prefix, Qwen3 part without its namespace)."""
        ns, strip = self.vision.namespace, self.vision.optional_prefix
        vision: StateDict = {}
        text: StateDict = {}
        stray = []
        for key, t in sd.items():
            if key.startswith(ns):
                name = key[len(ns):]
                vision[name[len(strip):] if strip and name.startswith(strip) else name] = t
            elif key.startswith(TEXT_NAMESPACE):
                text[key[len(TEXT_NAMESPACE):]] = t
            else:
                stray.append(key)
        if stray:
            raise CheckpointError(f"{len(stray)} tensors of a {self.name} state dict belong to neither part "
                                  f"({ns}* or {TEXT_NAMESPACE}*): {', '.join(sorted(stray)[:10])}")
        return vision, text


ADAPTER = PartsLayout("parts", SIGLIP)
