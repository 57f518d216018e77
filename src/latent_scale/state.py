"""The state of one estimate: what a checkpoint holds and what ranks and shards merge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .stats import PosteriorStats


@dataclass
class Run:
    """The mutable state of one estimate, one statistics entry per view (--size); what a checkpoint holds."""

    stats: list[PosteriorStats | None]
    done: int = 0  # how many of this process's positions have been consumed
    skipped: list[dict[str, Any]] = field(default_factory=list)
    upcast_chunks: int = 0
    latent_shapes: list[list[int]] = field(default_factory=list)
    frames: list[dict[str, PosteriorStats] | None] = field(default_factory=list)  # video: first vs later frames
    cache: dict[str, int] | None = None  # --save-latents: what of the folder belongs to this state

    @classmethod
    def empty(cls, views: int) -> Run:
        return cls([None] * views, latent_shapes=[[] for _ in range(views)], frames=[None] * views)

    def to_dict(self) -> dict[str, Any]:
        return {"stats": [s.to_dict() if s else None for s in self.stats], "done": self.done,
                "skipped": self.skipped, "upcast_chunks": self.upcast_chunks, "latent_shapes": self.latent_shapes,
                "frames": [frames_to_dict(f) for f in self.frames], "cache": self.cache}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        stats = [PosteriorStats.from_dict(s) if s else None for s in d["stats"]]
        return cls(stats, int(d["done"]), list(d["skipped"]), int(d["upcast_chunks"]), list(d["latent_shapes"]),
                   [frames_from_dict(f) for f in d["frames"]], d.get("cache"))

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
