"""The one place that knows the JSON the tool writes and reads back: results and checkpoints.

- keys: the result's key constants (KEY_SCALE_FACTOR, ...), as torch-fidelity exports its metrics'.
- parse: typed parsing of JSON into frozen dataclasses, one sentence naming the field on failure.
- state, result, checkpoint: the typed state, result and checkpoint, with their invariants.
- seal: the checksum written with each file and checked on reading.
- build: a result from the statistics (torch).
- recompute: a result read back checked against its state, in plain Python (no torch).

Typed with the standard library's dataclasses, not pydantic: nothing to install or import (commands
that only check their arguments answer before torch or any large package loads), and the refusals
are worded for users. `read_result` is what every command reading a result goes through, and needs
no torch; building needs torch and is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .checkpoint import Checkpoint, CheckpointRun, check_checkpoint
from .keys import *  # noqa: F403 - the key constants are this package's API
from .keys import CHECKPOINT_KIND, SCHEMA_VERSION
from .recompute import check_headline
from .result import Model, PerChannel, Recipe, Result, Run, parse_result
from .seal import seal, state_checksum
from .state import State

_BUILD = ("ResultDict", "build_result", "check_spread", "frames_result", "headline", "population")


def __getattr__(name: str) -> Any:
    """Building needs torch: imported when first asked for (PEP 562)."""
    if name in _BUILD:
        return getattr(importlib.import_module(".build", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_result(doc: Any, where: str) -> Result:
    """A result read back: its structure, seal and invariants checked, then its numbers checked against
    its state (all without torch). Anything else is refused in one sentence naming `where`."""
    result = parse_result(doc, where)
    check_headline(result, where)
    return result


__all__ = ["CHECKPOINT_KIND", "SCHEMA_VERSION", "Checkpoint", "CheckpointRun", "Model", "PerChannel", "Recipe",
           "Result", "Run", "State", "check_checkpoint", "parse_result", "read_result", "seal", "state_checksum",
           *_BUILD]
