"""Process-group setup for ``torchrun`` (one process per GPU, or several CPU processes).

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the
group uses NCCL on CUDA and gloo on the CPU. Without them everything runs in one process and
the helpers below are no-ops, so the training code has one path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UsageError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch.cuda.is_available() is False")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def setup(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if there is one and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank, world, local_rank, dev)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over the processes (``t`` itself in one process)."""
    if not ctx.distributed:
        return t
    t = t.to(ctx.device).clone()
    dist.all_reduce(t)
    return t.cpu()


def all_gather_object(ctx: DistContext, obj: Any) -> list:
    """Every process's ``obj`` (pickled), in rank order (``[obj]`` in one process)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class ProcessGroupReducer:
    """The ``sapa.tasks.base.Reducer`` a task's meter syncs through: this run's process group
    (identity operations in one process)."""

    def __init__(self, ctx: DistContext):
        self.ctx = ctx
        self.world_size = ctx.world_size

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(self.ctx, t)

    def all_gather_object(self, obj: Any) -> list:
        return all_gather_object(self.ctx, obj)


def broadcast_object(ctx: DistContext, obj=None):
    """Rank 0's ``obj``, on every process (pickled; for small objects such as checkpoints)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process, so all of them
    evaluate the model that rank 0 saves."""
    if not ctx.distributed:
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=0)
