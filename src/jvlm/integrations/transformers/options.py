"""``from_pretrained`` options: each one takes effect or raises a clear error.

Transformers' own loader accepts many options; jvlm loads through its strict loader instead,
so every option it does not implement would otherwise be dropped silently. Here each known
option is applied (dtype, device placement, attention kernel, torchao quantization, hub
options) and anything else is refused with a ``TypeError`` naming it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from jvlm.processing.options import HUB_OPTIONS

log = logging.getLogger(__name__)

#: Passed by Transformers' auto classes and pipelines; harmless for jvlm.
_PLUMBING = {"trust_remote_code", "_from_auto", "_from_pipeline", "_commit_hash", "low_cpu_mem_usage",
             "code_revision", "adapter_kwargs", "use_safetensors", "subfolder", "config", "key_mapping",
             "proxies", "force_download", "resume_download", "offload_state_dict", "output_loading_info",
             "weights_only", "user_agent"}
_ATTN = ("sdpa", "eager", "flash_attention_2")


@dataclass
class LoadOptions:
    dtype: Any = None
    device_map: Any = None
    attn_implementation: str = "sdpa"
    quantization_config: Any = None
    hub: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> "LoadOptions":
        kw = dict(kwargs)
        opts = cls()
        dtype, torch_dtype = kw.pop("dtype", None), kw.pop("torch_dtype", None)
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them")
        opts.dtype = _dtype(dtype if dtype is not None else torch_dtype)
        if dtype is None and torch_dtype is None and isinstance(getattr(kw.get("config"), "dtype", None), torch.dtype):
            # some 5.x auto classes move dtype= into the config they pass on
            opts.dtype = kw["config"].dtype
        opts.device_map = kw.pop("device_map", None)
        attn = kw.pop("attn_implementation", None)
        given = kw.get("config")  # the auto classes move attn_implementation into the config
        if attn is None and given is not None:
            attn = getattr(given, "_attn_implementation_internal", None)
        opts.attn_implementation = _attn(attn)
        if kw.pop("load_in_8bit", False) or kw.pop("load_in_4bit", False):
            raise ValueError("load_in_8bit/load_in_4bit (bitsandbytes) are not supported by jvlm; for int8 "
                             "weights pass quantization_config=TorchAoConfig(Int8WeightOnlyConfig())")
        opts.quantization_config = kw.pop("quantization_config", None)
        for key in HUB_OPTIONS:
            if kw.get(key) is not None:
                opts.hub[key] = kw.pop(key)
            else:
                kw.pop(key, None)
        if kw.get("use_safetensors") is False:
            raise ValueError("jvlm loads safetensors only (use_safetensors=False is not supported)")
        if kw.get("subfolder"):
            raise ValueError("subfolder is not supported; pass the folder that holds config.json")
        if kw.get("output_loading_info"):
            raise ValueError("output_loading_info is not supported: jvlm's loading is strict, so every key matched")
        unknown = sorted(k for k in kw if k not in _PLUMBING)
        if unknown:
            raise TypeError(f"from_pretrained() got options jvlm does not support: {unknown}. Supported: dtype, "
                            "torch_dtype, device_map, attn_implementation, quantization_config, revision, "
                            "cache_dir, token, local_files_only")
        return opts


def _dtype(value) -> torch.dtype | None:
    from jvlm.loading import parse_dtype

    if value is None or value == "auto":
        return None
    if isinstance(value, dict):
        raise ValueError("a per-module dtype dict is not supported; pass one dtype")
    return parse_dtype(value)


def _attn(name: str | None) -> str:
    if name is None:
        return "sdpa"
    if name not in _ATTN:
        raise ValueError(f"attn_implementation={name!r} is not supported by jvlm; use one of {list(_ATTN)}")
    if name == "flash_attention_2":
        if not torch.cuda.is_available():
            raise ValueError("attn_implementation='flash_attention_2' needs a CUDA GPU; on this machine use "
                             "'sdpa' (the default) or 'eager'")
        # PyTorch's SDPA picks its FlashAttention-2 kernel on CUDA for fp16/bf16 inputs.
        return "sdpa"
    return name


def quantize(model: torch.nn.Module, config) -> None:
    """Apply a torchao ``TorchAoConfig`` to the decoder's and connector's linear layers."""
    if config is None:
        return
    from transformers import TorchAoConfig

    if isinstance(config, dict):
        if config.get("quant_method") != "torchao":
            raise ValueError(f"quantization_config with quant_method={config.get('quant_method')!r} is not "
                             "supported by jvlm; use TorchAoConfig")
        config = TorchAoConfig.from_dict(config)
    if not isinstance(config, TorchAoConfig):
        raise ValueError(f"quantization_config of type {type(config).__name__} is not supported by jvlm; use "
                         "transformers.TorchAoConfig(torchao.quantization.Int8WeightOnlyConfig())")
    from torchao.quantization import quantize_

    def only_decoder_and_head(module: torch.nn.Module, name: str) -> bool:
        # The vision tower runs once per image and is compute-bound: it stays in float.
        return isinstance(module, torch.nn.Linear) and not name.startswith("model.vision_model.")

    quantize_(model, config.get_apply_tensor_subclass(), filter_fn=only_decoder_and_head)
    model.config.quantization_config = config
    model.is_quantized = True
    log.info("quantized the decoder with torchao %s", type(config.quant_type).__name__)


def place(model: torch.nn.Module, device_map) -> None:
    """Move the model to ``device_map``: a device, ``{"": device}``, a full module->device map,
    or "auto"/"balanced"/"balanced_low_0"/"sequential" (computed by accelerate)."""
    from jvlm.loading import resolve_device

    if device_map is None:
        return
    if isinstance(device_map, (str, torch.device, int)) and str(device_map) not in (
            "auto", "balanced", "balanced_low_0", "sequential"):
        model.to(resolve_device(f"cuda:{device_map}" if isinstance(device_map, int) else device_map))
        return
    if isinstance(device_map, dict) and set(device_map) == {""}:
        model.to(resolve_device(device_map[""]))
        return
    try:
        from accelerate import dispatch_model, infer_auto_device_map
    except ImportError:
        raise ImportError(f"device_map={device_map!r} needs accelerate: .venv/bin/pip install -e '.[transformers]' "
                          "(or pip install accelerate)") from None
    if isinstance(device_map, str):
        device_map = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules,
                                           dtype=model.dtype)
    if set(device_map.values()) <= {"cpu", torch.device("cpu")}:
        model.to("cpu")  # one device: plain placement, no hooks
    else:
        dispatch_model(model, device_map=device_map)
    model.hf_device_map = device_map
