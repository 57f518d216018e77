"""Stored latents: .npy, .npz, .safetensors and .pt/.pth files (a folder, glob, .txt list or tar
shards), parquet latent columns, and the folders --save-latents writes.

Listing reads headers only (latent_scale.formats), so a million latents are enumerated without
reading one. Every latent is one unit: a file holds one latent (C, H, W) / (C, T, H, W) or a batch
of them with a leading dimension. torch and the readers are imported when a source is opened.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, one_line
from ..fields import option
from ..formats import SUFFIXES, formats
from ..formats.window import Span, stamp_of
from ..options import check_positive
from ..saved_latents import is_saved, read_saved
from .base import Source, SourceContext, file_signature
from .files import check_regular, expand, glob_root, is_glob, matching, read_list, scan_folder

if TYPE_CHECKING:
    import torch

    from ..formats.base import Header

LATENT_EXTENSIONS = SUFFIXES
LOGVAR_CLAMP = (-30.0, 20.0)  # as LDM's and diffusers' DiagonalGaussianDistribution clamp it
MAX_UNITS = 100_000_000  # latents one listing may hold (each costs ~200 bytes to list); one file: a tenth


def batch_length(shape: tuple[int, ...], channels: int | None) -> int | None:
    """None for one latent, else how many a batch holds. A 2-D tensor is one audio latent (C, L), a 3-D
    one an image latent (C, H, W) and a 4-D one a batch of them, unless the expected channel count says
    otherwise: a 3-D tensor whose second axis has it and whose first does not is a batch of audio
    latents (B, C, L); a 4-D tensor whose first axis has it and whose second does not is one video
    latent (C, T, H, W)."""
    audio_batch = channels is not None and shape[1:2] == (channels,) and shape[0] != channels
    if len(shape) == 2 or (len(shape) == 3 and not audio_batch):
        return None
    if len(shape) == 4 and channels is not None and shape[0] == channels and shape[1] != channels:
        return None
    if len(shape) in (3, 4, 5):
        if shape[0] > MAX_UNITS // 10:
            raise ValueError(f"claims a batch of {shape[0]:,} latents, more than the {MAX_UNITS // 10:,} one file "
                             "may hold (a forged or sparse header?)")
        return shape[0]
    raise ValueError(f"has shape {tuple(shape)}; a latent is (C, L), (C, H, W) or (C, T, H, W), optionally in a "
                     "batch")


@dataclass(frozen=True, slots=True)
class FileUnit:
    """One latent of a file: the whole tensor (row None) or one row of a batch; `error` if unusable."""

    span: Span
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
        return formats()[self.suffix].read(self.span, self.header, self.row)


@dataclass(frozen=True)
class RowUnit:
    """One latent in a parquet column: .npy bytes or nested lists of floats."""

    column: Any  # tables.Column
    row: int
    shape = None  # known only once read

    def read(self) -> torch.Tensor:
        import io

        import numpy as np
        import torch

        from ..formats.base import check_dtype, read_at
        from ..formats.numpy_files import npy_header

        value = self.column.cell(self.row)
        if isinstance(value, (bytes, bytearray)):
            f = io.BytesIO(value)
            h = npy_header(f, len(value))
            check_dtype(h.dtype)
            return read_at(f, h, None)
        return torch.from_numpy(np.asarray(value))


Unit = FileUnit | RowUnit


def file_header(uid: str, span: Span, key: str | None, channels: int | None) -> tuple[Header, int | None]:
    """The chosen tensor of one file and its batch length (None: one latent); raises for an unusable file."""
    from ..formats.base import check_dtype, pick

    h = pick(formats()[Path(uid.rsplit("::", 1)[-1]).suffix.lower()].headers(span), key, uid)
    check_dtype(h.dtype)
    return h, batch_length(h.shape, channels)


def file_units(uid: str, span: Span, found: tuple[Header, int | None] | str) -> list[tuple[str, Unit]]:
    """The latents of one file: one unit, a batch, or one unusable entry (`found`: why)."""
    suffix = Path(uid.rsplit("::", 1)[-1]).suffix.lower()
    if isinstance(found, str):
        return [(uid, FileUnit(span, suffix, None, error=found))]
    h, count = found
    if count is None:
        return [(uid, FileUnit(span, suffix, h))]
    return [(f"{uid}#{r}", FileUnit(span, suffix, h, r)) for r in range(count)]


def _headers(paths: list[str], members: dict[str, Span], key: str | None, channels: int | None
             ) -> list[tuple[str, Span, tuple[Header, int | None] | str]]:
    """Each file's span and header (or why it is unusable: missing, not a regular file, a bad header)."""
    out = []
    for path in paths:
        span = _location(path, members)
        try:
            found = span.error or file_header(path, span, key, channels)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - any header failure makes the file one bad unit
            found = one_line(e)
        out.append((path, span, found))
    return out


