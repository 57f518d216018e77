""".pt/.pth: torch.load(weights_only=True) decides what may be read; plain tensors are read in place.

torch.load builds every tensor through its unpickler, which costs more than reading a small latent.
A torch.save zip whose pickle holds only float tensors (alone or in a dict) that are contiguous,
within their storage, stored uncompressed and little-endian is read at its offsets like a .npy: its
pickle by a restricted unpickler that knows nothing else, its zip by torch.load's own C++ reader,
`torch._C.PyTorchFileReader` (a private API: about 15 µs a file where Python's zipfile takes 85 µs,
which is most of the listing). Anything else (other objects, an offset, size or stride torch.load's
checks might refuse, a compressed record, a torch without that reader) goes through torch.load,
whose answer or refusal stands.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import Any, BinaryIO, NamedTuple

import torch

from .base import FLOATS, Format, Header, read_at
from .window import Span

MMAP_BYTES = 1 << 22  # whole .pt files larger than this are memory-mapped by torch.load
READER = getattr(torch._C, "PyTorchFileReader", None)  # torch.load's zip reader; private, so it may go
STORAGES = {"HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16, "FloatStorage": torch.float32,
            "DoubleStorage": torch.float64}


class Stored(NamedTuple):
    """A float tensor of a torch.save zip as its pickle describes it, before any data is read."""

    dtype: torch.dtype
    record: str  # its storage's zip record, data/<record>
    numel: Any  # its storage's element count
    offset: Any  # in elements
    shape: tuple[Any, ...]
    stride: tuple[Any, ...]


def _stored(storage: tuple[torch.dtype, str, Any], offset: Any, shape: Any, stride: Any, *_: Any) -> Stored:
    return Stored(*storage, offset, tuple(shape), tuple(stride))


class LayoutUnpickler(pickle.Unpickler):
    """The pickle of a torch.save zip, read without building tensors. It knows only float tensors in
    (ordered) dicts, a subset of what weights_only=True allows; anything else raises, and torch.load decides."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _stored
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in STORAGES:
            return STORAGES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is left to torch.load")

    def persistent_load(self, pid: Any) -> tuple[torch.dtype, str, Any]:
        kind, dtype, record, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError("not a typed storage")
        return dtype, str(record), numel


def plain(t: Stored) -> bool:
    """Whole numbers that torch.load's checks accept (offset >= 0, sizes >= 1, the tensor within its
    storage), narrowed to what lies contiguously at one offset (C order)."""
    numbers = (t.offset, t.numel, *t.shape, *t.stride)
    if not all(type(x) is int for x in numbers) or len(t.stride) != len(t.shape):
        return False
    if t.offset < 0 or any(n < 1 for n in t.shape) or t.offset + math.prod(t.shape) > t.numel:
        return False
    expected = [math.prod(t.shape[d + 1:]) for d in range(len(t.shape))]
    return all(n == 1 or s == e for n, s, e in zip(t.shape, t.stride, expected, strict=True))


def _stored_uncompressed(f: BinaryIO, header_offset: int) -> bool:
    """Whether a zip record is stored as is (method 0 in its local header), so it can be read in place."""
    f.seek(header_offset)
    local = f.read(10)
    return len(local) == 10 and local[:4] == b"PK\x03\x04" and struct.unpack("<H", local[8:])[0] == 0


def _in_place(span: Span) -> dict[str, Header] | None:
    """Headers of a zip whose tensors are all plain and stored uncompressed; None leaves the file to torch.load."""
    if READER is None:
        return None
    try:
        with span.open() as f:
            return _zip_headers(f, READER(span.path if span.whole else f))
    except Exception:  # noqa: BLE001 - anything unusual is torch.load's to judge
        return None


def _zip_headers(f: BinaryIO, z: Any) -> dict[str, Header] | None:
    """z: a torch._C.PyTorchFileReader on f."""
    if z.has_record("byteorder") and z.get_record("byteorder") != b"little":
        return None
    obj = LayoutUnpickler(io.BytesIO(z.get_record("data.pkl"))).load()
    found = {"": obj} if isinstance(obj, Stored) else dict(obj) if isinstance(obj, dict) else {}
    headers = {}
    for k, t in found.items():
        if not isinstance(t, Stored):
            continue
        record = f"data/{t.record}"
        if not (isinstance(k, str) and plain(t) and z.has_record(record)
                and z.get_record_size(record) == t.numel * t.dtype.itemsize
                and _stored_uncompressed(f, z.get_record_header_offset(record))):
            return None
        headers[k] = Header(t.shape, t.dtype, z.get_record_offset(record) + t.offset * t.dtype.itemsize, k)
    return headers or None


def _refusal(e: Exception) -> str:
    """torch.load's weights_only failure in one sentence (the global or opcode it refused)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    if not any("weights_only" in ln or "nsupported" in ln for ln in lines):
        return f"torch.load cannot read it ({lines[0][:200]})"
    why = next((ln for ln in lines if "nsupported" in ln), lines[0]).removeprefix("WeightsUnpickler error: ")
    return (f"refused: loading it would need more than plain tensors ({why.split('. ')[0][:200]}); only "
            "weights_only=True pickles are read, convert it to .safetensors or .npy")


@functools.lru_cache(maxsize=4)
def _loaded(span: Span) -> dict[str, torch.Tensor]:
    """The tensors of a .pt/.pth by torch.load(weights_only=True), memory-mapped when a large whole zip file."""
    try:
        if span.whole:
            span.unchanged()
            mmap = span.size > MMAP_BYTES and zipfile.is_zipfile(span.path)
            obj = torch.load(span.path, map_location="cpu", weights_only=True, mmap=mmap)
        else:
            with span.open() as f:
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - any other failure means the file is not plain tensors
        raise ValueError(_refusal(e)) from None
    if isinstance(obj, torch.Tensor):
        return {"": obj}
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise ValueError(f"holds a {type(obj).__name__}, not a tensor or a dict of tensors")
    return tensors


def headers(span: Span) -> dict[str, Header]:
    return _in_place(span) or {
        k: Header(tuple(t.shape), t.dtype if t.dtype in FLOATS else str(t.dtype), member=k, in_place=False)
        for k, t in _loaded(span).items()}


def read(span: Span, h: Header, row: int | None) -> torch.Tensor:
    if h.in_place:
        with span.open() as f:
            return read_at(f, h, row)
    span.unchanged()
    t = _loaded(span)[h.member]
    return (t if row is None else t[row]).clone()


PT = Format(headers, read)
