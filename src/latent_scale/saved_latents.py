"""--save-latents: the latents of a run, an output dataset of safetensors shards with a JSON index per rank.

Each unit is one tensor `u{noise_key}` (its own shape, float32, mean ‖ logvar along channels with
--moments), so units of any shape share a shard. The index maps every item to its shard, key,
source id and noise key, which is what lets `--latents DIR` reproduce the image run exactly.
Shards and index are written atomically; the index only at flush() (every checkpoint and the end),
so a resumed run drops exactly what was written after its checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .outputs import write_atomic, write_json
from .reading import read_object

if TYPE_CHECKING:
    import torch

FORMAT = "latent-scale latents"
VERSION = 1
INDEX = "index-r{rank}.json"
SHARD = "latents-r{rank}-{k:05d}.safetensors"
DTYPES = ("float16", "bfloat16", "float32", "float64")  # the encoder dtypes an index may record


class LatentWriter:
    """The writer of one rank; `fresh=False` continues a folder (use resume())."""

    def __init__(self, directory: str | Path, rank: int, world: int, moments: bool, items_per_shard: int = 256,
                 meta: dict[str, Any] | None = None, *, fresh: bool = True) -> None:
        self.dir = Path(directory)
        self.rank, self.world, self.moments = rank, world, moments
        self.items_per_shard, self.meta = items_per_shard, meta or {}
        self.items: list[dict[str, Any]] = []
        self.shards = 0
        self.dtype: str | None = None
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_items: list[dict[str, Any]] = []
        if fresh and self._own_files():
            raise InputError(f"--save-latents {self.dir} already holds latents of rank {rank} from another run; "
                             "choose an empty folder, or --resume the run that wrote them")

    def _own_files(self) -> list[Path]:
        return sorted(self.dir.glob(f"latents-r{self.rank}-*.safetensors")) + \
            sorted(self.dir.glob(INDEX.format(rank=self.rank)))

    def add(self, noise_key: int, source_id: str, mean: torch.Tensor, logvar: torch.Tensor | None) -> None:
        """One unit (C, ...) as the encoder gave it; logvar is kept exactly, so exp(0.5 * logvar) in the
        encoder's dtype reproduces its std bit for bit."""
        if self.moments and logvar is None:
            raise InputError("--save-latents with --moments needs a stochastic encoder (it gave no logvar)")
        import torch

        self.dtype = str(mean.dtype).removeprefix("torch.")
        unit = torch.cat([mean, logvar]) if self.moments else mean
        key = f"u{noise_key}"
        self.pending[key] = unit.detach().to("cpu", torch.float32).contiguous()
        self.pending_items.append({"key": key, "id": source_id, "noise_key": int(noise_key)})
        if len(self.pending) >= self.items_per_shard:
            self._write_shard()

    def _write_shard(self) -> None:
        from safetensors.torch import save

        name = SHARD.format(rank=self.rank, k=self.shards)
        data = save(self.pending, metadata={"format": FORMAT})
        write_atomic(self.dir / name, data)
        self.items.extend({"shard": name, **item} for item in self.pending_items)
        self.shards += 1
        self.pending, self.pending_items = {}, []

    def flush(self) -> None:
        """Write the pending shard, then the index: call before every checkpoint save and at the end."""
        if self.pending:
            self._write_shard()
        write_json(self.dir / INDEX.format(rank=self.rank),
                   {"format": FORMAT, "version": VERSION, "rank": self.rank, "world": self.world,
                    "moments": self.moments, "dtype": self.dtype, "meta": self.meta, "items": self.items})

    def state(self) -> dict[str, int]:
        """What the checkpoint keeps (after flush()): how many shards and items are part of the run."""
        return {"shards": self.shards, "items": len(self.items)}

    @classmethod
    def resume(cls, directory: str | Path, state: dict[str, Any], rank: int, world: int, moments: bool,
               items_per_shard: int = 256, meta: dict[str, Any] | None = None) -> LatentWriter:
        """Continue from a checkpoint's state(): shards and items written after it are dropped."""
        writer = cls(directory, rank, world, moments, items_per_shard, meta, fresh=False)
        index_path = writer.dir / INDEX.format(rank=rank)
        index = read_object(index_path, "saved-latents index") if index_path.exists() else {"items": []}
        shards, items = int(state["shards"]), int(state["items"])
        if len(index["items"]) < items or index.get("moments", moments) != moments:
            raise InputError(f"--save-latents {writer.dir} does not hold the latents this checkpoint saved "
                             f"({len(index['items'])} of {items} items); resume with the folder it was written to")
        writer.items, writer.shards, writer.dtype = index["items"][:items], shards, _dtype(index, index_path)
        for path in writer._own_files():
            number = re.fullmatch(rf"latents-r{rank}-(\d+)", path.stem)  # a shard this writer named, not a stray file
            if path.suffix == ".safetensors" and number and int(number[1]) >= shards:
                path.unlink()
        writer.flush()
        return writer


