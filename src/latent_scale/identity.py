"""Identity of a run: what must match for a checkpoint to continue or for results to merge."""

from __future__ import annotations

from typing import Any


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The first field (dotted path) where two nested dicts differ, described for the user."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if diff:
                return diff
        return None
    return None if a == b else f"{where} differs ({a!r} vs {b!r})"
