"""Distributed plumbing of `kpbench run` under torchrun: which rank this process is, and the few collectives a
run needs (rank 0's plan to every rank, every rank's result to every rank, failing together).

torch is imported inside the functions (a single process never imports torch.distributed).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kpbench.core.errors import KpbenchError

if TYPE_CHECKING:
    import torch

_DIST_TIMEOUT = datetime.timedelta(hours=4)


@dataclass
class DistInfo:
    """This process's place in a torch.distributed job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1





def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the torch.distributed job torchrun started (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA, where each
    rank takes the GPU of its LOCAL_RANK. Without WORLD_SIZE (or with 1) it is a single process.

    On CUDA the chosen GPU also becomes the current device, so that nothing (pinned-memory threads, the
    collectives) touches another GPU."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistInfo(), device
    import torch.distributed as tdist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise KpbenchError(
                f"--device {device}: rank {rank} needs GPU {local_rank} but only {torch.cuda.device_count()} are visible"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, timeout=_DIST_TIMEOUT)
    return DistInfo(rank=tdist.get_rank(), world_size=tdist.get_world_size(), local_rank=local_rank, backend=backend), device


def shutdown_distributed(dist: DistInfo) -> None:
    """Leave the process group a distributed run joined (idempotent; a no-op for a single process)."""
    if not dist.distributed:
        return
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def broadcast(dist: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not dist.distributed:
        return obj
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather(dist: DistInfo, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (also a barrier)."""
    if not dist.distributed:
        return [obj]
    import torch.distributed as tdist

    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def agree(dist: DistInfo, error: str | None) -> None:
    """A barrier that fails on every rank if any rank failed, so that no rank waits forever for a dead one."""
    errors = gather(dist, error)
    if errors[dist.rank]:
        raise KpbenchError(errors[dist.rank])
    for rank, message in enumerate(errors):
        if message:
            raise KpbenchError(f"rank {rank} failed: {message}")


def attempt(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """(fn(), None), or (None, message) for a user error, so that ranks can agree on failures."""
    try:
        return fn(), None
    except KpbenchError as exc:
        return None, str(exc)
