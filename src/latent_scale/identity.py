"""Identity of a run by content, not spelling: what must match for a checkpoint to continue or
for results to merge.

A model is its class, its config and its weight files (or the hub commit they came from), so
other weights at the same path are told apart while `./vae` and `/abs/vae/` are one model. Data
is its unit list relative to its root plus the source's cheap content signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .errors import InputError
from .outputs import write_json
from .reading import read_json

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
HASHES_FILE = "weights-hashes.json"
# Fields that only say how a model or data set was spelled or found; ignored where both sides carry
# the content identity that replaces them.
SPELLINGS = {"model": ("source", "source_kind", "subfolder", "revision"), "recipe": ("data",)}
IDENTITY = {"model": "identity", "recipe": "data_identity"}


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The first field (dotted path) where two nested dicts differ, described for the user."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if diff:
                return diff
        return None
    return None if a == b else f"{where} differs ({_short(a)} vs {_short(b)})"


def _short(value: Any) -> str:
    """A value for a sentence: a sha256 is told apart by its first 12 hex digits."""
    text = repr(value)
    return text[:13] + "…'" if isinstance(value, str) and len(value) == 64 else text


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_sha256(config: dict[str, Any]) -> str:
    """The config's values; diffusers' bookkeeping (`_name_or_path` holds the spelling, and
    `_diffusers_version` changes with a re-save) is left out."""
    kept = {k: v for k, v in config.items() if not str(k).startswith("_")}
    return _sha256(json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str))


def model_identity(info: dict[str, Any], config: dict[str, Any], cache_dir: str | Path) -> dict[str, Any]:
    """Class, config hash, and the weights' hash (local files) or the resolved commit (hub ids).

    `info` is ModelInfo.to_dict() (source, source_kind, subfolder, revision, class), `config` the
    loaded vae.config; weight hashes are cached in `cache_dir` by (real path, size, mtime).
    """
    out = {"class": info["class"], "config_sha256": config_sha256(config)}
    if info["source_kind"] == "hub":
        return {**out, "commit": hub_commit(info["source"], info.get("subfolder"), info.get("revision"))}
    cache = HashCache(Path(cache_dir) / HASHES_FILE)
    lines = [f"{name}:{cache.sha256(path)}" for name, path in weight_files(info)]
    cache.save()
    return {**out, "weights_sha256": _sha256("\n".join(lines))}


def weight_files(info: dict[str, Any]) -> list[tuple[str, Path]]:
    """(name, path) of the weights a load reads: the single file (its name does not matter), or
    every weight file in the model's folder (a variant or sharded checkpoint is among them)."""
    source = Path(info["source"]).expanduser()
    if info["source_kind"] == "file":
        return [("", source)]
    folder = source / info["subfolder"] if info.get("subfolder") else source
    return sorted((p.name, p) for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and p.is_file())


def hub_commit(repo: str, subfolder: str | None, revision: str | None) -> str | None:
    """The commit a hub id resolved to, read from the Hugging Face cache's snapshot path."""
    from huggingface_hub import try_to_load_from_cache

    name = f"{subfolder}/config.json" if subfolder else "config.json"
    found = try_to_load_from_cache(repo, name, revision=revision)
    parts = Path(found).parts if isinstance(found, str) else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else revision


class HashCache:
    """sha256 of files keyed by (real path, size, mtime_ns), so a second run pays nothing."""

    def __init__(self, path: Path) -> None:
        self.path, self.changed = path, False
        try:
            saved = read_json(path) if path.is_file() else {}
        except InputError:  # a damaged cache is rebuilt, never trusted
            saved = {}
        self.entries: dict[str, str] = saved if isinstance(saved, dict) else {}

    def sha256(self, path: Path) -> str:
        """The cached hash, else the one prefetch_weight_hashes is computing, else computed now."""
        real, key = _cache_key(path)
        if not isinstance(self.entries.get(key), str):
            self.entries = {k: v for k, v in self.entries.items() if not k.startswith(f"{real}|")}
            pending = _PENDING.pop(key, None)
            self.entries[key] = pending.result() if pending else file_sha256(real)
            self.changed = True
        return self.entries[key]

    def cached(self, path: Path) -> bool:
        return isinstance(self.entries.get(_cache_key(path)[1]), str)

    def save(self) -> None:
        if self.changed:
            write_json(self.path, self.entries)
            self.changed = False


