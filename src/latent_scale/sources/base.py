"""What every source of units (images, tar members, video clips, latent files, dataset rows) shares.

A source is an ordered list of unit ids plus `load(index)`. The pipeline never asks what kind of
file a unit came from: it orders the ids (sorted, then a seeded permutation), loads units in
DataLoader workers, and hands the tensors to the encoder (pixel sources) or straight to the
statistics (latent sources). A bad unit raises from `load`; the pipeline skips and lists it.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch.utils.data import DataLoader, Dataset


class Source(ABC):
    """An ordered collection of units.

    `ids[i]` names unit i for people and for identity (relative to `root` where there is one);
    the index i also seeds the unit's posterior noise, so ids must be in a stable, sorted order.
    """

    kind: ClassVar[str]  # the registry name, recorded in the result's recipe
    produces: ClassVar[Literal["pixels", "latents"]]
    unit: ClassVar[str] = "unit"  # what one unit is called in messages: image, clip, latent

    def __init__(self, ids: list[str], root: str) -> None:
        self.ids = ids
        self.root = root

    def __len__(self) -> int:
        return len(self.ids)

    @abstractmethod
    def load(self, index: int) -> torch.Tensor:
        """Unit `index` as a tensor: pixels (3, H, W) or a clip (3, T, H, W) in [-1, 1], float32;
        or a latent (C, ...) of any float dtype. Raise any Exception for a unit that cannot be used."""

    def recipe(self) -> dict[str, Any]:
        """What about the loading determines the numbers (compared by merge and resume)."""
        return {"source": self.kind}

    def signature(self) -> str:
        """A cheap content signature (e.g. sizes and mtimes), so identity is more than spelling."""
        return ""

    @property
    def uniform(self) -> bool:
        """Whether every unit has the same shape, so units can share a batch; otherwise the
        pipeline feeds an encoder one unit at a time (a float32 convolution's rounding depends
        on batch composition, and units of one shape are the only ones that could share)."""
        return True

    def adapt(self, encoder: Any) -> None:  # noqa: B027 - most sources depend on nothing about the model
        """Settle what depends on the model, once it is loaded (e.g. a video clip's frame count)."""

    def describe(self, result: dict[str, Any]) -> dict[str, Any]:
        """Fields this source adds to each result (e.g. the latent shapes a cache held)."""
        return {}

    def noise_key(self, index: int) -> int:
        """What seeds unit `index`'s posterior noise: its index, unless the unit is a cached latent
        that keeps the key of the image it was encoded from."""
        return index


def file_signature(files: Sequence[str]) -> str:
    """A cheap content signature: sha256 over each file's size and mtime (missing files count too)."""
    def stamp(path: str) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return "-"
        return f"{st.st_size}:{st.st_mtime_ns}"

    return hashlib.sha256("\n".join(stamp(f) for f in files).encode()).hexdigest()[:16]


def order(num_units: int, seed: int, limit: int | None = None) -> list[int]:
    """The seeded permutation of unit indices; its prefix is a fair sample."""
    perm = torch.randperm(num_units, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm if limit is None else perm[:limit]


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
            return index, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()


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
        batch_size=batch_size if source.uniform or source.produces == "latents" else 1,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers > 0 else None,
        persistent_workers=False,
    )
