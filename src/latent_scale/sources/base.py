"""What every source of units (images, clips, audio clips, stored latents, dataset rows) declares.

A source is an ordered list of unit ids plus `load(index)`. It declares its kind of input (what `load`
returns), the words for its unit, its own options and its part of the recipe; the estimation never asks
which kind it holds. A bad unit raises from `load`; the run skips and lists it. Source modules import
torch and their decoders inside functions, so the CLI can build its help from every source's options.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

INPUTS = ("pixels", "frames", "waveform", "latents")  # what load() returns; open to more


@dataclass(frozen=True)
class SourceContext:
    """What a source may know when it opens: the shared preprocessing options, its own options, and
    the model's latent channels (for stored latents, when --model is given)."""

    sizes: tuple[int, ...] = (512,)
    crop: bool = True
    cache_dir: str | None = None
    own: Any = None
    channels: int | None = None
    column: str | None = None


class Source(ABC):
    """An ordered collection of units.

    `ids[i]` names unit i for people and for identity (relative to `root` where there is one);
    the index i also seeds the unit's posterior noise, so ids must be in a stable, sorted order.
    """

    kind: ClassVar[str]  # the registry name, recorded in the result's recipe
    input: ClassVar[str]  # one of INPUTS: "pixels" (3, H, W), "frames" (3, T, H, W), "waveform" (C, S), "latents"
    unit: ClassVar[str] = "unit"  # one unit in words: image, clip, audio clip, latent
    units: ClassVar[str] = "units"  # the plural
    panel: ClassVar[str] = "Data"  # the CLI help panel of its options
    options: ClassVar[type | None] = None  # a dataclass of the source's own options

    def __init__(self, ids: list[str], root: str) -> None:
        self.ids = ids
        self.root = root

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    @abstractmethod
    def accepts(cls, spec: str, ctx: SourceContext) -> bool:
        """Whether --data `spec` looks like this source's (cheap: no decoding)."""

    @classmethod
    @abstractmethod
    def open(cls, spec: str, ctx: SourceContext) -> Source:
        """List the units of `spec`; raise InputError when it holds none."""

    @abstractmethod
    def load(self, index: int) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Unit `index` as its input kind (one tensor per --size view); raise any Exception for a unit
        that cannot be used."""

    def recipe(self) -> dict[str, Any]:
        """What about the loading determines the numbers (compared by merge and resume)."""
        return {}

    def signature(self) -> str:
        """A cheap content signature (e.g. sizes and mtimes), so identity is more than spelling."""
        return ""

    @property
    def uniform(self) -> bool:
        """Whether every unit has the same shape, so units can share a batch; otherwise the
        pipeline feeds an encoder one unit at a time (a float32 convolution's rounding depends
        on batch composition, and units of one shape are the only ones that could share)."""
        return True

    def views(self) -> list[dict[str, Any]]:
        """Each view's part of the recipe: load() returns one tensor per view (pixel sources: one per
        --size, each its own result); one view by default."""
        return [{}]

    def adapt(self, encoder: Any) -> None:  # noqa: B027 - most sources depend on nothing about the model
        """Settle what depends on the model, once it is loaded (e.g. a video clip's frame count)."""

    def describe(self, result: dict[str, Any]) -> dict[str, Any]:
        """Fields this source adds to each result (e.g. the latent shapes a cache held)."""
        return {}

    def defaults(self) -> dict[str, Any]:
        """Options the data itself settles when the user gave none (a --save-latents folder: the
        posterior and seed of the run that wrote it)."""
        return {}

    def noise_key(self, index: int) -> int:
        """What seeds unit `index`'s posterior noise: its index, unless the unit is a stored latent
        that keeps the key of the unit it was encoded from."""
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
    import torch

    perm = torch.randperm(num_units, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm if limit is None else perm[:limit]