def is_saved(path: str | Path) -> bool:
    """Whether a folder holds latents written by --save-latents."""
    return Path(path).is_dir() and any(Path(path).glob("index-r*.json"))


def _items(index: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """An index's items as this module writes them: {shard: a file name in the folder, key, id,
    noise_key >= 0}. Anything else (a shard path leading elsewhere, a key of the wrong type) is damage."""
    items = index.get("items")
    if not isinstance(items, list):
        raise InputError(f"{path}: 'items' is not a list; the index is damaged")
    for k, it in enumerate(items):
        shard = it.get("shard") if isinstance(it, dict) else None
        if not (isinstance(shard, str) and shard == Path(shard).name and not shard.startswith(".")
                and isinstance(it.get("key"), str) and isinstance(it.get("id"), str)
                and type(it.get("noise_key")) is int and it["noise_key"] >= 0):
            raise InputError(f"{path}: item {k} is not {{shard: a file in this folder, key, id, noise_key >= 0}}; "
                             "the index is damaged")
    return items


def _dtype(index: dict[str, Any], path: Path) -> str | None:
    """The encoder's dtype an index records (its logvar is kept in it), one of DTYPES, or None before any unit."""
    dtype = index.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"{path}: 'dtype' is {json.dumps(dtype)[:40]}, not one of {', '.join(DTYPES)}; "
                         "the index is damaged")
    return dtype


def read_saved(directory: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every rank's items, ordered by noise key (the image run's unit order), and the shared settings
    (moments, dtype, meta). Refuses indexes of different runs mixed in one folder."""
    paths = sorted(Path(directory).glob("index-r*.json"))
    indexes = [read_object(p, "saved-latents index") for p in paths]
    if any(ix.get("format") != FORMAT or ix.get("version") != VERSION for ix in indexes):
        raise InputError(f"{directory} holds an index-r*.json that is not a latent-scale {VERSION} saved-latents index")
    shared = [{json.dumps(ix.get(k)) for ix in indexes} for k in ("moments", "world")]
    dtypes = {_dtype(ix, p) for p, ix in zip(paths, indexes, strict=True)} - {None}
    if any(len(values) > 1 for values in shared) or len(dtypes) > 1:
        raise InputError(f"{directory} mixes latents of different runs (moments, dtype or world size differ)")
    items = sorted((it for p, ix in zip(paths, indexes, strict=True) for it in _items(ix, p)),
                   key=lambda it: it["noise_key"])
    if len({it["noise_key"] for it in items}) != len(items):
        raise InputError(f"{directory} holds the same unit twice (two runs wrote into it); use one folder per run")
    if len({(it["shard"], it["key"]) for it in items}) != len(items):
        raise InputError(f"{directory} has an index naming one stored latent for two units; the index is damaged")
    settings = {"moments": indexes[0].get("moments"), "dtype": next(iter(dtypes), None),
                "meta": indexes[0].get("meta", {})}
    meta = settings["meta"]
    if type(settings["moments"]) is not bool or not isinstance(meta, dict) or \
            not all(isinstance(meta.get(k, {}), dict) for k in ("model", "recipe")):
        raise InputError(f"{paths[0]}: 'moments' is not true or false, or 'meta' (its model and recipe) is not "
                         "an object; the index is damaged")
    return items, settings
