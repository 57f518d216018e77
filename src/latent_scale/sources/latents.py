"""Cached latents: .npy, .npz, .safetensors and .pt/.pth files (a folder, glob, .txt list or tar
shards), parquet latent columns, and the folders --save-latents writes.

Listing reads headers only (the npy and safetensors headers, .npz member headers, the pickle of a
.pt zip; torch.load only for .pt files that parse does not know), so a million latents are
enumerated without reading one; plain .pt tensors are then read at their offsets like .npy
(a 4x64x64 latent: header 30 µs, read 20 µs; torch.load takes 130 µs). Every latent is one unit:
a file holds one latent (C, H, W) / (C, T, H, W) or a batch of them with a leading dimension.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import pickle
import struct
import zipfile
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch

from ..errors import InputError
from ..fields import option
from ..latent_cache import is_cache, read_cache
from ..options import check_positive
from .base import Source, SourceContext, file_signature
from .files import check_regular, expand, glob_root, is_glob, matching, one_line, read_list, scan_folder
from .tar import TarMember

LATENT_EXTENSIONS = {".npy", ".npz", ".safetensors", ".pt", ".pth"}
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NUMPY_FLOATS = {np.dtype("<f2"): torch.float16, np.dtype("<f4"): torch.float32, np.dtype("<f8"): torch.float64}
SAFETENSORS_FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
MMAP_BYTES = 1 << 22  # .pt files larger than this are memory-mapped
PT_STORAGES = {"HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16, "FloatStorage": torch.float32,
               "DoubleStorage": torch.float64}
LOGVAR_CLAMP = (-30.0, 20.0)  # as LDM's and diffusers' DiagonalGaussianDistribution clamp it


@dataclass(frozen=True)
class Header:
    """One tensor of a container, as its header describes it; a str dtype names a non-float one."""

    shape: tuple[int, ...]
    dtype: torch.dtype | str
    offset: int = 0  # where its data starts (npy, safetensors; within the member for .npz)
    member: str = ""  # the .npz member or the key holding it
    fortran: bool = False
    in_place: bool = True  # its bytes lie at `offset`; False: only torch.load can read it


class Window(io.RawIOBase):
    """A byte range of a file as a seekable file object: a tar member, or a whole file."""

    def __init__(self, loc: TarMember) -> None:
        if loc.error:
            raise OSError(loc.error)
        self.loc, self.pos = loc, 0
        self.file = open(loc.tar, "rb")  # noqa: SIM115 - closed by close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = max(0, pos + (0, self.pos, self.loc.size)[whence])
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self.loc.size - self.pos))
        self.file.seek(self.loc.offset + self.pos)
        got = self.file.readinto(memoryview(buffer)[:n]) or 0
        self.pos += got
        return got

    def close(self) -> None:
        self.file.close()
        super().close()


def open_bytes(loc: TarMember) -> BinaryIO:
    """A unit's bytes as a buffered file: the file itself when the unit is a whole file (the common
    case, and the fastest), else a Window on its range (zipfile reads in small pieces)."""
    if whole_file(loc):
        return open(loc.tar, "rb")  # noqa: SIM115 - the caller closes it
    return io.BufferedReader(Window(loc))


def _npy_header(f: BinaryIO, member: str = "") -> Header:
    version = np.lib.format.read_magic(f)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, fortran, dtype = readers[version](f)
    if dtype.hasobject:
        raise ValueError("holds Python objects (a pickle); only numeric arrays are read")
    return Header(tuple(shape), NUMPY_FLOATS.get(dtype, str(dtype)), f.tell(), member, fortran)


def within(h: Header, available: int) -> Header:
    """The header, if the data it describes lies within `available` bytes: a forged or truncated header
    must not make the listing enumerate (or a read allocate) what is not there."""
    if isinstance(h.dtype, torch.dtype):
        need = h.offset + math.prod(h.shape) * h.dtype.itemsize
        if need > available:
            raise ValueError(f"is truncated or its header is wrong: the header describes {need:,} bytes, "
                             f"there are {available:,}")
    return h


def _npz_headers(f: BinaryIO) -> dict[str, Header]:
    with zipfile.ZipFile(f) as z:
        out = {}
        for info in z.infolist():
            if info.filename.endswith(".npy"):
                with z.open(info) as m:
                    out[info.filename.removesuffix(".npy")] = within(_npy_header(m, info.filename), info.file_size)
        return out


def _safetensors_headers(f: BinaryIO) -> dict[str, Header]:
    n = int.from_bytes(f.read(8), "little")
    if not 2 <= n <= 100_000_000:
        raise ValueError("not a safetensors file (bad header length)")
    try:
        meta = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not a safetensors file (its header is not JSON)") from None
    return {k: _safetensors_entry(k, v, 8 + n) for k, v in meta.items() if k != "__metadata__"}


def _safetensors_entry(key: str, entry: dict[str, Any], start: int) -> Header:
    """One tensor of a safetensors header; its byte span must match its shape, or a read at its offset
    would take another tensor's bytes."""
    begin, end = entry["data_offsets"]
    h = Header(tuple(entry["shape"]), SAFETENSORS_FLOATS.get(entry["dtype"], entry["dtype"]), start + begin, key)
    if isinstance(h.dtype, torch.dtype) and end - begin != math.prod(h.shape) * h.dtype.itemsize:
        raise ValueError(f"is not a valid safetensors file: {key!r} has shape {list(h.shape)} but {end - begin} bytes")
    return h


