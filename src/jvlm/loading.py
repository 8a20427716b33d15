"""Load and save whole model folders: config.json + safetensors + tokenizer + processor files.

``load(folder)`` returns ``(model, processor)`` for people who don't use Transformers; the
Transformers auto classes (``jvlm.integrations.transformers``) call the same functions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from jvlm import weights
from jvlm.config import JinaVLMConfig
from jvlm.errors import ModelFolderError
from jvlm.hardware import choose_compute_dtype, dtype_name
from jvlm.model.vlm import JinaVLMForConditionalGeneration

log = logging.getLogger(__name__)

_DTYPES = {
    "auto": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
    "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
}


def parse_dtype(dtype) -> torch.dtype | None:
    """'bf16' / 'fp32' / torch.dtype / None ('auto': the loader decides, see ``load_model``)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower().replace("torch.", "")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of bf16, fp32, fp16, auto") from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for but Apple MPS is not available")
    return dev


def load_model(folder: str | Path, dtype=None, device=None, progress: bool = False,
               build=JinaVLMForConditionalGeneration) -> JinaVLMForConditionalGeneration:
    """Build the model from ``folder`` and load its weights strictly.

    The module tree is created on the meta device, then every parameter is assigned from the
    checkpoint, so peak memory is one copy of the weights. ``build(cfg)`` makes the module
    tree (the Transformers class passes its own); a checkpoint whose tensors mix dtypes loads
    into the widest of them unless ``dtype`` is given.

    ``dtype`` None or "auto": the checkpoint's dtype, except on a CPU that has no native
    arithmetic for it (bf16 weights on a CPU without AVX-512 BF16/AMX: fp32), see
    ``jvlm.hardware.choose_compute_dtype``; "checkpoint" keeps the checkpoint's dtype always.
    """
    folder = Path(folder)
    cfg = JinaVLMConfig.load(folder)
    per_cpu = dtype is None or str(dtype).lower() == "auto"
    dtype = None if str(dtype).lower() == "checkpoint" else parse_dtype(dtype)
    files = weights.checkpoint_files(folder)
    with torch.device("meta"):
        model = build(cfg)
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        total = weights.count_tensors(files)
        with Progress(TextColumn("loading weights"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task("load", total=total)
            sd = weights.read_tensors(files, dtype, on_tensor=lambda _k: bar.advance(task))
    else:
        sd = weights.read_tensors(files, dtype)
    stored = None
    if dtype is None:
        stored = weights.unify_float_dtype(sd)
        device_type = resolve_device(device).type
        if per_cpu and stored is not None:
            compute, why = choose_compute_dtype(stored, device_type)
            if compute != stored:
                log.info("computing in %s: %s", dtype_name(compute), why)
                for k in list(sd):  # one tensor at a time: the old copy goes as the new one comes
                    if sd[k].is_floating_point():
                        sd[k] = sd[k].to(compute)
    weights.load_into(model, sd)
    model.stored_dtype = stored
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:  # cannot happen after a strict load; guard against silent garbage
        raise ModelFolderError(f"parameters left uninitialised after loading: {leftover[:5]}")
    return model.to(resolve_device(device)).eval()


def load(folder: str | Path, dtype=None, device=None, progress: bool = False):
    """``(model, processor)`` for a model folder, a bundled name (``jvlm-demo``) or a Hugging
    Face repo id (``jvlm.resolve``), with the tokenizer's special ids wired in."""
    from jvlm.processing.processor import JinaVLMProcessor
    from jvlm.resolve import resolve_model

    folder = resolve_model(folder).path
    if (folder / "trainer_state.json").is_file() and (folder / "model").is_dir():
        raise ModelFolderError(f"{folder} is a training checkpoint, not a model folder; "
                               f"its model is in {folder / 'model'}")
    processor = JinaVLMProcessor.from_pretrained(folder)
    model = load_model(folder, dtype=dtype, device=device, progress=progress)
    model.use_token_ids(processor.token_ids)
    return model, processor


def save_pretrained(model: JinaVLMForConditionalGeneration, folder: str | Path, processor=None,
                    max_shard_bytes: int | None = None, dtype=None) -> None:
    """Write a complete folder in the official layout that ``load`` (and Transformers) can read."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.cfg.save(folder)
    weights.save_official(model, folder, max_shard_bytes=max_shard_bytes, dtype=parse_dtype(dtype))
    if processor is not None:
        processor.save_pretrained(folder)
    gen = {"do_sample": False, "max_new_tokens": 256}
    if processor is not None:
        gen["eos_token_id"] = list(processor.token_ids.eos)
        gen["pad_token_id"] = processor.token_ids.pad
        gen["bos_token_id"] = processor.token_ids.bos
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
