"""Sealing: the sha256 of what a file's numbers come from, written beside it and checked on reading.

A result's checksum covers its `state` (every number of the result follows from it, and `read_result`
checks that the headline does); a checkpoint's covers its `run` (states and `done`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import InputError
from .keys import CHECKPOINT_KIND, KEY_RUN, KEY_STATE, KEY_STATE_SHA256
from .parse import DAMAGED


def canonical(value: Any) -> bytes:
    """One byte string per JSON value, whatever the spacing and key order of the file it came from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def state_checksum(value: Any) -> str:
    """sha256 of the canonical JSON of a state (or of a checkpoint's run)."""
    return hashlib.sha256(canonical(value)).hexdigest()


def _sealed_part(doc: dict[str, Any]) -> str:
    return KEY_RUN if doc.get("kind") == CHECKPOINT_KIND else KEY_STATE


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with its `state_sha256`; call it on a result or checkpoint just before writing it."""
    return {**doc, KEY_STATE_SHA256: state_checksum(doc.get(_sealed_part(doc)))}


def check_sealed(doc: dict[str, Any], where: str) -> None:
    """Refuse a file without a `state_sha256`, or whose `state_sha256` does not match its content."""
    part = _sealed_part(doc)
    if KEY_STATE_SHA256 not in doc:
        raise InputError(f"{where}: {KEY_STATE_SHA256} is missing; {DAMAGED}")
    if doc[KEY_STATE_SHA256] != state_checksum(doc.get(part)):
        raise InputError(f"{where}: {KEY_STATE_SHA256} does not match its {part}; {DAMAGED}")