def _cache_key(path: Path) -> tuple[str, str]:
    """(real path, cache key): the file's real path, size and mtime, so a changed file is hashed again."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, f"{real}|{st.st_size}|{st.st_mtime_ns}"


_PENDING: dict[str, Future[str]] = {}  # cache key -> the hash a background thread is computing


def prefetch_weight_hashes(model: str, subfolder: str | None, cache_dir: str | Path) -> None:
    """Start hashing a local model's weight files not yet in the cache, in a background thread, so the
    hashes are ready (or nearly) when model_identity asks after the load: the first run on a machine
    hashes while the model loads. A daemon thread: an early error never waits for it."""
    cache = HashCache(Path(cache_dir) / HASHES_FILE)
    for path in _local_weights(Path(model).expanduser(), subfolder):
        try:
            real, key = _cache_key(path)
        except OSError:
            continue  # the load says what is wrong with it
        if key not in _PENDING and not cache.cached(path):
            _PENDING[key] = _in_background(file_sha256, real)


def _local_weights(path: Path, subfolder: str | None) -> list[Path]:
    """The weight files a load of `path` will most likely read (a wrong guess only costs a hash)."""
    if path.is_file():
        return [path] if path.name.endswith(WEIGHT_SUFFIXES) else []
    folder = path / subfolder if subfolder else path
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and p.is_file())
    return files or ([] if subfolder else _local_weights(path / "vae", None))


def _in_background(fn: Callable[..., str], *args: Any) -> Future[str]:
    future: Future[str] = Future()

    def work() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # handed to whoever asks for the result
            future.set_exception(e)

    threading.Thread(target=work, name="latent-scale-hash", daemon=True).start()
    return future


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _relative(unit: str, root: str) -> str:
    """A unit id relative to its data root, however the root was spelled (ids already relative to an
    absolute root, like a dataset's `file.parquet#row`, stay as they are)."""
    if root and (os.path.isabs(unit) or not os.path.isabs(root)):
        return os.path.relpath(os.path.abspath(unit), os.path.abspath(root))
    return unit


def data_identity(ids: list[str], root: str, signature: str) -> dict[str, Any]:
    """Count, hash of the unit ids relative to `root` (one folder spelled two ways is one data set),
    and the source's cheap content signature."""
    return {"count": len(ids), "ids_sha256": _sha256("\n".join(_relative(i, root) for i in ids)),
            "signature": signature}


def pack_ids(ids: list[str]) -> str:
    """The id list, compressed (sorted paths shrink ~10x), for a checkpoint to name what changed."""
    return base64.b64encode(zlib.compress("\n".join(ids).encode(), 6)).decode("ascii")


def unpack_ids(packed: str) -> list[str] | None:
    """pack_ids' list, or None when `packed` is not one (a damaged or older checkpoint)."""
    try:
        text = zlib.decompress(base64.b64decode(packed, validate=True)).decode()
    except (ValueError, TypeError, zlib.error):
        return None
    return text.split("\n") if text else []


def describe_id_difference(old_ids: list[str], new_ids: list[str], unit: str = "image") -> str:
    """'N images differ from the checkpoint's list; the first is X (new|gone)' — never two hashes."""
    old, new = set(old_ids), set(new_ids)
    differ = sorted(old ^ new)
    if not differ:
        return f"the same {len(new)} {unit}s as the checkpoint's list, in another order"
    first = differ[0]
    status = "not in the checkpoint's list" if first in new else "no longer in the data"
    return f"{len(differ)} {unit}s differ from the checkpoint's list; the first is {first} ({status})"


def _by_content(section: str, a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model or recipe without its spelling fields when both sides carry the content identity
    (and without the data signature, which merge only warns about: copies on other machines differ)."""
    key = IDENTITY[section]
    if not (isinstance(a.get(key), dict) and isinstance(b.get(key), dict)):
        return a, b

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        kept = {k: v for k, v in d.items() if k not in SPELLINGS[section]}
        if section == "recipe":
            kept[key] = {k: v for k, v in d[key].items() if k != "signature"}
        return kept

    return strip(a), strip(b)


def result_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first field where two results' model or recipe differ, compared by content where both
    results carry identities (else as spelled, as results written before identities were)."""
    for section in ("model", "recipe"):
        diff = first_difference(*_by_content(section, a[section], b[section]), section)
        if diff:
            return diff
    return None