def _location(path: str, members: dict[str, Span]) -> Span:
    if path in members:
        return members[path]
    try:
        st = check_regular(path)
    except OSError as e:
        return Span(path, 0, 0, error=f"cannot read it ({one_line(e)})")
    return Span(path, 0, st.st_size, stamp_of(st))


def _matches(spec: str) -> tuple[list[str], str]:
    """--latents -> (files, tar shards and parquet files it names, the root ids are relative to)."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return scan_folder(p, LATENT_EXTENSIONS | {".tar", ".parquet"}), str(p)
    if p.is_file():
        return (read_list(p) if p.suffix.lower() == ".txt" else [str(p)]), str(p.parent)
    if p.exists():
        raise InputError(f"--latents {spec} is not a regular file or a folder (a FIFO, device or socket)")
    found = matching(p) if is_glob(spec) else []
    if not found:
        raise InputError(f"--latents {spec} does not exist; pass a folder, a glob, a .txt list or .tar shards of "
                         ".npy/.npz/.safetensors/.pt files, or parquet files")
    return found, str(glob_root(p))


def list_units(spec: str, ctx: SourceContext, channels: int | None) -> tuple[list[str], list[Unit], str]:
    """Resolve --latents to (ids relative to the root, units, root), reading headers only."""
    from .tables import Column

    matches, root = _matches(spec)
    parquet = sorted(m for m in matches if m.lower().endswith(".parquet"))
    paths, members = expand([m for m in matches if m not in parquet], LATENT_EXTENSIONS)
    files = _headers(paths, members, ctx.own.key, channels)
    listed = sum(1 if isinstance(found, str) or found[1] is None else found[1] for _, _, found in files)
    if listed > MAX_UNITS:
        raise InputError(f"--latents {spec} lists {listed:,} latents, more than the {MAX_UNITS:,} one run takes; "
                         "split them into several runs and combine the results with merge")
    found = [(os.path.relpath(uid, root), unit) for path, span, header in files
             for uid, unit in file_units(path, span, header)]
    if parquet:
        column = Column(parquet, root)
        column.column = latent_column(column, ctx.column)
        found += [(cid, RowUnit(column, r)) for r, cid in enumerate(column.ids())]
    return [uid for uid, _ in found], [unit for _, unit in found], root


def latent_column(column: Any, asked: str | None) -> str:
    """--column, else the only binary or list column of the parquet files."""
    from .tables import pyarrow

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


def saved_units(spec: str, key: str | None) -> tuple[list[str], list[Unit], list[int], dict[str, Any]]:
    """A --save-latents folder: its items in the image run's order, with their ids and noise keys."""
    if key is not None:
        raise InputError(f"--latents {spec} holds latents saved by --save-latents, which have no --key to choose")
    items, settings = read_saved(spec)
    units: list[Unit] = []
    shards: dict[str, tuple[Span, dict[str, Header]]] = {}
    for item in items:
        if item["shard"] not in shards:
            span = _location(os.path.join(spec, item["shard"]), {})
            try:
                shards[item["shard"]] = span, formats()[".safetensors"].headers(span)
            except Exception as e:  # noqa: BLE001 - a damaged shard makes its items bad units
                shards[item["shard"]] = replace(span, error=f"{item['shard']}: {one_line(e)}"), {}
        span, headers = shards[item["shard"]]
        h = headers.get(item["key"])
        units.append(FileUnit(span, ".safetensors", h, error=None if h else span.error or f"no {item['key']} in shard"))
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
        if self.input_scale is not None and not math.isfinite(self.input_scale):
            raise InputError(f"--input-scale must be a finite number, got {self.input_scale}")


