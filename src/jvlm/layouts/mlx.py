"""The MLX layout: the MLX conversion of the release (spec §9.2), as mlx-vlm reads it.

Against the official layout: norms are renamed, the connector sits at the top level, and
the separately stored q/k/v (and connector k/v) biases are fused into one bias per
projection. Only unquantised (float) MLX files are read. The tables below are the forward
direction (official -> MLX); reading runs the same plan backwards, so the two directions
cannot disagree.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import torch

from jvlm.config import JinaVLMConfig
from jvlm.errors import CheckpointError
from jvlm.layouts import official
from jvlm.layouts.base import StateDict, StateDictAdapter

log = logging.getLogger(__name__)

# (official regex, mlx replacement) for one-to-one renames; the first that matches applies.
RENAMES: list[tuple[str, str]] = [
    (r"^model\.vision_model\.vl_connector\.projector\.up\.", "vl_connector.projector.gate_up."),
    # Everything else of the connector (pad_embed, pooling.q/kv/out, projector.down) keeps its
    # name and moves to the top level, as mlx-vlm's Model.vl_connector expects.
    (r"^model\.vision_model\.vl_connector\.", "vl_connector."),
    (r"^model\.vision_model\.post_lnorm\.", "vision_model.post_norm."),
    (r"^model\.vision_model\.", "vision_model."),
    (r"^model\.language_model\.(layers\.\d+)\.attn\.q_lnorm\.", r"language_model.\1.attn.q_norm."),
    (r"^model\.language_model\.(layers\.\d+)\.attn\.k_lnorm\.", r"language_model.\1.attn.k_norm."),
    (r"^model\.language_model\.(layers\.\d+)\.ffn\.up\.", r"language_model.\1.ffn.gate_up."),
    (r"^model\.language_model\.", "language_model."),
]
# Norm names are shared by both towers: attn_lnorm -> attn_norm, ffn_lnorm -> ffn_norm.
NORMS: list[tuple[str, str]] = [(r"\.attn_lnorm\.", ".attn_norm."), (r"\.ffn_lnorm\.", ".ffn_norm.")]
# Fused groups: (official weight-key regex whose group 1 is the prefix, mlx projection name,
# official bias names concatenated in this order into the projection's bias).
FUSED: list[tuple[str, str, tuple[str, ...]]] = [
    (r"^(model\.vision_model\.layers\.\d+\.attn)\.qkv_w\.weight$", "qkv", ("q_b", "k_b", "v_b")),
    (r"^(model\.language_model\.layers\.\d+\.attn)\.qkv_w\.weight$", "qkv", ("q_b", "k_b", "v_b")),
    (r"^(model\.vision_model\.vl_connector\.pooling)\.q_w\.weight$", "q", ("q_b",)),
    (r"^(model\.vision_model\.vl_connector\.pooling)\.kv_w\.weight$", "kv", ("k_b", "v_b")),
]
# The MLX conversion has no text q/k/v bias (mlx-vlm's decoder qkv is bias=False): such a fused
# bias is left out when it is all zeros, and kept (so that nothing is lost silently and mlx-vlm's
# strict load refuses the file) when it is not.
TEXT_QKV_BIAS = re.compile(r"^language_model\.layers\.\d+\.attn\.qkv\.bias$")

Plan = dict[str, tuple[str, tuple[int, int] | None]]


def mlx_name(key: str) -> str:
    """The MLX name of an official key that is renamed one to one."""
    for pat, rep in RENAMES:
        new, n = re.subn(pat, rep, key)
        if n:
            key = new
            break
    for pat, rep in NORMS:
        key = re.sub(pat, rep, key)
    return key


def plan(shapes: Mapping[str, Sequence[int]]) -> Plan:
    """Official key -> (MLX key, row slice of a fused tensor or None), for the keys of ``shapes``."""
    out: Plan = {}
    for key in shapes:
        for pat, fused, biases in FUSED:
            m = re.match(pat, key)
            if not m:
                continue
            prefix = m.group(1)
            mprefix = mlx_name(prefix + ".x")[:-2]
            out[key] = (f"{mprefix}.{fused}.weight", None)
            offset = 0
            for b in biases:
                n = shapes[f"{prefix}.{b}"][0]
                out[f"{prefix}.{b}"] = (f"{mprefix}.{fused}.bias", (offset, offset + n))
                offset += n
    for key in shapes:
        out.setdefault(key, (mlx_name(key), None))
    return out


def official_to_mlx(sd: StateDict) -> StateDict:
    """Official-layout tensors -> MLX-conversion names (fused biases concatenated).

    Zero text q/k/v biases are left out, as in the released MLX conversion (see
    ``TEXT_QKV_BIAS``); ``lm_head.weight`` keeps the file name (mlx-vlm's ``sanitize``
    moves it to ``language_model.lm_head``).
    """
    out: StateDict = {}
    slices: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, (name, sl) in plan({k: t.shape for k, t in sd.items()}).items():
        if sl is None:
            out[name] = sd[key]
        else:
            slices.setdefault(name, []).append((sl[0], sd[key]))
    for name, parts in slices.items():
        fused = torch.cat([t for _, t in sorted(parts, key=lambda p: p[0])])
        if TEXT_QKV_BIAS.match(name):
            if not bool(fused.any()):
                continue  # absent from the MLX layout; mlx_to_official reads it back as zeros
            log.warning("%s is non-zero; mlx-vlm has no text q/k/v bias and will refuse this tensor", name)
        out[name] = fused
    return out


def mlx_to_official(sd: StateDict, shapes: Mapping[str, Sequence[int]]) -> StateDict:
    """MLX-conversion tensors -> official names, using ``shapes`` (official key -> shape) to
    split fused biases. Text q/k/v biases absent from MLX files (the conversion drops them
    when they are zero) load as zeros; tensors the plan does not know keep their names."""
    sd = dict(sd)
    if "language_model.lm_head.weight" in sd:  # mlx-vlm's own renaming of lm_head
        sd["lm_head.weight"] = sd.pop("language_model.lm_head.weight")
    if any(k.endswith(".scales") for k in sd):
        raise CheckpointError(
            "this MLX checkpoint is quantised (uint32 weights with .scales/.biases); only float "
            "(bf16/fp16/fp32) MLX conversions can be loaded"
        )
    out: StateDict = {}
    used: set[str] = set()
    for key, (name, sl) in plan(shapes).items():
        if name in sd:
            out[key] = sd[name] if sl is None else sd[name][sl[0]:sl[1]]
            used.add(name)
    official.zero_absent_text_biases(out, shapes)
    for name, t in sd.items():
        if name not in used:
            out[name] = t  # reported as unexpected by the strict check
    return out


class MLXLayout(StateDictAdapter):
    name = "mlx"
    prefixes = ("vision_model.", "vl_connector.", "language_model.")
    writes = True

    def to_official(self, sd: StateDict, cfg: JinaVLMConfig) -> StateDict:
        return mlx_to_official(sd, official.expected_shapes(cfg))

    def from_official(self, sd: StateDict, cfg: JinaVLMConfig) -> StateDict:
        return official_to_mlx(sd)


ADAPTER = MLXLayout()
