"""Result files: one result, or a --size sweep's JSON list of them (one per size, in the order asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..reading import read_json
from .result import Result


def is_sweep(doc: Any) -> bool:
    """Whether a file's JSON is a sweep: a non-empty list of objects."""
    return isinstance(doc, list) and bool(doc) and all(isinstance(r, dict) for r in doc)


def entry_names(doc: list[Any], where: str) -> list[str]:
    """How messages name each entry of a sweep: by its size where it states one."""
    sizes = [(r.get("recipe") or {}).get("size") if isinstance(r.get("recipe"), dict) else None for r in doc]
    return [f"{where} (size {s})" if isinstance(s, int) else f"{where} (entry {i + 1})" for i, s in enumerate(sizes)]


def read_results(doc: Any, where: str) -> list[Result]:
    """Every result a file holds (one, or one per size of a sweep), each read and checked."""
    from . import read_result

    if is_sweep(doc):
        return [read_result(r, name) for r, name in zip(doc, entry_names(doc, where), strict=True)]
    return [read_result(doc, where)]


def read_result_file(path: str | Path) -> list[Result]:
    """read_results of a file (strict JSON, a regular file)."""
    return read_results(read_json(path), str(path))


def pick_size(results: list[Result], size: int | None, where: str, what: str) -> Result:
    """The one result `what` (e.g. "apply") works on: the only one, or the sweep's entry at --size."""
    sizes = [r.recipe.size for r in results]
    listed = ", ".join(str(s) for s in sizes)
    if size is None:
        if len(results) == 1:
            return results[0]
        raise InputError(f"{where} holds {len(results)} results, one per --size of a sweep ({listed}); {what} "
                         f"takes one: pass --size with one of them")
    if size not in sizes:
        raise InputError(f"{where} holds no result for --size {size}; it holds size{'s' * (len(sizes) > 1)} "
                         f"{listed}")
    return results[sizes.index(size)]
