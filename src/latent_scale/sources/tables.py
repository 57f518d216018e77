"""Hugging Face datasets and parquet: a saved dataset folder, parquet files, or hf://ORG/NAME[:SPLIT].

Rows are units. Only footers (parquet) or memory maps (arrow) are read when listing; a row is read
with its row group on demand, so memory does not grow with the dataset. pyarrow is the only
dependency (the `datasets` package is not needed to read what it saved).
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, one_line
from .base import SourceContext
from .files import check_regular, glob_root, matching
from .images import ImageSource, open_rgb

EXTRA = "pip install 'latent-scale[datasets]'"
HF = "hf://"


def pyarrow() -> Any:
    """pyarrow, imported on first use (it is an optional extra)."""
    try:
        import pyarrow as pa
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError(f"reading parquet and saved datasets needs pyarrow: {EXTRA}") from None
    return pa


@dataclass(frozen=True)
class Group:
    """One parquet row group (or one arrow file): where its rows lie in the file and in the column."""

    file: int
    index: int
    start: int  # its first row's global index
    rows: int
    offset: int  # its first row's index within its file


class Column:
    """One column over parquet or arrow files, addressed by a global row index.

    A worker keeps the last row group it decoded, so rows read in order cost one decode per group.
    """

    def __init__(self, files: list[str], root: str, fs: Any = None) -> None:
        self.files, self.root, self.fs = files, root, fs
        self.column: str | None = None
        self.groups: list[Group] = []
        total = 0
        for f, path in enumerate(files):
            offset = 0
            for g, rows in enumerate(self._group_sizes(path)):
                self.groups.append(Group(f, g, total, rows, offset))
                total, offset = total + rows, offset + rows
        self.num_rows = total
        self.starts = [g.start for g in self.groups]
        self._last: tuple[tuple[int, str | None], Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_last": None}  # workers decode their own groups

    def _group_sizes(self, path: str) -> list[int]:
        if path.endswith(".arrow"):
            return [_arrow_table(path).num_rows]
        meta = self._parquet(path).metadata
        return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]

    def _parquet(self, path: str) -> Any:
        pa = pyarrow()
        try:
            if not self.fs:
                check_regular(path)
            return pa.parquet.ParquetFile(self.fs.open(path) if self.fs else path)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"cannot read {path} as parquet ({one_line(e)})") from None

    def ids(self) -> list[str]:
        """`file#row`, the file relative to the root (hub files keep their repository path)."""
        names = [p if self.fs else os.path.relpath(p, self.root) for p in self.files]
        return [f"{names[g.file]}#{g.offset + r}" for g in self.groups for r in range(g.rows)]

    def schema(self) -> Any:
        path = self.files[0]
        return _arrow_table(path).schema if path.endswith(".arrow") else self._parquet(path).schema_arrow

    def group(self, k: int) -> Any:
        """Row group k of the chosen column, as an arrow array."""
        if self._last is None or self._last[0] != (k, self.column):
            g = self.groups[k]
            path = self.files[g.file]
            if path.endswith(".arrow"):
                array = _arrow_table(path).column(self.column)
            else:
                array = self._parquet(path).read_row_group(g.index, columns=[self.column]).column(0)
            self._last = ((k, self.column), array)
        return self._last[1]

    def cell(self, index: int) -> Any:
        """Row `index` of the chosen column as a Python value (bytes, dict, nested lists)."""
        k = bisect.bisect_right(self.starts, index) - 1
        return self.group(k)[index - self.groups[k].start].as_py()

    def signature(self) -> str:
        parts = [f"{p}:{g.rows}" for g in self.groups for p in [self.files[g.file]]]
        if not self.fs:
            parts += [f"{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}" for p in self.files]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _arrow_table(path: str) -> Any:
    """A saved dataset's arrow stream, memory-mapped: nothing is copied until read."""
    pa = pyarrow()
    try:
        return pa.ipc.open_stream(pa.memory_map(path)).read_all()
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"cannot read {path} as an arrow file of a saved dataset ({e})") from None


def _saved_dataset(folder: Path) -> list[str]:
    """The arrow files of a `save_to_disk` folder (one split; a DatasetDict must name its split)."""
    from ..reading import read_object

    if (folder / "dataset_dict.json").is_file():
        splits = read_object(folder / "dataset_dict.json", "saved DatasetDict description").get("splits")
        if not (isinstance(splits, list) and splits and all(isinstance(s, str) for s in splits)):
            raise InputError(f"{folder / 'dataset_dict.json'} names no splits; pass the folder of one split")
        raise InputError(f"{folder} holds the splits {', '.join(splits)}; pass one, e.g. --data {folder / splits[0]}")
    files = read_object(folder / "state.json", "saved dataset state").get("_data_files", [])
    names = [f.get("filename") if isinstance(f, dict) else None for f in files] if isinstance(files, list) else [None]
    if not all(isinstance(n, str) and n == Path(n).name and not n.startswith(".") for n in names):
        raise InputError(f"{folder / 'state.json'}: '_data_files' is not a list of {{filename: a file in this "
                         "folder}; the saved dataset is damaged")
    return [str(folder / n) for n in names]


