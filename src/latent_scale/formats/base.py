"""What every tensor-file format shares: a tensor as its header describes it, the checks applied to that
description before anything is read, and the reading of a checked tensor (or one row) at its offset."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO, NamedTuple

import torch

from ..errors import InputError
from .window import Span

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Header:
    """One tensor of a file, as its header describes it; a str dtype names a non-float one."""

    shape: tuple[int, ...]
    dtype: torch.dtype | str
    offset: int = 0  # where its data starts within the span (when in_place)
    member: str = ""  # the .npz member or the key holding it
    fortran: bool = False
    in_place: bool = True  # its bytes lie at `offset`; False: its library reads it (compressed, non-contiguous)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize if isinstance(self.dtype, torch.dtype) else 0


class Format(NamedTuple):
    """A file format: its tensors from the header alone, and one tensor (row None) or one row of a batch."""

    headers: Callable[[Span], dict[str, Header]]
    read: Callable[[Span, Header, int | None], torch.Tensor]


def within(h: Header, available: int) -> Header:
    """The header, if the data it describes lies within `available` bytes: a forged or truncated header
    must not make the listing enumerate (or a read allocate) what is not there."""
    if h.offset < 0 or h.offset + h.nbytes > available:
        raise ValueError(f"is truncated or its header is wrong: the header describes {h.offset + h.nbytes:,} "
                         f"bytes, there are {available:,}")
    return h


def check_dtype(dtype: torch.dtype | str) -> None:
    if dtype not in FLOATS:
        raise TypeError(f"has dtype {str(dtype).removeprefix('torch.')}; latents must be float16, bfloat16, "
                        "float32 or float64")


def pick(headers: dict[str, Header], key: str | None, where: str) -> Header:
    """The tensor --key names, or the only one; several and no --key is the user's to resolve."""
    if key is not None:
        if key not in headers:
            raise ValueError(f"has no tensor {key!r} (it has {', '.join(sorted(headers)) or 'none'})")
        return headers[key]
    if len(headers) > 1:
        raise InputError(f"{where} holds several tensors ({', '.join(sorted(headers))}); choose one with --key")
    if not headers:
        raise ValueError("holds no tensor")
    return next(iter(headers.values()))


def read_at(f: BinaryIO, h: Header, row: int | None) -> torch.Tensor:
    """The whole tensor or one row, read at its checked offset (C order; column-major arrays are read whole)."""
    if h.fortran:
        whole = read_at(f, replace(h, shape=h.shape[::-1], fortran=False), None).permute(*range(len(h.shape))[::-1])
        return whole if row is None else whole[row]
    shape = h.shape if row is None else h.shape[1:]
    nbytes = math.prod(shape) * h.dtype.itemsize
    if nbytes == 0:
        return torch.empty(shape, dtype=h.dtype)
    f.seek(h.offset + (row or 0) * nbytes)
    data = bytearray(nbytes)
    got = f.readinto(data) or 0
    if got < nbytes:
        raise OSError(f"file is truncated: {got} of the {nbytes} bytes of this latent")
    return torch.frombuffer(data, dtype=h.dtype).reshape(shape)


def raw_format(headers_of: Callable[[BinaryIO, int], dict[str, Header]]) -> Format:
    """A format whose tensors lie uncompressed at header offsets; `headers_of(file, its size)`."""
    def headers(span: Span) -> dict[str, Header]:
        with span.open() as f:
            return headers_of(f, span.size)

    def read(span: Span, h: Header, row: int | None) -> torch.Tensor:
        with span.open() as f:
            return read_at(f, h, row)

    return Format(headers, read)