def read_raw(f: BinaryIO, h: Header, row: int | None) -> torch.Tensor:
    """The whole tensor or one row, read at its offset (C order; column-major arrays are read whole)."""
    if h.fortran:
        whole = read_raw(f, replace(h, shape=h.shape[::-1], fortran=False), None).permute(*range(len(h.shape))[::-1])
        return whole if row is None else whole[row]
    shape = h.shape if row is None else h.shape[1:]
    nbytes = math.prod(shape) * h.dtype.itemsize
    f.seek(h.offset + (row or 0) * nbytes)
    data = f.read(nbytes)
    if len(data) < nbytes:
        raise OSError(f"file is truncated: {len(data)} of the {nbytes} bytes of this latent")
    return torch.frombuffer(bytearray(data), dtype=h.dtype).reshape(shape)


def _refusal(e: Exception) -> str:
    """torch.load's weights_only failure in one sentence (the global or opcode it refused)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    if not any("weights_only" in ln or "nsupported" in ln for ln in lines):
        return f"torch.load cannot read it ({lines[0][:200]})"
    why = next((ln for ln in lines if "nsupported" in ln), lines[0]).removeprefix("WeightsUnpickler error: ")
    return (f"refused: loading it would need more than plain tensors ({why.split('. ')[0][:200]}); only "
            "weights_only=True pickles are read, convert it to .safetensors or .npy")


@functools.lru_cache(maxsize=4)
def _torch_tensors(loc: TarMember) -> dict[str, torch.Tensor]:
    """The tensors of a .pt/.pth (memory-mapped when it is a whole zip-format file), with weights_only=True."""
    try:
        if whole_file(loc):  # mapping pays for itself only on large files (a batch); small ones load faster
            mmap = loc.size > MMAP_BYTES and zipfile.is_zipfile(loc.tar)
            obj = torch.load(loc.tar, map_location="cpu", weights_only=True, mmap=mmap)
        else:
            with Window(loc) as f:
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is not plain tensors
        raise ValueError(_refusal(e)) from None
    if isinstance(obj, torch.Tensor):
        return {"": obj}
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise ValueError(f"holds a {type(obj).__name__}, not a tensor or a dict of tensors")
    return tensors


class Format(NamedTuple):
    headers: Callable[[TarMember], dict[str, Header]]
    read: Callable[[TarMember, Header, int | None], torch.Tensor]


def _raw(headers_of: Callable[[BinaryIO], dict[str, Header]]) -> Format:
    """A format whose tensors lie uncompressed at header offsets (npy, safetensors)."""
    def headers(loc: TarMember) -> dict[str, Header]:
        with open_bytes(loc) as f:
            return headers_of(f)

    def read(loc: TarMember, h: Header, row: int | None) -> torch.Tensor:
        with open_bytes(loc) as f:
            return read_raw(f, h, row)

    return Format(headers, read)


def _npz_read(loc: TarMember, h: Header, row: int | None) -> torch.Tensor:
    with open_bytes(loc) as f, zipfile.ZipFile(f) as z, z.open(h.member) as m:
        return read_raw(m, h, row)


class Stored(NamedTuple):
    """A float tensor of a torch.save zip as its pickle describes it, before any data is read."""

    dtype: torch.dtype
    record: str  # its storage's zip record, data/<record>
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _stored(storage: tuple[torch.dtype, str], offset: int, shape: tuple[int, ...], stride: tuple[int, ...],
            *_: Any) -> Stored:
    return Stored(*storage, offset, tuple(shape), tuple(stride))


class LayoutUnpickler(pickle.Unpickler):
    """Reads the pickle of a torch.save zip without building tensors (torch.load's unpickler costs more
    than reading a small latent). It knows only float tensors in (ordered) dicts, a subset of what
    weights_only=True allows; anything else raises and the file goes through torch.load as before."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _stored
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in PT_STORAGES:
            return PT_STORAGES[name]
        raise pickle.UnpicklingError(f"{module}.{name} is left to torch.load")

    def persistent_load(self, pid: Any) -> tuple[torch.dtype, str]:
        kind, dtype, record, _location, _numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError("not a typed storage")
        return dtype, str(record)


