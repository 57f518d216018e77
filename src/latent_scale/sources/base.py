"""What every source of units (images, tar members, video clips, latent files, dataset rows) shares.

A source is an ordered list of unit ids plus `load(index)`. The pipeline never asks what kind of
file a unit came from: it orders the ids (sorted, then a seeded permutation), loads units in
DataLoader workers, and hands the tensors to the encoder (pixel sources) or straight to the
statistics (latent sources). A bad unit raises from `load`; the pipeline skips and lists it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import torch


class Source(ABC):
    """An ordered collection of units.

    `ids[i]` names unit i for people and for identity (relative to `root` where there is one);
    the index i also seeds the unit's posterior noise, so ids must be in a stable, sorted order.
    """

    kind: ClassVar[str]  # the registry name, recorded in the result's recipe
    produces: ClassVar[Literal["pixels", "latents"]]

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
