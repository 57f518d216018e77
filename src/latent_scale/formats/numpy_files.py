""".npy and .npz: headers by numpy's own header reader, data read at the offset it gives.

numpy.load(mmap_mode="r") is that header reader plus a memory map of the rest; mapping costs more
than a latent takes to read (a 4x64x64 float32 .npy: 150 µs through np.load(mmap_mode="r"), 25 µs
read at its offset), so the checked range is read directly. Stored .npz members are read in place
the same way; compressed ones by numpy's reader, in one pass per member, kept for the member's
other rows (a batch read row by row would otherwise decompress it again for every row).
"""

from __future__ import annotations

import struct
import threading
import zipfile
from collections import OrderedDict
from dataclasses import replace
from typing import BinaryIO

import numpy as np
import torch

from .base import Format, Header, raw_format, read_at, within
from .window import Span

NUMPY_FLOATS = {np.dtype("<f2"): torch.float16, np.dtype("<f4"): torch.float32, np.dtype("<f8"): torch.float64}
MAX_DECOMPRESSED = 1 << 30  # a compressed .npz member is decompressed whole: at most this many bytes
KEPT_BYTES = 2 << 30  # decompressed members kept per process, the least recently used dropped first
ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes, file name length, extra field length


def npy_header(f: BinaryIO, available: int, member: str = "") -> Header:
    """A .npy header by numpy's reader (its size limit, no pickles), its data within `available` bytes."""
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, fortran, dtype = readers[version](f)
    if dtype.hasobject:
        raise ValueError("holds Python objects (a pickle); only numeric arrays are read")
    return within(Header(tuple(shape), NUMPY_FLOATS.get(dtype, str(dtype)), f.tell(), member, fortran), available)


def npz_headers(f: BinaryIO, available: int) -> dict[str, Header]:
    """Each .npy member's header; keys as np.load names them (without .npy)."""
    with zipfile.ZipFile(f) as z:
        return {info.filename.removesuffix(".npy"): _member(z, f, info, available)
                for info in z.infolist() if info.filename.endswith(".npy")}


def _member(z: zipfile.ZipFile, f: BinaryIO, info: zipfile.ZipInfo, available: int) -> Header:
    """A member's header: stored members in place (offsets in the .npz), compressed ones for numpy to read."""
    with z.open(info) as m:  # zipfile checks the member's local header against the directory
        h = npy_header(m, info.file_size, info.filename)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size == info.file_size:
        f.seek(info.header_offset)
        _, name_length, extra_length = ZIP_LOCAL_HEADER.unpack(f.read(ZIP_LOCAL_HEADER.size))
        start = info.header_offset + ZIP_LOCAL_HEADER.size + name_length + extra_length
        return within(replace(h, offset=start + h.offset), min(available, start + info.file_size))
    if h.nbytes > MAX_DECOMPRESSED:
        raise ValueError(f"has a compressed member of {h.nbytes:,} bytes, more than the {MAX_DECOMPRESSED:,} read "
                         "into memory; save it with np.savez (uncompressed) to have it read in place")
    return replace(h, in_place=False)


class Kept:
    """Decompressed members by (span, member), at most `budget` bytes; the least recently used go first."""

    def __init__(self, budget: int) -> None:
        self.budget, self.items, self.lock = budget, OrderedDict[tuple[Span, str], np.ndarray](), threading.Lock()

    def get(self, span: Span, h: Header) -> np.ndarray:
        key = (span, h.member)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        array = _decompress(span, h)
        with self.lock:
            self.items[key] = array
            while sum(a.nbytes for a in self.items.values()) > self.budget and len(self.items) > 1:
                self.items.popitem(last=False)
        return array


def _decompress(span: Span, h: Header) -> np.ndarray:
    """One compressed member, whole, by numpy's reader (what np.load(...)[key] does): one pass."""
    with span.open() as f, zipfile.ZipFile(f) as z, z.open(h.member) as m:
        array = np.lib.format.read_array(m, allow_pickle=False)
    if tuple(array.shape) != h.shape or NUMPY_FLOATS.get(array.dtype) != h.dtype:
        raise ValueError(f"member {h.member} no longer matches its header (shape {tuple(array.shape)})")
    return array


KEPT = Kept(KEPT_BYTES)


def _npz_read(span: Span, h: Header, row: int | None) -> torch.Tensor:
    if h.in_place:
        with span.open() as f:
            return read_at(f, h, row)
    whole = KEPT.get(span, h)
    return torch.from_numpy(np.array(whole if row is None else whole[row], order="C"))


NPY = raw_format(lambda f, size: {"": npy_header(f, size)})
NPZ = Format(raw_format(npz_headers).headers, _npz_read)
