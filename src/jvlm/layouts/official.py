"""The official layout: the released Hugging Face checkpoint (spec §9.1).

Our module tree mirrors it, so its keys are our ``state_dict()`` keys and the adapter passes
tensors through unchanged. The expected keys and shapes of a config, and the rule that an
absent text q/k/v bias is zero, live here because the other layouts' adapters need them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from jvlm.config import JinaVLMConfig
from jvlm.layouts.base import StateDict, StateDictAdapter
from jvlm.model.vlm import JinaVLMForConditionalGeneration

#: the decoder's q/k/v biases: Qwen3 without ``attention_bias`` and the MLX conversion have none
TEXT_QKV_BIAS = re.compile(r"^model\.language_model\.layers\.\d+\.attn\.[qkv]_b$")


def expected_shapes(cfg: JinaVLMConfig) -> dict[str, torch.Size]:
    """Official key -> shape for a model of ``cfg``, read off a module tree built on the meta
    device (no memory for weights), so the key set follows the model code and never drifts."""
    with torch.device("meta"):
        model = JinaVLMForConditionalGeneration(cfg)
    return {k: t.shape for k, t in model.state_dict().items()}


def zero_absent_text_biases(sd: StateDict, shapes: Mapping[str, Sequence[int]]) -> None:
    """Add every text q/k/v bias of ``shapes`` that ``sd`` lacks as zeros (in place), in the
    dtype of its layer's fused qkv weight so the loaded model keeps one dtype."""
    for key, shape in shapes.items():
        if key in sd or not TEXT_QKV_BIAS.match(key):
            continue
        weight = sd.get(key.rsplit(".", 1)[0] + ".qkv_w.weight")
        sd[key] = torch.zeros(tuple(shape), dtype=weight.dtype if weight is not None else torch.float32)


class OfficialLayout(StateDictAdapter):
    name = "official"
    prefixes = ("model.",)
    writes = True

    def to_official(self, sd: StateDict, cfg: JinaVLMConfig) -> StateDict:
        return sd

    def from_official(self, sd: StateDict, cfg: JinaVLMConfig) -> StateDict:
        return sd


ADAPTER = OfficialLayout()
