"""The checkpoint, typed: what `--checkpoint` writes (`state.Run.to_dict()` under a fingerprint) and
`--resume` reads back, every state in it checked like a result's before it is trusted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .keys import CHECKPOINT_KIND
from .parse import Count, Invalid, Json, join, optional, parse
from .seal import check_sealed
from .state import State


@dataclass(frozen=True)
class SkippedUnit:
    """A unit that could not be used; `view` is the --size it was skipped at (all sizes when absent)."""

    path: str
    error: str
    view: int | None = optional()


@dataclass(frozen=True)
class CheckpointRun:
    """One process's progress: a state (or null before the first unit) and a latent shape per --size."""

    stats: list[State | None]
    done: Count
    skipped: list[SkippedUnit]
    upcast_chunks: Count
    latent_shapes: list[list[int]]
    frames: list[dict[str, State] | None] | None = None
    cache: dict[str, Json] | None = None

    def check(self, field: str) -> None:
        views = len(self.stats)
        for key in ("latent_shapes", "frames"):
            value = getattr(self, key)
            if value is not None and len(value) != views:
                raise Invalid(join(field, key), f"has {len(value)} entries, not {views}")
        for v, state in enumerate(self.stats):
            if state is not None:
                self._check_view(field, v, state)

    def _check_view(self, field: str, v: int, state: State) -> None:
        shape = self.latent_shapes[v]
        if not shape or shape[0] != state.channels or any(d < 1 for d in shape):
            raise Invalid(join(join(field, "latent_shapes"), v), f"is {shape!r}, not the shape of "
                                                                 f"{state.channels}-channel latents")

    def check_done(self, positions: int) -> None:
        """Every consumed unit of a view was counted or skipped, and no more than the run's units."""
        if self.done > positions:
            raise Invalid("run.done", f"is {self.done}, more than the {positions} units of this run")
        for v, state in enumerate(self.stats):
            seen = state.num_units if state is not None else 0
            lost = sum(1 for s in self.skipped if s.view is None or s.view == v)
            if seen + lost != self.done:
                raise Invalid("run.done", f"is {self.done}, but view {v} holds {seen} units and {lost} skipped ones")


@dataclass(frozen=True)
class Checkpoint:
    kind: str
    fingerprint: dict[str, Json]
    run: CheckpointRun
    ids: str
    state_sha256: str


def check_checkpoint(doc: Any, where: str, positions: int) -> Checkpoint:
    """The checkpoint, refused in one sentence unless sound and its `done` fits a run of `positions` units."""
    if not isinstance(doc, dict) or doc.get("kind") != CHECKPOINT_KIND:
        raise InputError(f"{where} is not a latent-scale checkpoint; pass the file --checkpoint wrote, "
                         "or another --checkpoint")
    try:
        checkpoint = parse(Checkpoint, doc, "")
        checkpoint.run.check_done(positions)
    except Invalid as e:
        raise e.refuse(where) from None
    check_sealed(doc, where)
    return checkpoint