def _contiguous(t: Stored) -> bool:
    expected = [math.prod(t.shape[d + 1:]) for d in range(len(t.shape))]
    return math.prod(t.shape) > 0 and all(n == 1 or s == e for n, s, e in zip(t.shape, t.stride, expected, strict=True))


def whole_file(loc: TarMember) -> bool:
    """The unit is a file of its own, so it can be opened by path: a tar member never starts at 0 (its
    header comes first)."""
    return not loc.error and loc.offset == 0


def _stored_uncompressed(f: BinaryIO, header_offset: int) -> bool:
    """Whether a zip record is stored as is (method 0 in its local header), so it can be read in place."""
    f.seek(header_offset)
    local = f.read(10)
    return len(local) == 10 and local[:4] == b"PK\x03\x04" and struct.unpack("<H", local[8:])[0] == 0


def _pt_in_place(loc: TarMember) -> dict[str, Header] | None:
    """Headers of a torch.save zip whose tensors are contiguous little-endian floats stored uncompressed,
    which are then read at their offsets like .npy; None leaves the file to torch.load. The zip is read by
    torch.load's own reader (C++: 15 µs a small file, Python's zipfile 85 µs)."""
    try:
        with open_bytes(loc) as f:
            return _zip_headers(f, torch._C.PyTorchFileReader(loc.tar if whole_file(loc) else f))
    except Exception:  # noqa: BLE001 - anything unusual is torch.load's to judge, as before
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
        end = (t.offset + math.prod(t.shape)) * t.dtype.itemsize
        if z.get_record_size(record) < end or not _contiguous(t) or not _stored_uncompressed(
                f, z.get_record_header_offset(record)):
            return None
        headers[str(k)] = Header(t.shape, t.dtype, z.get_record_offset(record) + t.offset * t.dtype.itemsize, str(k))
    return headers or None


def _torch_headers(loc: TarMember) -> dict[str, Header]:
    return _pt_in_place(loc) or {
        k: Header(tuple(t.shape), t.dtype if t.dtype in FLOATS else str(t.dtype), member=k, in_place=False)
        for k, t in _torch_tensors(loc).items()}


def _torch_read(loc: TarMember, h: Header, row: int | None) -> torch.Tensor:
    if h.in_place:
        with open_bytes(loc) as f:
            return read_raw(f, h, row)
    t = _torch_tensors(loc)[h.member]
    return (t if row is None else t[row]).clone()


TORCH = Format(_torch_headers, _torch_read)
FORMATS = {".npy": _raw(lambda f: {"": _npy_header(f)}), ".safetensors": _raw(_safetensors_headers),
           ".npz": Format(_raw(_npz_headers).headers, _npz_read), ".pt": TORCH, ".pth": TORCH}


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


def check_dtype(dtype: torch.dtype | str) -> None:
    if dtype not in FLOATS:
        raise TypeError(f"has dtype {str(dtype).removeprefix('torch.')}; latents must be float16, bfloat16, "
                        "float32 or float64")


