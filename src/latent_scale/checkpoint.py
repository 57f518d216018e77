"""Checkpoints: what must match to continue (fingerprint), saving, resuming, and stopping on signals."""

from __future__ import annotations

import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InputError
from .identity import describe_id_difference, first_difference, pack_ids, unpack_ids
from .outputs import write_json
from .reading import read_object
from .schema import CHECKPOINT_KIND, check_checkpoint, seal
from .state import Run


class Checkpoint:
    """One process's checkpoint file; saved every `every` seconds, on a signal and at the end. It records
    every size of its run (--size), so a resume with another list is refused instead of mixing sizes."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], every: float, *, ids: list[str], positions: int,
                 unit: str, sizes: tuple[int, ...]) -> None:
        self.path, self.every, self.sizes = path, every, list(sizes)
        self.fingerprint = {**fingerprint, "sizes": self.sizes}
        self.ids, self.packed, self.positions, self.unit = ids, pack_ids(ids), positions, unit
        self.last_save = time.monotonic()
        self.before_save: Callable[[Run], None] | None = None  # e.g. flush --save-latents first

    @staticmethod
    def path_for(path: str | None, rank: int, world: int) -> Path | None:
        """One file per torchrun rank (the plain path for a single process)."""
        if not path:
            return None
        p = Path(path)
        return p if world == 1 else p.with_name(f"{p.name}.rank{rank}-of-{world}")

    @classmethod
    def for_rank(cls, path: str | None, rank: int, world: int, fingerprint: dict[str, Any], every: float,
                 **units: Any) -> Checkpoint | None:
        p = cls.path_for(path, rank, world)
        return None if p is None else cls(p, fingerprint, every, **units)

    def resume(self) -> Run | None:
        """The saved run, when its fingerprint matches this one; None when there is no file yet."""
        if not self.path.exists():
            warnings.warn(f"no checkpoint at {self.path} yet: starting from the first unit", stacklevel=2)
            return None
        saved = read_object(self.path, "latent-scale checkpoint")
        self._check_sizes(saved.get("fingerprint"))
        diff = first_difference(saved.get("fingerprint"), self.fingerprint)  # first: a changed run says so
        if diff and diff.startswith(("recipe.data_identity.count", "recipe.data_identity.ids_sha256")):
            diff = describe_id_difference(unpack_ids(str(saved.get("ids", ""))) or [], self.ids, self.unit)
        elif diff and diff.startswith("recipe.data_identity.signature"):
            diff = f"the same {self.unit}s, but their files changed since the checkpoint (sizes or times differ)"
        if diff:
            raise InputError(f"cannot resume from {self.path}: {diff}; use another --checkpoint or the original "
                             "options")
        check_checkpoint(saved, str(self.path), self.positions)
        run = Run.from_dict(saved["run"])
        if len(run.stats) != len(self.sizes):
            raise InputError(f"{self.path}: run.stats holds {len(run.stats)} entries for the {len(self.sizes)} sizes "
                             "it records; the file is damaged, use another --checkpoint")
        return run

    def _check_sizes(self, saved: Any) -> None:
        """A run continues only with the sizes it started with: another list would mix units encoded at
        one size into another's statistics, or drop sizes silently."""
        held = saved.get("sizes") if isinstance(saved, dict) else None
        if held is None or held == self.sizes:
            return  # a checkpoint without sizes is told apart by the fingerprint comparison
        if not (isinstance(held, list) and held and all(type(s) is int for s in held)):
            raise InputError(f"{self.path}: fingerprint.sizes is {held!r}, not a list of sizes; the file is damaged, "
                             "use another --checkpoint")
        listed = ",".join(map(str, held))
        raise InputError(f"cannot resume from {self.path}: the checkpoint holds size{'s' * (len(held) > 1)} "
                         f"{listed}; resume with --size {listed}")

    def save(self, run: Run) -> None:
        if self.before_save:
            self.before_save(run)
        write_json(self.path, seal({"kind": CHECKPOINT_KIND, "fingerprint": self.fingerprint, "run": run.to_dict(),
                                    "ids": self.packed}))
        self.last_save = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last_save > self.every


class StopSignals:
    """Ctrl-C and SIGTERM ask the loop to stop after the current batch, so the saved state is
    always whole; a second signal stops at once (the last save stands)."""

    def __init__(self) -> None:
        self.requested = False
        self.old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise ForceQuit
        self.requested = True

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


class ForceQuit(KeyboardInterrupt):
    """A second Ctrl-C: leave now without saving a half-updated state."""
