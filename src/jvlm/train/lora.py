"""LoRA mode of ``jvlm train``: adapters on the decoder (and optionally the connector), with
PEFT's layers, adapter-only checkpoints in PEFT's file format, and a merged full folder at
the end.

With a ``lora:`` section in the training config, every pretrained weight is frozen and only
the low-rank adapters train. Checkpoints hold ``adapter/`` (``adapter_config.json`` +
``adapter_model.safetensors``, loadable with ``peft.PeftModel.from_pretrained`` onto the
Transformers class) instead of a full ``model/`` folder, and the run's ``final/`` folder is
the base model with the adapters merged in: an ordinary model folder for ``jvlm infer``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from jvlm.errors import CheckpointError, TrainConfigError

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_ADAPTER = "default"
_PATTERNS = {
    "decoder": r"model\.language_model\.layers\.\d+\.(attn\.(qkv_w|out)|ffn\.(up|down))",
    "connector": r"model\.vision_model\.vl_connector\.(pooling\.(q_w|kv_w|out)|projector\.\w+)",
}


def target_regex(targets) -> str:
    unknown = sorted(set(targets) - set(_PATTERNS))
    if unknown or not targets:
        raise TrainConfigError(f"lora.targets: {unknown or 'empty'}; choose from {sorted(_PATTERNS)}")
    return "|".join(f"({_PATTERNS[t]})" for t in targets)


def peft_config(section, base_model: str | None = None):
    try:
        from peft import LoraConfig
    except ImportError:
        raise TrainConfigError("the lora section needs PEFT: .venv/bin/pip install -e '.[transformers]'") from None
    return LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                      target_modules=target_regex(section.targets), base_model_name_or_path=base_model)


def add_adapters(model: nn.Module, section) -> dict[str, int]:
    """Insert LoRA layers and freeze everything else; returns parameter counts."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(peft_config(section), model, adapter_name=_ADAPTER)
    counts = {"adapter": 0, "frozen": 0}
    for name, p in model.named_parameters():
        train = ".lora_" in name
        p.requires_grad_(train)
        counts["adapter" if train else "frozen"] += p.numel()
    if not counts["adapter"]:
        raise TrainConfigError("lora: no module matched the targets; nothing would train")
    return counts


def adapter_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapter tensors under PEFT's saved names (``base_model.model.<module>.lora_A.weight``)."""
    out = {}
    for k, v in sd.items():
        if ".lora_" in k:
            out["base_model.model." + k.replace(f".{_ADAPTER}.", ".")] = v.detach().cpu().contiguous()
    return out


def save_adapter(folder: Path, sd: dict[str, torch.Tensor], section, base_model: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(sd), str(folder / ADAPTER_WEIGHTS))
    peft_config(section, base_model).save_pretrained(str(folder))


def load_adapter(model: nn.Module, folder: Path) -> None:
    """Put saved adapter tensors back into a model that ``add_adapters`` prepared."""
    try:
        saved = load_file(str(folder / ADAPTER_WEIGHTS))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read the adapter in {folder}: {e}") from None
    params = dict(model.named_parameters())
    for key, value in saved.items():
        name = key.removeprefix("base_model.model.").replace(".lora_A.", f".lora_A.{_ADAPTER}.") \
            .replace(".lora_B.", f".lora_B.{_ADAPTER}.")
        if name not in params:
            raise CheckpointError(f"adapter tensor {key} in {folder} fits no LoRA layer of this run's targets")
        with torch.no_grad():
            params[name].copy_(value)


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base weight and put the plain layer back."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    leftover = [n for n, _ in model.named_parameters() if ".lora_" in n]
    if leftover:
        raise CheckpointError(f"LoRA layers left after merging: {leftover[:3]}")
    return model


def describe(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())