def batch_length(shape: tuple[int, ...], channels: int | None) -> int | None:
    """None for one latent, else how many a batch holds. A 4-D tensor is a batch of image latents
    (B, C, H, W) unless the expected channel count says it is one video latent (C, T, H, W)."""
    if len(shape) == 3:
        return None
    if len(shape) == 4 and channels is not None and shape[0] == channels and shape[1] != channels:
        return None
    if len(shape) in (4, 5):
        return shape[0]
    raise ValueError(f"has shape {tuple(shape)}; a latent is (C, H, W) or (C, T, H, W), optionally in a batch")


@dataclass(frozen=True)
class FileUnit:
    """One latent of a file: the whole tensor (row None) or one row of a batch; `error` if unusable."""

    loc: TarMember
    suffix: str
    header: Header | None
    row: int | None = None
    error: str | None = None

    @property
    def shape(self) -> tuple[int, ...] | None:
        if self.header is None:
            return None
        return self.header.shape if self.row is None else self.header.shape[1:]

    def read(self) -> torch.Tensor:
        if self.error:
            raise ValueError(self.error)
        return FORMATS[self.suffix].read(self.loc, self.header, self.row)


@dataclass(frozen=True)
class RowUnit:
    """One latent in a parquet column: .npy bytes or nested lists of floats."""

    column: Any  # datasets.Column
    row: int
    shape = None  # known only once read

    def read(self) -> torch.Tensor:
        value = self.column.cell(self.row)
        if isinstance(value, (bytes, bytearray)):
            f = io.BytesIO(value)
            h = _npy_header(f)
            check_dtype(h.dtype)
            return read_raw(f, h, None)
        return torch.from_numpy(np.asarray(value))


Unit = FileUnit | RowUnit


def file_units(uid: str, loc: TarMember, key: str | None, channels: int | None) -> list[tuple[str, Unit]]:
    """The latents of one file from its header: one unit, a batch, or one unusable entry."""
    suffix = Path(uid.rsplit("::", 1)[-1]).suffix.lower()
    if loc.error:  # missing, unreadable, not a regular file: said once, as found
        return [(uid, FileUnit(loc, suffix, None, error=loc.error))]
    try:
        h = pick(FORMATS[suffix].headers(loc), key, uid)
        check_dtype(h.dtype)
        if h.in_place and suffix != ".npz":  # .npz members were checked against their own size
            within(h, loc.size)
        count = batch_length(h.shape, channels)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any header failure makes the file one bad unit
        return [(uid, FileUnit(loc, suffix, None, error=one_line(e)))]
    if count is None:
        return [(uid, FileUnit(loc, suffix, h))]
    return [(f"{uid}#{r}", FileUnit(loc, suffix, h, r)) for r in range(count)]


def _location(path: str, members: dict[str, TarMember]) -> TarMember:
    if path in members:
        return members[path]
    try:
        return TarMember(path, 0, check_regular(path).st_size)
    except OSError as e:
        return TarMember(path, 0, 0, f"cannot read it ({one_line(e)})")


