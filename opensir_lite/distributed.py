"""Several processes (``accelerate launch``, ``torchrun``): this process's rank and a gather of Python objects.

Both answer for one process when ``torch.distributed`` is not initialised, so every caller is written once.
"""

from __future__ import annotations

from typing import Any


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) unless torch.distributed is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_ranks(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` on one process); a collective: every rank must call it."""
    import torch.distributed as dist

    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    out[rank] = obj  # this rank's own objects, not a copy
    return out
