"""A unit's bytes: a whole file, or a byte range of an uncompressed tar shard, re-checked when opened.

Listing reads a file's header once; reading trusts that header only while the file is the one listed,
so every open compares the file's size, modification time and inode with those seen at listing (as make
and rsync judge a file: a rewrite in place keeping size and timestamp goes unseen).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

Stamp = tuple[int, int, int]  # (size in bytes, modification time in ns, inode) of the file holding a span


def stamp_of(st: os.stat_result) -> Stamp:
    return st.st_size, st.st_mtime_ns, st.st_ino


@dataclass(frozen=True)
class Span:
    """Where one unit's bytes lie: `size` bytes at `offset` of the file `path` (offset 0: the whole file;
    a tar member never starts at 0, its header comes first). `stamp` is the file's as listed; `error`
    marks a unit that could not be listed, and opening it fails with that reason."""

    path: str
    offset: int
    size: int
    stamp: Stamp | None = None
    error: str | None = None

    @property
    def whole(self) -> bool:
        """The unit is a file of its own, so a library can open it by path."""
        return self.error is None and self.offset == 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    def check(self, st: os.stat_result) -> None:
        """Refuse a file rewritten since it was listed: its listed header may no longer describe it."""
        if self.stamp is not None and stamp_of(st) != self.stamp:
            raise OSError("the file changed after it was listed (its size, modification time or inode differ); "
                          "run again to list it anew")

    def unchanged(self) -> None:
        """check() by path, for readers that open the file by name themselves (torch.load)."""
        if self.error:
            raise OSError(self.error)
        self.check(os.stat(self.path))

    def open(self) -> BinaryIO:
        """The bytes as a seekable file: the file itself when whole (the fastest), else a window on its range."""
        if self.error:
            raise OSError(self.error)
        f = open(self.path, "rb")  # noqa: SIM115 - returned; the caller closes it
        try:
            self.check(os.fstat(f.fileno()))
        except OSError:
            f.close()
            raise
        return f if self.whole else io.BufferedReader(Window(f, self))

    def read(self) -> io.BytesIO:
        """All of the span's bytes (an image in a tar shard); a span cut short by the file's end is an error."""
        with self.open() as f:
            data = f.read(self.size)
        if len(data) < self.size:
            raise OSError(f"tar member is truncated ({len(data)} of {self.size} bytes)")
        return io.BytesIO(data)


class Window(io.RawIOBase):
    """A byte range of an open file as a seekable file object; reads never leave the range."""

    def __init__(self, file: BinaryIO, span: Span) -> None:
        self.file, self.span, self.pos = file, span, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = max(0, pos + (0, self.pos, self.span.size)[whence])
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), self.span.size - self.pos))
        self.file.seek(self.span.offset + self.pos)
        got = self.file.readinto(memoryview(buffer)[:n]) or 0
        self.pos += got
        return got

    def close(self) -> None:
        self.file.close()
        super().close()
