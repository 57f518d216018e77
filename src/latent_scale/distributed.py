"""torchrun support: one process per device, exact merge of the float64 states in rank order."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .stats import PosteriorStats


@dataclass(frozen=True)
class RunContext:
    """Which part of the units this process takes: --shard i/n, then the torchrun rank."""

    rank: int = 0
    world: int = 1
    shard: int = 0
    shards: int = 1

    @property
    def writer(self) -> int:
        """This process's number among every process of every shard (one --save-latents writer each)."""
        return self.shard * self.world + self.rank

    @property
    def writers(self) -> int:
        return self.shards * self.world

    def positions(self, ordered: list[int]) -> list[int]:
        return ordered[self.shard::self.shards][self.rank::self.world]


def init() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # gloo for CPU tensors (also when --device cpu on a GPU machine), NCCL for CUDA ones
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def device_for(device: str, rank: int, world: int) -> str:
    """With several processes on CUDA, each takes the GPU of its local rank."""
    if world > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def gather(stats: PosteriorStats | None, extra: dict[str, Any], rank: int,
           world: int) -> tuple[PosteriorStats | None, list[dict[str, Any]]]:
    """Every rank gets the same merged state (merged in rank order, so all agree bit for bit)
    and every rank's `extra` (skipped files, counters), in rank order."""
    if world == 1:
        return stats, [extra]
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, (stats.to_dict() if stats else None, extra))
    merged: PosteriorStats | None = None
    for state, _ in parts:
        if state is None:
            continue
        if merged is None:
            merged = PosteriorStats.from_dict(state)
        else:
            merged.merge(PosteriorStats.from_dict(state))
    return merged, [e for _, e in parts]


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
