""".safetensors: the header checked by the rules of the safetensors library, tensors read at their offsets.

`safetensors.safe_open` takes a path only, so it can open neither a member of a tar shard nor a
header without mapping the file; it parses the header again on every open (a --save-latents shard
holds 256 tensors). The checks below are the library's (`Metadata::validate` and `read_metadata`),
and tests/test_formats.py compares them with safe_open over generated headers: a header is read
only when the library would read it, and gives the tensors it gives.
"""

from __future__ import annotations

import json
import math
from typing import Any, BinaryIO

import torch

from ..errors import one_line
from .base import Header, raw_format

MAX_HEADER = 100_000_000  # the library's MAX_HEADER_SIZE
USIZE = 1 << 64
FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
        "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64}


def refuse(why: str) -> ValueError:
    return ValueError(f"is not a valid safetensors file ({why})")


def headers(f: BinaryIO, available: int) -> dict[str, Header]:
    """Every tensor of a file of `available` bytes, once its header has passed the library's checks."""
    prefix = f.read(8)
    n = int.from_bytes(prefix, "little")
    if len(prefix) < 8 or n > MAX_HEADER or 8 + n > available:
        raise refuse("bad header length")
    try:
        meta = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError) as e:
        raise refuse(f"its header is not JSON: {one_line(e, 120)}") from None
    if not isinstance(meta, dict):
        raise refuse("its header is not a JSON object")
    entries = {k: _entry(k, v) for k, v in meta.items() if k != "__metadata__"}
    _metadata(meta.get("__metadata__"))
    end = 0
    for key, (_, shape, (begin, stop)) in sorted(entries.items(), key=lambda kv: kv[1][2]):
        if begin != end or stop < begin:
            raise refuse(f"{key!r} does not start where the previous tensor ends")
        end = stop
        if stop - begin != _nbytes(key, entries[key][0], shape):
            raise refuse(f"{key!r} has shape {list(shape)} but {stop - begin} bytes")
    if 8 + n + end != available:
        raise refuse(f"its tensors end at byte {8 + n + end:,}, the file has {available:,}")
    return {k: Header(shape, FLOATS.get(dtype, dtype), 8 + n + begin, k)
            for k, (dtype, shape, (begin, _)) in entries.items()}


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique and valid UTF-8 (lone surrogates are JSON-escapable but not UTF-8)."""
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice")
    for k in keys:
        k.encode("utf-8")
    return dict(pairs)


def _is_usize(x: Any) -> bool:
    return type(x) is int and 0 <= x < USIZE


def _entry(key: str, entry: Any) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """(dtype, shape, data_offsets) of one tensor, each of the type the library requires."""
    if not (isinstance(entry, dict) and {"dtype", "shape", "data_offsets"} <= set(entry)):
        raise refuse(f"{key!r} is not {{dtype, shape, data_offsets}}")
    dtype, shape, span = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in BITS:
        raise refuse(f"{key!r} has an unknown dtype {str(dtype)[:40]!r}")
    if not (isinstance(shape, list) and all(map(_is_usize, shape))):
        raise refuse(f"{key!r} has a shape that is not a list of sizes")
    if not (isinstance(span, list) and len(span) == 2 and all(map(_is_usize, span))):
        raise refuse(f"{key!r} has data_offsets that are not two byte offsets")
    return dtype, tuple(shape), (span[0], span[1])


def _metadata(meta: Any) -> None:
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise refuse("its __metadata__ is not a map of strings")


def _nbytes(key: str, dtype: str, shape: tuple[int, ...]) -> int:
    """Its byte count; beyond a 64-bit size the library's checked arithmetic overflows, and so it is refused."""
    count = math.prod(shape)
    if count >= USIZE or count * BITS[dtype] // 8 >= USIZE:
        raise refuse(f"{key!r} is too large")
    return count * BITS[dtype] // 8


SAFETENSORS = raw_format(headers)