def _matches(spec: str) -> tuple[list[str], str]:
    """--latents -> (files, tar shards and parquet files it names, the root ids are relative to)."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return scan_folder(p, LATENT_EXTENSIONS | {".tar", ".parquet"}), str(p)
    if p.is_file():
        return (read_list(p) if p.suffix.lower() == ".txt" else [str(p)]), str(p.parent)
    found = matching(p) if is_glob(spec) else []
    if not found:
        raise InputError(f"--latents {spec} does not exist; pass a folder, a glob, a .txt list or .tar shards of "
                         ".npy/.npz/.safetensors/.pt files, or parquet files")
    return found, str(glob_root(p))


def list_units(spec: str, ctx: SourceContext, channels: int | None) -> tuple[list[str], list[Unit], str]:
    """Resolve --latents to (ids relative to the root, units, root), reading headers only."""
    from .datasets import Column

    matches, root = _matches(spec)
    parquet = sorted(m for m in matches if m.lower().endswith(".parquet"))
    paths, members = expand([m for m in matches if m not in parquet], LATENT_EXTENSIONS)
    found = [(os.path.relpath(uid, root), unit) for path in paths
             for uid, unit in file_units(path, _location(path, members), ctx.own.key, channels)]
    if parquet:
        column = Column(parquet, root)
        column.column = latent_column(column, ctx.column)
        found += [(cid, RowUnit(column, r)) for r, cid in enumerate(column.ids())]
    return [uid for uid, _ in found], [unit for _, unit in found], root


def latent_column(column: Any, asked: str | None) -> str:
    """--column, else the only binary or list column of the parquet files."""
    from .datasets import pyarrow

    types = pyarrow().types
    schema = column.schema()
    if asked:
        if asked not in schema.names:
            raise InputError(f"--column {asked} is not a column of {column.files[0]}; it has {', '.join(schema.names)}")
        return asked
    kinds = (types.is_binary, types.is_large_binary, types.is_list, types.is_large_list, types.is_fixed_size_list)
    usable = [f.name for f in schema if any(kind(f.type) for kind in kinds)]
    if len(usable) != 1:
        raise InputError(f"cannot tell which column of {column.files[0]} holds the latents "
                         f"(columns: {', '.join(schema.names)}); choose one with --column")
    return usable[0]


def cache_units(spec: str, key: str | None) -> tuple[list[str], list[Unit], list[int], dict[str, Any]]:
    """A --save-latents folder: its items in the image run's order, with their ids and noise keys."""
    if key is not None:
        raise InputError(f"--latents {spec} is a latent-scale cache, which has no --key to choose")
    items, settings = read_cache(spec)
    units: list[Unit] = []
    shards: dict[str, tuple[TarMember, dict[str, Header]]] = {}
    for item in items:
        if item["shard"] not in shards:
            loc = _location(os.path.join(spec, item["shard"]), {})
            try:
                shards[item["shard"]] = loc, FORMATS[".safetensors"].headers(loc)
            except Exception as e:  # noqa: BLE001 - a damaged shard makes its items bad units
                shards[item["shard"]] = replace(loc, error=f"{item['shard']}: {one_line(e)}"), {}
        loc, headers = shards[item["shard"]]
        h = headers.get(item["key"])
        units.append(FileUnit(loc, ".safetensors", h, error=None if h else loc.error or f"no {item['key']} in shard"))
    return [it["id"] for it in items], units, [int(it["noise_key"]) for it in items], settings


@dataclass
class LatentOptions:
    """The stored-latent source's own options (--latents PATH chooses it)."""

    moments: bool = option(False, "Stored latents hold mean ‖ logvar (2C channels, LDM layout), read or written "
                                  "(with --save-latents)", panel="Stored latents", flags=("--moments",))
    key: str | None = option(None, "The tensor to read in latent files holding several (dict, .npz, .safetensors)",
                             panel="Stored latents")
    input_scale: float | None = option(None, "The stored latents were multiplied by this factor",
                                       panel="Stored latents")

    def validate(self) -> None:
        check_positive(self, ("input_scale",))


