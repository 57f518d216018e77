"""Units into batches: a DataLoader whose workers load units while the encoder runs, a bad unit never
stopping a worker, units of one shape stacked together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import one_line
from .base import Source

Views = tuple[torch.Tensor, ...]


class UnitDataset(Dataset):
    """Yields (index, views, None) or (index, None, reason), so a bad unit never stops a worker."""

    def __init__(self, source: Source, positions: Sequence[int]) -> None:
        self.source = source
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> tuple[int, Views | None, str | None]:
        index = self.positions[k]
        try:
            out = self.source.load(index)
            return index, out if isinstance(out, tuple) else (out,), None
        except Exception as e:  # noqa: BLE001 - any load failure is reported per unit
            return index, None, one_line(e, named=True)


@dataclass
class Batch:
    """Loaded units grouped by shape (one group when the source is uniform), plus the failures."""

    groups: list[tuple[torch.Tensor, Views]]  # (indices, one stacked tensor per view)
    errors: list[tuple[int, str]]

    @property
    def size(self) -> int:
        return sum(len(index) for index, _ in self.groups) + len(self.errors)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pin-memory thread on CUDA runs."""
        return Batch([(i, tuple(v.pin_memory() for v in views)) for i, views in self.groups], self.errors)


def collate(items: list[tuple[int, Views | None, str | None]]) -> Batch:
    by_shape: dict[tuple, list[tuple[int, Views]]] = {}
    for index, views, _ in items:
        if views is not None:
            by_shape.setdefault(tuple(v.shape for v in views), []).append((index, views))
    groups = [(torch.tensor([i for i, _ in units], dtype=torch.long),
               tuple(torch.stack(vs) for vs in zip(*(v for _, v in units), strict=True)))
              for units in by_shape.values()]
    return Batch(groups, [(i, err) for i, views, err in items if views is None])


def loader(source: Source, positions: Sequence[int], batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Batches in the given order; workers load while the encoder runs (bounded: 2 batches each)."""
    return DataLoader(
        UnitDataset(source, positions),
        batch_size=batch_size if source.uniform or source.input == "latents" else 1,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers > 0 else None,
        persistent_workers=False,
    )
