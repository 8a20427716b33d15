"""Checkpoint I/O: safetensors only, and strict.

Files are read as they are; ``load_into`` converts their tensors to the official layout
through the layout's adapter (``jvlm.layouts``: official, MLX, ...) and then checks them
against the model, naming every missing, unexpected and mis-shaped tensor in one error.

Pickle-based files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are refused: unpickling runs
arbitrary code from the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from jvlm import layouts
from jvlm.errors import CheckpointError, ModelFolderError

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_FILE = "model.safetensors.index.json"


# ------------------------------------------------------------------------- reading
def checkpoint_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a model folder (sharded via the index, or single)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise ModelFolderError(f"{index} is not a valid safetensors index ({e})") from None
        files = sorted({folder / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelFolderError(f"{folder} is incomplete: shards listed in {INDEX_FILE} are missing: {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelFolderError(
            f"{folder} holds only pickle files ({', '.join(pickles)}). jvlm never unpickles weights, "
            "since loading a pickle can run arbitrary code; convert them to safetensors first "
            "(e.g. with safetensors.torch.save_file in a trusted environment)"
        )
    raise ModelFolderError(f"{folder} has no *.safetensors weights")


def read_tensors(files: Iterable[Path], dtype: torch.dtype | None = None,
                 on_tensor: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor (converted to ``dtype`` when floating point)."""
    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for k in fh.keys():
                    t = fh.get_tensor(k)
                    if dtype is not None and t.is_floating_point():
                        t = t.to(dtype)
                    out[k] = t
                    if on_tensor:
                        on_tensor(k)
        except Exception as e:  # safetensors raises its own SafetensorError for corrupt files
            if isinstance(e, FileNotFoundError):
                raise ModelFolderError(f"weights file {f} is missing") from None
            raise CheckpointError(f"cannot read {f}: {e} (truncated or not a safetensors file?)") from None
    return out


def unify_float_dtype(sd: dict[str, torch.Tensor]) -> torch.dtype | None:
    """Cast a state dict whose floating tensors mix dtypes (e.g. bf16 and fp32 in one file) to
    the widest of them, in place, so the model has one dtype. Returns that dtype (None when
    there are no floating tensors)."""
    found = {t.dtype for t in sd.values() if t.is_floating_point()}
    if not found:
        return None
    if len(found) == 1:
        return found.pop()
    widest = torch.float64 if torch.float64 in found else torch.float32  # holds bf16 and fp16 exactly
    log.info("checkpoint mixes %s; loading every tensor as %s", sorted(map(str, found)), widest)
    for k, t in sd.items():
        if t.is_floating_point() and t.dtype != widest:
            sd[k] = t.to(widest)
    return widest


def count_tensors(files: Iterable[Path]) -> int:
    n = 0
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                n += len(list(fh.keys()))
        except Exception as e:
            raise CheckpointError(f"cannot read {f}: {e} (truncated or not a safetensors file?)") from None
    return n


def check_state_dict(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                     optional: Iterable[str] = ()) -> None:
    """Raise one CheckpointError naming every missing, unexpected and mis-shaped key."""
    optional = set(optional)
    missing = sorted(k for k in expected if k not in got and k not in optional)
    unexpected = sorted(k for k in got if k not in expected)
    shapes = sorted(
        f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                parts.append(f"{len(items)} {title}: " + "; ".join(shown))
        raise CheckpointError("checkpoint does not match the model config — " + " | ".join(parts))


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Strictly load tensors of any known layout (converted to official names first) into a
    JinaVLMForConditionalGeneration.

    lm_head: used untied when stored; tied to the base embedding only when absent and the
    text config asks for tying (spec, Corrections 2).
    """
    expected = {k: v for k, v in model.state_dict().items()}
    sd = layouts.to_official(sd, model.cfg)
    has_head = "lm_head.weight" in sd
    optional = set()
    if not has_head:
        if not model.cfg.text.tie_word_embeddings:
            raise CheckpointError(
                "checkpoint has no lm_head.weight and text_config.tie_word_embeddings is false: the "
                "output projection is missing"
            )
        optional.add("lm_head.weight")
    check_state_dict(expected, sd, optional)
    on_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(sd, strict=False, assign=on_meta)
    if not has_head:
        model.tie_lm_head()


def save_official(model: torch.nn.Module, folder: str | Path, max_shard_bytes: int | None = None,
                  dtype: torch.dtype | None = None) -> list[Path]:
    """Write the model's tensors in the official layout (sharded with an index when large)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {}
    for k, v in model.state_dict().items():
        if getattr(model, "tied", False) and k == "lm_head.weight":
            continue  # a tied head is not stored: loading re-ties it
        t = v.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        sd[k] = t.contiguous().cpu()
    meta = {"format": "pt"}
    if not max_shard_bytes:
        path = folder / "model.safetensors"
        save_file(sd, str(path), metadata=meta)
        return [path]
    # huggingface_hub's writer: the Hub's shard names, its index format, and stale shards of an
    # earlier save in the same folder removed. A model that fits one shard still gets an index
    # there, since the caller asked for sharding.
    from huggingface_hub import save_torch_state_dict

    save_torch_state_dict(sd, folder, max_shard_size=max_shard_bytes, metadata=meta)
    single = folder / "model.safetensors"
    if single.is_file():
        name = "model-00001-of-00001.safetensors"
        single.rename(folder / name)
        total = sum(t.numel() * t.element_size() for t in sd.values())
        (folder / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                                     "weight_map": {k: name for k in sd}}, indent=2))
    index = json.loads((folder / INDEX_FILE).read_text())
    return [folder / name for name in sorted(set(index["weight_map"].values()))]