def _hub_files(spec: str) -> tuple[list[str], Any]:
    """The parquet files of a hub dataset's split, from the refs/convert/parquet branch, read lazily."""
    name, _, split = spec.removeprefix(HF).partition(":")
    split = split or "train"
    try:
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        files = sorted(fs.glob(f"datasets/{name}@refs%2Fconvert%2Fparquet/*/{split}/*.parquet"))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth: all one message
        raise InputError(f"cannot list {spec} on the Hugging Face hub ({one_line(e, 160, named=True)}); "
                         "download its parquet "
                         "files and pass them with --data") from None
    if not files:
        raise InputError(f"{spec} has no parquet files for split {split!r} on the hub")
    return files, fs


def resolve(spec: str) -> tuple[list[str], str, Any]:
    """--data -> (parquet/arrow files in order, root, filesystem or None)."""
    if spec.startswith(HF):
        files, fs = _hub_files(spec)
        return files, spec, fs
    p = Path(spec).expanduser()
    if p.is_dir():
        saved = (p / "state.json").is_file() or (p / "dataset_dict.json").is_file()
        return (_saved_dataset(p) if saved else sorted(str(f) for f in p.rglob("*.parquet"))), str(p), None
    if p.is_file():
        return [str(p)], str(p.parent), None
    files = sorted(matching(p))
    if not files:
        raise InputError(f"--data {spec} matches no parquet files")
    return files, str(glob_root(p)), None


def is_dataset(spec: str) -> bool:
    """Whether --data names parquet files, a saved dataset or a hub dataset."""
    if spec.startswith(HF) or spec.lower().endswith(".parquet"):
        return True
    p = Path(spec).expanduser()
    markers = ("state.json", "dataset_dict.json")
    return p.is_dir() and (any((p / m).is_file() for m in markers) or any(p.glob("*.parquet"))
                           or any(p.glob("*/*.parquet")))


def hf_features(schema: Any) -> dict[str, Any]:
    """The `datasets` feature types recorded in the schema metadata (empty for plain parquet)."""
    meta = (schema.metadata or {}).get(b"huggingface")
    try:
        return json.loads(meta)["info"]["features"] if meta else {}
    except (ValueError, KeyError, TypeError):
        return {}


def image_bytes(value: Any) -> bytes:
    """A cell of an image column: an HF Image struct {bytes, path} or raw bytes. A path is read only
    when it is a regular file: a FIFO would block forever, /dev/zero would never end."""
    if isinstance(value, dict):
        if value.get("bytes") is None and value.get("path"):
            from ..reading import read_bytes

            return read_bytes(str(value["path"]))
        value = value.get("bytes")
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"row holds {type(value).__name__}, not image bytes")
    return bytes(value)


def _decodes(value: Any) -> bool:
    try:
        open_rgb(io.BytesIO(image_bytes(value)))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not an image column"
        return False


def find_image_column(column: Column, asked: str | None) -> str:
    """--column, else the HF Image feature, else the first binary column whose first row is an image."""
    pa = pyarrow()
    schema = column.schema()
    names = [f"{f.name} ({f.type})" for f in schema]
    if asked:
        if asked not in schema.names:
            raise InputError(f"--column {asked} is not a column of {column.files[0]}; it has {', '.join(names)}")
        return asked
    features = hf_features(schema)
    typed = [n for n in schema.names if isinstance(features.get(n), dict) and features[n].get("_type") == "Image"]
    binary = [f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
              or (pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0)]
    for name in typed + binary:
        column.column = name
        if name in typed or (column.num_rows and _decodes(column.cell(0))):
            return name
    raise InputError(f"found no image column in {column.files[0]} (columns: {', '.join(names)}); "
                     "pick one with --column")


class DatasetSource(ImageSource):
    """Rows of a dataset's image column, preprocessed exactly like image files."""

    kind = "dataset"
    input = "pixels"
    unit, units = "image", "images"

    def __init__(self, column: Column, sizes: tuple[int, ...], crop: bool = True) -> None:
        super().__init__(column.ids(), column.root, {}, sizes, crop)
        self.table = column

    @classmethod
    def accepts(cls, spec: str, ctx: SourceContext) -> bool:
        return is_dataset(spec)

    @classmethod
    def open(cls, spec: str, ctx: SourceContext) -> DatasetSource:
        files, root, fs = resolve(spec)
        if not files:
            raise InputError(f"--data {spec} holds no parquet or arrow files")
        column = Column(files, root, fs)
        column.column = find_image_column(column, ctx.column)
        if not column.num_rows:
            raise InputError(f"--data {spec} has no rows")
        return cls(column, ctx.sizes, ctx.crop)

    def image(self, index: int) -> Any:
        return open_rgb(io.BytesIO(image_bytes(self.table.cell(index))))

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), "column": self.table.column}

    def signature(self) -> str:
        return self.table.signature()


SOURCE = DatasetSource