class LatentSource(Source):
    """Latents read from files in place of an encoder; `posterior` turns a batch into (mean, logvar | None)."""

    kind = "latents"
    input = "latents"
    unit, units = "latent", "latents"
    panel = "Stored latents"
    options = LatentOptions

    def __init__(self, ids: list[str], root: str, units: list[Unit], *, moments: bool, key: str | None,
                 input_scale: float | None, channels: int | None, reference: str,
                 keys: list[int] | None = None, cache: dict[str, Any] | None = None) -> None:
        super().__init__(ids, root)
        self.units, self.moments, self.key, self.input_scale = units, moments, key, input_scale
        self.channels, self.reference = channels, reference
        self.keys, self.cache = keys, cache
        # a cache keeps logvar as the encoder gave it, so exp(0.5 * logvar) in its dtype is the run's std
        self.logvar_dtype = getattr(torch, cache["dtype"]) if cache and cache.get("dtype") else torch.float64

    @classmethod
    def accepts(cls, spec: str, ctx: SourceContext) -> bool:
        return False  # chosen by --latents, never by --data

    @classmethod
    def open(cls, spec: str, ctx: SourceContext) -> LatentSource:
        """`ctx.channels`: the model's latent channel count when --model is given (it also settles
        whether a 4-D tensor is one video latent or a batch of image latents)."""
        opts, channels = ctx.own, ctx.channels
        stored = channels * (2 if opts.moments else 1) if channels else None
        keys = cache = None
        if is_cache(spec):
            ids, units, keys, cache = cache_units(spec, opts.key)
            if opts.moments and not cache["moments"]:
                raise InputError(f"--latents {spec} was saved without --moments; drop --moments")
            root, moments = str(spec), bool(cache["moments"])
        else:
            (ids, units, root), moments = list_units(spec, ctx, stored), bool(opts.moments)
        if not units:
            raise InputError(f"--latents {spec} holds no latents (looked for {', '.join(sorted(LATENT_EXTENSIONS))}, "
                             ".tar shards and parquet files)")
        if channels:
            stored, reference = channels * (2 if moments else 1), "the model's"
        else:
            stored, reference = _first_channels(ids, units)
        if moments and stored is not None and stored % 2:
            raise InputError(f"--moments needs an even channel count (mean ‖ logvar); {reference} is {stored}")
        return cls(ids, root, units, moments=moments, key=opts.key, input_scale=opts.input_scale, channels=stored,
                   reference=reference, keys=keys, cache=cache)

    def load(self, index: int) -> torch.Tensor:
        x = self.units[index].read()
        check_dtype(x.dtype)
        if x.dim() not in (3, 4):
            raise ValueError(f"has shape {tuple(x.shape)}; a latent is (C, H, W) or (C, T, H, W)")
        if self.channels is not None and x.shape[0] != self.channels:
            raise ValueError(f"has {x.shape[0]} channels where {self.reference} has {self.channels}")
        # one fast reduction: a NaN or inf makes the sum non-finite; only then (or on overflow) check each value
        if not math.isfinite(x.sum()) and not torch.isfinite(x).all():
            raise ValueError("contains NaN or infinite values")
        return x

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch of stored latents (B, C, ...) -> (mean in float64, logvar | None), in the encoder's
        place. --input-scale F is undone: z / F, and logvar - 2 log F."""
        scale = self.input_scale
        if not self.moments:
            return _unscaled(x, scale), None
        mean, logvar = x.chunk(2, dim=1)
        logvar = logvar.to(self.logvar_dtype).clamp(*LOGVAR_CLAMP)
        if scale:
            logvar = logvar.double() - 2 * math.log(scale)
        return _unscaled(mean, scale), logvar

    def noise_key(self, index: int) -> int:
        return index if self.keys is None else self.keys[index]

    @property
    def uniform(self) -> bool:
        return len(self.shapes()) == 1 and all(u.shape is not None for u in self.units)

    def shapes(self) -> dict[str, int]:
        """How many latents of each stored shape the headers announce ("4x32x32": 1000)."""
        return dict(Counter("x".join(map(str, u.shape)) for u in self.units if u.shape is not None))

    def describe(self, result: dict[str, Any]) -> dict[str, Any]:
        """The stored shapes, and with --input-scale F what the cache's own factor becomes."""
        out: dict[str, Any] = {"latent_shapes": self.shapes()}
        if self.input_scale:
            f = result["scale_factor"]
            out["input_scale"] = {"stored_scale": self.input_scale, "multiply_stored_by": f / self.input_scale,
                                  "note": f"the cache holds z × {self.input_scale:g}; the raw latents' factor is "
                                          f"{f:.6g}, i.e. multiply the stored latents by {f / self.input_scale:.6g}"}
        return out

    def recipe(self) -> dict[str, Any]:
        out = {"source": self.kind, "moments": self.moments, "key": self.key, "input_scale": self.input_scale}
        return {**out, "cache": self.cache["meta"]} if self.cache else out

    def signature(self) -> str:
        return file_signature(sorted({u.loc.tar for u in self.units if isinstance(u, FileUnit)} |
                                     {f for u in self.units if isinstance(u, RowUnit) for f in u.column.files}))


def _unscaled(x: torch.Tensor, scale: float | None) -> torch.Tensor:
    """x / scale in float64; without --input-scale no division (a pass over the batch saved, same bits)."""
    return x.double() / scale if scale else x.double()


def _first_channels(ids: list[str], units: list[Unit]) -> tuple[int | None, str]:
    """The channel count of the first latent in id order, which the others must match."""
    for uid, unit in zip(ids, units, strict=True):
        if unit.shape is not None:
            return unit.shape[0], f"the first latent ({uid})"
    for uid, unit in zip(ids, units, strict=True):
        try:
            return unit.read().shape[0], f"the first latent ({uid})"
        except Exception:  # noqa: BLE001 - an unreadable row is reported when it is loaded
            continue
    return None, "the first latent"


SOURCE = LatentSource