class LatentSource(Source):
    """Latents read from files in place of an encoder; `posterior` turns a batch into (mean, logvar | None)."""

    kind = "latents"
    input = "latents"
    unit, units = "latent", "latents"
    panel = "Stored latents"
    options = LatentOptions

    def __init__(self, ids: list[str], root: str, units: list[Unit], *, moments: bool, key: str | None,
                 input_scale: float | None, channels: int | None, reference: str,
                 keys: list[int] | None = None, saved: dict[str, Any] | None = None) -> None:
        import torch

        super().__init__(ids, root)
        self.stored, self.moments, self.key, self.input_scale = units, moments, key, input_scale
        self.channels, self.reference = channels, reference
        self.keys, self.saved = keys, saved
        # saved latents keep logvar as the encoder gave it, so exp(0.5 * logvar) in its dtype is the run's std
        self.logvar_dtype = getattr(torch, saved["dtype"]) if saved and saved.get("dtype") else torch.float64

    @classmethod
    def accepts(cls, spec: str, ctx: SourceContext) -> bool:
        return False  # chosen by --latents, never by --data

    @classmethod
    def open(cls, spec: str, ctx: SourceContext) -> LatentSource:
        """`ctx.channels`: the model's latent channel count when --model is given (it also settles
        whether a 4-D tensor is one video latent or a batch of image latents)."""
        opts, channels = ctx.own, ctx.channels
        stored = channels * (2 if opts.moments else 1) if channels else None
        keys = saved = None
        if is_saved(spec):
            ids, units, keys, saved = saved_units(spec, opts.key)
            if opts.moments and not saved["moments"]:
                raise InputError(f"--latents {spec} was saved without --moments; drop --moments")
            root, moments = str(spec), bool(saved["moments"])
        else:
            (ids, units, root), moments = list_units(spec, ctx, stored), bool(opts.moments)
        if not units:
            raise InputError(f"--latents {spec} holds no latents (looked for {', '.join(sorted(LATENT_EXTENSIONS))}, "
                             ".tar shards and parquet files)")
        if channels:
            stored, reference = channels * (2 if moments else 1), "the model's count"
        else:
            stored, reference = _usual_channels(ids, units)
        if moments and stored is not None and stored % 2:
            raise InputError(f"--moments needs an even channel count (mean ‖ logvar); {reference} is {stored}")
        return cls(ids, root, units, moments=moments, key=opts.key, input_scale=opts.input_scale, channels=stored,
                   reference=reference, keys=keys, saved=saved)

    def load(self, index: int) -> torch.Tensor:
        import torch

        from ..formats.base import check_dtype

        x = self.stored[index].read()
        check_dtype(x.dtype)
        if x.dim() not in (2, 3, 4) or not x.numel():  # (C, L): an audio clip's, as --save-latents keeps it
            raise ValueError(f"has shape {tuple(x.shape)}; a latent is (C, L), (C, H, W) or (C, T, H, W), "
                             "none of them 0")
        if self.channels is not None and x.shape[0] != self.channels:
            raise ValueError(f"has {x.shape[0]} channels where {self.reference} is {self.channels}")
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

    def defaults(self) -> dict[str, Any]:
        """A --save-latents folder measures its run's own posterior and seed unless asked otherwise."""
        from ..options import MAX_SEED, POSTERIORS

        recipe = self.saved["meta"].get("recipe", {}) if self.saved else {}
        posterior, seed = recipe.get("posterior"), recipe.get("seed")
        if self.saved and (posterior not in POSTERIORS or type(seed) is not int or not 0 <= seed <= MAX_SEED):
            raise InputError(f"--latents {self.root}: its index does not record the run's posterior and seed; "
                             "the index is damaged")
        return {"posterior": posterior, "seed": seed} if self.saved else {}

    @property
    def uniform(self) -> bool:
        return len(self.shapes()) == 1

    def shapes(self, skipped: Collection[str] = ()) -> dict[str, int]:
        """How many latents of each stored shape the headers announce ("4x32x32": 1000), leaving out
        the ids in `skipped` (read and refused: empty, another channel count, NaN)."""
        return dict(Counter("x".join(map(str, u.shape)) for uid, u in zip(self.ids, self.stored, strict=True)
                            if u.shape is not None and uid not in skipped))

    def describe(self, result: dict[str, Any]) -> dict[str, Any]:
        """The stored shapes, and with --input-scale F what the stored latents' own factor becomes."""
        out: dict[str, Any] = {"latent_shapes": self.shapes({s["path"] for s in result.get("skipped") or ()})}
        if self.input_scale:
            f = result["scale_factor"]
            out["input_scale"] = {"stored_scale": self.input_scale, "multiply_stored_by": f / self.input_scale,
                                  "note": f"the files hold z × {self.input_scale:g}; the raw latents' factor is "
                                          f"{f:.6g}, i.e. multiply the stored latents by {f / self.input_scale:.6g}"}
        return out

    def recipe(self) -> dict[str, Any]:
        out = {"source": self.kind, "moments": self.moments, "key": self.key, "input_scale": self.input_scale}
        return {**out, "cache": self.saved["meta"]} if self.saved else out

    def signature(self) -> str:
        return file_signature(sorted({u.span.path for u in self.stored if isinstance(u, FileUnit)} |
                                     {f for u in self.stored if isinstance(u, RowUnit) for f in u.column.files}))


def _unscaled(x: torch.Tensor, scale: float | None) -> torch.Tensor:
    """x / scale in float64; without --input-scale no division (a pass over the batch saved, same bits)."""
    return x.double() / scale if scale else x.double()


def _usual_channels(ids: list[str], units: list[Unit]) -> tuple[int | None, str]:
    """The channel count most listed latents have (the first in id order on a tie), which the others must
    match: a stray file of another kind is the one skipped, whichever sorts first. Rows whose shape the
    listing cannot know (parquet): the first readable one's."""
    counts = Counter(u.shape[0] for u in units if u.shape is not None)
    if counts:
        channels, n = counts.most_common(1)[0]
        return channels, f"the usual count ({n:,} of {len(units):,} latents)"
    for uid, unit in zip(ids, units, strict=True):
        try:
            return unit.read().shape[0], f"the first latent ({uid})"
        except Exception:  # noqa: BLE001 - an unreadable row is reported when it is loaded
            continue
    return None, "the first latent"


SOURCE = LatentSource
