"""Uncompressed tar shards (WebDataset layout), indexed once and read by offset without extracting."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Collection
from pathlib import Path

from ..errors import InputError
from ..formats.window import Span, stamp_of

TAR_SEP = "::"  # a tar member's id: "path/to/shard.tar::key.jpg"
SPARSE = "is a sparse tar member (its holes are not stored in the shard); repack the shard without --sparse"


def index_tar(tar: str, extensions: Collection[str]) -> dict[str, Span]:
    """The members of one shard with one of `extensions`, in archive order, keyed by their id.

    Only uncompressed tars are accepted, because members are later read by offset. Damage that
    hides later members (a corrupt header, a file cut at a member boundary) becomes one unreadable
    entry `shard.tar::@BYTE`, so the loss is skipped and reported like a bad unit, never silent.
    A sparse member's bytes in the shard are not the file's, so it is one unreadable entry too.
    """
    members: dict[str, Span] = {}
    try:
        stamp = stamp_of(os.stat(tar))
        with tarfile.open(tar, "r:") as tf:
            try:
                for m in tf:
                    if m.isfile() and Path(m.name).suffix.lower() in extensions:
                        members[f"{tar}{TAR_SEP}{m.name}"] = Span(tar, m.offset_data, m.size, stamp,
                                                                 SPARSE if m.issparse() else None)
                error = None
            except tarfile.ReadError as e:  # the file ends where the next header should be
                error = str(e)
            end = tf.offset
    except (tarfile.ReadError, OSError) as e:
        raise InputError(f"cannot read {tar} as an uncompressed tar shard ({e}); "
                         "WebDataset shards must be plain .tar files") from None
    error = error or _trailing_damage(tar, end)
    last = next(reversed(members.values()), None)
    if error and not (last and last.end > stamp[0]):  # a member cut short reports itself
        members[f"{tar}{TAR_SEP}@{end}"] = Span(tar, end, 0, stamp, f"{error} at byte {end}; the rest of this shard "
                                                                    "is lost")
    return members


def _trailing_damage(tar: str, end: int) -> str | None:
    """tarfile stops silently at a corrupt header; a real end of archive is zero blocks."""
    with open(tar, "rb") as f:
        f.seek(end)
        return "corrupt tar header" if f.read(512).strip(b"\0") else None
