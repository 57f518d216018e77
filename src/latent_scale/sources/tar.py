"""Uncompressed tar shards (WebDataset layout), indexed once and read by offset without extracting."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

TAR_SEP = "::"  # a tar member's id: "path/to/shard.tar::key.jpg"


@dataclass(frozen=True)
class TarMember:
    """Where one unit's bytes lie inside an uncompressed tar, found once when the shard is indexed.

    `error` marks a part of the shard that could not be indexed; reading it fails with that reason,
    so it is skipped (or stops --strict) like any other unreadable unit.
    """

    tar: str
    offset: int
    size: int
    error: str | None = None

    @property
    def end(self) -> int:
        return self.offset + self.size

    def read(self) -> io.BytesIO:
        if self.error:
            raise OSError(self.error)
        with open(self.tar, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) < self.size:
            raise OSError(f"tar member is truncated ({len(data)} of {self.size} bytes)")
        return io.BytesIO(data)


def index_tar(tar: str, extensions: Collection[str]) -> dict[str, TarMember]:
    """The members of one shard with one of `extensions`, in archive order, keyed by their id.

    Only uncompressed tars are accepted, because members are later read by offset. Damage that
    hides later members (a corrupt header, a file cut at a member boundary) becomes one unreadable
    entry `shard.tar::@BYTE`, so the loss is skipped and reported like a bad unit, never silent.
    """
    members: dict[str, TarMember] = {}
    try:
        with tarfile.open(tar, "r:") as tf:
            try:
                for m in tf:
                    if m.isfile() and Path(m.name).suffix.lower() in extensions:
                        members[f"{tar}{TAR_SEP}{m.name}"] = TarMember(tar, m.offset_data, m.size)
                error = None
            except tarfile.ReadError as e:  # the file ends where the next header should be
                error = str(e)
            end = tf.offset
    except (tarfile.ReadError, OSError) as e:
        raise InputError(f"cannot read {tar} as an uncompressed tar shard ({e}); "
                         "WebDataset shards must be plain .tar files") from None
    error = error or _trailing_damage(tar, end)
    last = next(reversed(members.values()), None)
    if error and not (last and last.end > os.path.getsize(tar)):  # a member cut short reports itself
        members[f"{tar}{TAR_SEP}@{end}"] = TarMember(tar, end, 0, f"{error} at byte {end}; "
                                                                  "the rest of this shard is lost")
    return members


def _trailing_damage(tar: str, end: int) -> str | None:
    """tarfile stops silently at a corrupt header; a real end of archive is zero blocks."""
    with open(tar, "rb") as f:
        f.seek(end)
        return "corrupt tar header" if f.read(512).strip(b"\0") else None
