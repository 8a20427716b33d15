"""Training checkpoints, written atomically, from which a run continues exactly.

Layout of ``OUTPUT/checkpoints/step-00000100/``:

- ``model/`` — a complete model folder (official layout, tokenizer, processor files):
  ``jvlm infer`` and a stage-2 config can use it directly.
- ``optimizer.safetensors`` + ``optimizer.json`` — AdamW moments per parameter name, and the
  param groups. Tensors are stored as safetensors, never pickled.
- ``trainer_state.json`` — step, counters, sampler state, bad-row counts and every process's
  RNG state.

Everything is first written into a hidden temporary folder, flushed to disk, and only then
renamed to its final name; ``latest`` (a one-line file) is replaced the same way. A run
killed at any moment leaves either the previous checkpoint or the new one, never half of one.
The optimiser state is gathered as a full (unsharded) state dict, so a run may resume on a
different number of processes.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from jvlm.errors import CheckpointError
from jvlm.loading import save_pretrained
from jvlm.train.optim import strip_wrappers

log = logging.getLogger(__name__)

LATEST = "latest"
STATE_FILE = "trainer_state.json"
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


class _StateView:
    """Just enough of a model for ``save_pretrained``: config, state dict and tying."""

    def __init__(self, cfg, sd: dict[str, torch.Tensor], tied: bool):
        self.cfg, self._sd, self.tied = cfg, sd, tied

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._sd


# --------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    state = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy().tobytes()).decode()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], np.asarray(npy[1], dtype=np.uint32), npy[2], npy[3], npy[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state["cuda"]), dtype=np.uint8).copy()))


def _jsonable(x):
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


# -------------------------------------------------------------------- save
def save_checkpoint(root: Path, step: int, wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    model_cfg, tied: bool, processor, state: dict[str, Any], ctx, keep_last: int,
                    lora=None, base_model: str | None = None) -> Path:
    """Collective: every process calls it; process 0 writes. Returns the final folder.

    In LoRA mode (``lora`` given) the checkpoint holds ``adapter/`` instead of ``model/``."""
    model_sd = get_model_state_dict(wrapped, options=_FULL)
    optim_sd = get_optimizer_state_dict(wrapped, optimizer, options=_FULL)
    rngs = ctx.gather_objects(rng_state())
    final = step_dir(root, step)
    if ctx.is_main:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{final.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        sd = {strip_wrappers(k): v for k, v in model_sd.items()}
        if lora is not None:
            from jvlm.train.lora import ADAPTER_DIR, save_adapter

            save_adapter(tmp / ADAPTER_DIR, sd, lora, base_model)
        else:
            save_pretrained(_StateView(model_cfg, sd, tied), tmp / "model", processor=processor)
        tensors, meta = _flatten_optimizer(optim_sd)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(meta) + "\n")
        (tmp / STATE_FILE).write_text(json.dumps({**state, "rng": rngs}, indent=1) + "\n")
        _fsync_tree(tmp)
        if final.exists():  # a previous attempt reached this step: the new one replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        _write_atomic(root / LATEST, final.name + "\n")
        _prune(root, keep_last)
        log.info("saved checkpoint %s", final)
    ctx.barrier()
    return final


def _flatten_optimizer(osd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for name, per in osd["state"].items():
        for k, v in per.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{name}|{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{name}|{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        name, k = key.rsplit("|", 1)
        state.setdefault(name, {})[k] = v
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    for p in [folder, *[d for d in folder.rglob("*") if d.is_dir()]]:
        _fsync_dir(p)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse directory fsync; the rename is still atomic
    finally:
        os.close(fd)


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def clean_partial(root: Path) -> None:
    """Remove temporary folders left by a run killed while saving."""
    for p in root.glob(".tmp-step-*"):
        shutil.rmtree(p, ignore_errors=True)


# -------------------------------------------------------------------- load
def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (``latest`` first, else the highest step)."""
    pointer = root / LATEST
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / STATE_FILE).is_file():
            return cand
    done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def read_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{ckpt} is not a training checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def load_optimizer(ckpt: Path, wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx) -> None:
    """Restore AdamW moments and param-group settings (by parameter name) into ``optimizer``.

    With several processes only process 0 reads the file and the state is broadcast (and
    sharded under FSDP), so host memory holds one full copy, not one per process.
    """
    osd: dict[str, Any] = {}
    if ctx.is_main or not ctx.enabled:
        try:
            tensors = load_file(str(ckpt / "optimizer.safetensors"))
            meta = json.loads((ckpt / "optimizer.json").read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read the optimiser state in {ckpt}: {e}") from None
        osd = _unflatten_optimizer(tensors, meta)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=ctx.enabled)
    try:
        set_optimizer_state_dict(wrapped, optimizer, osd, options=options)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"the optimiser state in {ckpt} does not fit this run ({e}); were groups frozen or unfrozen "
            "since it was written? Resume with the same optim.groups"
        ) from None
