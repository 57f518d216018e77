"""The loop: batches of units -> posteriors -> float64 statistics, until the data ends or a stop rule fires.

Everything here is order-independent by construction: each unit's noise comes from a generator
seeded by (seed, the unit's noise key), and statistics merge exactly, so the answer does not
depend on batch, chunk, worker, shard or rank count, nor on where a run was resumed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import InputError
from .sources.base import Batch, Source
from .stats import PosteriorStats

Posterior = tuple[torch.Tensor, torch.Tensor | None]


@dataclass
class Run:
    """The mutable state of one estimate, one statistics entry per view (--size); what a checkpoint holds."""

    stats: list[PosteriorStats | None]
    done: int = 0  # how many of this process's positions have been consumed
    skipped: list[dict[str, Any]] = field(default_factory=list)
    upcast_chunks: int = 0
    latent_shapes: list[list[int]] = field(default_factory=list)
    frames: list[dict[str, PosteriorStats] | None] = field(default_factory=list)  # video: first vs later frames

    @classmethod
    def empty(cls, views: int) -> Run:
        return cls([None] * views, latent_shapes=[[] for _ in range(views)], frames=[None] * views)

    def to_dict(self) -> dict[str, Any]:
        return {"stats": [s.to_dict() if s else None for s in self.stats], "done": self.done,
                "skipped": self.skipped, "upcast_chunks": self.upcast_chunks, "latent_shapes": self.latent_shapes,
                "frames": [frames_to_dict(f) for f in self.frames]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        stats = [PosteriorStats.from_dict(s) if s else None for s in d["stats"]]
        return cls(stats, int(d["done"]), list(d["skipped"]), int(d["upcast_chunks"]), list(d["latent_shapes"]),
                   [frames_from_dict(f) for f in d["frames"]])

    @property
    def num_units(self) -> int:
        return min((s.num_images if s else 0) for s in self.stats)


def frames_to_dict(frames: dict[str, PosteriorStats] | None) -> dict[str, Any] | None:
    return None if frames is None else {k: v.to_dict() for k, v in frames.items()}


def frames_from_dict(d: dict[str, Any] | None) -> dict[str, PosteriorStats] | None:
    return None if d is None else {k: PosteriorStats.from_dict(v) for k, v in d.items()}


def merge_frames(parts: list[dict[str, PosteriorStats] | None]) -> dict[str, PosteriorStats] | None:
    """Ranks' or shards' frame statistics merged in order (None when no clip had later frames)."""
    merged = None
    for part in filter(None, parts):
        if merged is None:
            merged = part
        else:
            for name, stats in part.items():
                merged[name].merge(stats)
    return merged


FRAME_PARTS = {"first": slice(0, 1), "later": slice(1, None)}  # a causal video VAE encodes frame 0 alone


def noise(keys: list[int], shape: torch.Size, seed: int) -> torch.Tensor:
    """ε for each unit from a generator seeded by (seed, its noise key): split-independent."""
    g = torch.Generator()
    out = torch.empty((len(keys), *shape))
    for k, key in enumerate(keys):
        g.manual_seed((seed * 1_000_003 + key) % (2**63))
        out[k] = torch.randn(shape, generator=g)
    return out


class Accumulate:
    """One batch: failed units skipped and listed, the rest turned into posteriors and accumulated."""

    def __init__(self, run: Run, source: Source, posterior: Callable[[torch.Tensor], Posterior], *, seed: int,
                 strict: bool, edges: torch.Tensor | None, stochastic: bool) -> None:
        self.run, self.source, self.posterior = run, source, posterior
        self.seed, self.strict, self.edges, self.stochastic = seed, strict, edges, stochastic

    def skip(self, index: int, reason: str, view: int | None = None) -> None:
        unit = self.source.ids[index]
        if self.strict:
            raise InputError(f"cannot use {unit}: {reason} (drop --strict to skip such units)")
        warnings.warn(f"skipping {unit}: {reason}", stacklevel=2)
        self.run.skipped.append({"path": unit, "error": reason, **({} if view is None else {"view": view})})

    def __call__(self, batch: Batch) -> None:
        for index, reason in batch.errors:
            self.skip(index, reason)
        for index, views in batch.groups:
            for v, x in enumerate(views):
                self._view(v, index, x, len(views))
        self.run.done += batch.size

    def _view(self, v: int, index: torch.Tensor, x: torch.Tensor, views: int) -> None:
        mu, sigma = self.posterior(x)
        bad = ~torch.isfinite(mu.flatten(1)).all(1)
        if sigma is not None:
            bad |= ~torch.isfinite(sigma.flatten(1)).all(1)
        for i in index[bad].tolist():
            self.skip(i, "non-finite latent even in float32", v if views > 1 else None)
        keep = ~bad
        if not keep.any():
            return
        mu, index = mu[keep], index[keep]
        sigma = None if sigma is None else sigma[keep]
        if self.run.stats[v] is None:
            self.run.stats[v] = PosteriorStats(mu.shape[1], self.stochastic, self.edges)
            self.run.latent_shapes[v] = list(mu.shape[1:]) if self.source.uniform else [mu.shape[1]]
        keys = [self.source.noise_key(i) for i in index.tolist()]
        eps = noise(keys, mu.shape[1:], self.seed).to(mu.device) if sigma is not None else None
        self.run.stats[v].update(mu, sigma, eps)
        if mu.ndim == 5 and mu.shape[2] > 1:
            self._frames(v, mu, sigma, eps)

    def _frames(self, v: int, mu: torch.Tensor, sigma: torch.Tensor | None, eps: torch.Tensor | None) -> None:
        """The causal first latent frame and the later ones, each with the clip's own noise."""
        if self.run.frames[v] is None:
            self.run.frames[v] = {k: PosteriorStats(mu.shape[1], self.stochastic, self.edges) for k in FRAME_PARTS}
        for name, part in FRAME_PARTS.items():
            self.run.frames[v][name].update(mu[:, :, part], None if sigma is None else sigma[:, :, part],
                                            None if eps is None else eps[:, :, part])


def consume(batches: Iterable[Batch], step: Callable[[Batch], None],
            after_batch: Callable[[int], str | None]) -> str | None:
    """Feed every batch to `step`; after each, `after_batch(units in it)` may return a reason to stop."""
    for batch in batches:
        step(batch)
        reason = after_batch(batch.size)
        if reason:
            return reason
    return None
