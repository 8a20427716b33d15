"""Process groups and model wrapping for ``torchrun``: DDP, or FSDP2 for models too big for one device.

Launched by ``torchrun --nproc_per_node N`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set), the
trainer joins a process group (NCCL on CUDA, gloo on CPU); launched directly it runs as a
single process with the same code path minus the collectives.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from jvlm.loading import resolve_device

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    started_group: bool = False  # we created the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes (float64, so token counts stay exact)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def setup(device: str = "auto", backend: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    ctx = DistContext(rank, world, local, dev)
    if world > 1 and not dist.is_initialized():
        chosen = backend if backend != "auto" else ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(chosen)
        ctx.started_group = True
        log.info("rank %d/%d joined the %s process group on %s", rank, world, chosen, dev)
    return ctx


def teardown(ctx: DistContext) -> None:
    if ctx.started_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, ctx: DistContext, strategy: str) -> nn.Module:
    """DDP, or FSDP2 (``fully_shard`` per ViT and decoder block, then the whole model)."""
    if not ctx.enabled:
        return module
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        core = module.vlm.model
        for block in list(core.vision_model.layers) + list(core.language_model.layers):
            fully_shard(block, mesh=mesh)
        fully_shard(module, mesh=mesh)
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # Every trainable tensor gets a gradient in every micro-batch (ModelWithLoss.touch_all),
    # so DDP need not search for unused parameters.
    return DDP(module, device_ids=ids, find_unused_parameters=False)


def no_sync(wrapped: nn.Module, sync: bool):
    """Context for one micro-batch: gradients are reduced across processes only when ``sync``."""
    from contextlib import nullcontext

    from torch.nn.parallel import DistributedDataParallel as DDP

    if isinstance(wrapped, DDP) and not sync:
        return wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(sync)
    return nullcontext()


def unwrap(wrapped: nn.Module) -> nn.Module:
    """The ModelWithLoss inside DDP (FSDP2 modifies the module in place)."""
    return wrapped.module if hasattr(wrapped, "module") else wrapped
