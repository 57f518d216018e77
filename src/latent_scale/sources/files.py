"""Resolving what the user named to files: folders, .txt lists, globs and tar shards, in sorted order,
with one rule for the folder that ids are relative to."""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Collection, Sequence
from pathlib import Path

from ..errors import InputError
from ..formats.window import Span
from .tar import index_tar

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
GLOB_CHARS = "*?["


def scan_folder(root: Path, extensions: Collection[str]) -> list[str]:
    """Every regular file below root with one of `extensions` (case-insensitive), sorted."""
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())


def read_list(path: Path) -> list[str]:
    """A .txt list: one path per line, relative to the list file; URLs are kept as they are, so
    that reading them fails with a clear reason instead of becoming a wrong local path."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; a list holds one path per line in UTF-8") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(line if URL.match(line) else str(p if p.is_absolute() else path.parent / p))
    return out


def check_regular(path: str) -> os.stat_result:
    """Refuse anything but a regular file before opening it: a FIFO would block forever."""
    if URL.match(path):
        raise OSError("URLs are not read; download the file first and list its local path")
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError("not a regular file (a FIFO, device or socket)")
    return st


def is_glob(spec: str) -> bool:
    """Whether the user's path is a pattern; callers ask only after no file or folder of that name exists."""
    return any(c in spec for c in GLOB_CHARS)


def glob_root(pattern: Path) -> Path:
    """The folder a glob's ids are relative to: its longest prefix without wildcards (`data/**/*.jpg`
    -> `data`), the same whichever files match."""
    parts = pattern.parts
    fixed = next((i for i, part in enumerate(parts) if is_glob(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path(".")


def matching(pattern: Path) -> list[str]:
    """What a glob matches, as every source reads globs. `**` (any depth) never enters a linked folder:
    a link back to a parent would repeat every file below it, and two such links would never end."""
    if not any("**" in part for part in pattern.parts):
        return glob.glob(str(pattern))
    root = glob_root(pattern)
    rest = Path(*(re.sub(r"\*\*+", "*", p) if p != "**" else p for p in pattern.parts[len(root.parts):]))
    hidden = any(p.startswith(".") for p in rest.parts)  # as glob.glob: dot names only when asked for
    return [str(m) for m in root.glob(str(rest))
            if hidden or not any(p.startswith(".") for p in m.parts[len(root.parts):])]


def expand(matches: Sequence[str], extensions: Collection[str], tars: bool = True
           ) -> tuple[list[str], dict[str, Span]]:
    """Glob matches in sorted order: tar shards (members in archive order; skipped unless `tars`),
    folders, files."""
    ids: dict[str, None] = {}  # ordered, and a file matched twice (`data/**` matches its folders too) once
    members: dict[str, Span] = {}
    for m in sorted(matches):
        if tars and m.lower().endswith(".tar"):
            shard = index_tar(m, extensions)
            ids.update(dict.fromkeys(shard))
            members.update(shard)
        elif os.path.isdir(m):
            ids.update(dict.fromkeys(scan_folder(Path(m), extensions)))
        elif Path(m).suffix.lower() in extensions:
            ids[m] = None
    return list(ids), members
