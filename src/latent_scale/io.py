"""Reading and writing the tool's files: strict JSON on the way in, atomic writes that keep modes on the way out."""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import InputError

CHECKPOINT_KIND = "latent-scale-checkpoint"
# First bytes of the files `plot -o` writes, so a re-plot may replace its own picture and nothing else.
_IMAGE_MAGIC = (b"\x89PNG", b"%PDF", b"<?xml", b"<svg", b"%!PS", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"RIFF")


# --- reading ----------------------------------------------------------------------------------------------------

def _stat(path: Path, what: str) -> os.stat_result | None:
    """The file's status (None if it does not exist); a path that cannot even be looked up is the user's to fix."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"{what} {path} cannot be looked up ({e.strerror}); check the path") from None


def _refuse_special(path: Path, st: os.stat_result, what: str) -> None:
    """Folders, FIFOs, devices and sockets are never read or replaced: a FIFO would block forever."""
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {path} is a folder; pass a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {path} is not a regular file (a device, FIFO or socket); pass a file")


def read_bytes(path: Path | str) -> bytes:
    """The bytes of a regular file; anything else is refused before it is opened."""
    p = Path(path)
    st = _stat(p, "the file")
    if st is None:
        raise InputError(f"{p} does not exist")
    _refuse_special(p, st, "the file")
    try:  # O_NONBLOCK: should a FIFO replace the file after the check, opening it still cannot block
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            _refuse_special(p, os.fstat(f.fileno()), "the file")
            return f.read()
    except MemoryError:
        raise InputError(f"{p} is too large to read ({st.st_size} bytes); is it the right file?") from None
    except OSError as e:
        raise InputError(f"{p} cannot be read ({e.strerror or e}); check its permissions") from None


def _read_head(path: Path, size: int = 8) -> bytes:
    """The first bytes of a regular file (the caller has checked it is one)."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as e:
        raise InputError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None


def _no_constants(token: str) -> None:
    raise ValueError(f"{token} is not a JSON number (an undefined value is written null)")


def parse_json(data: bytes, path: Path | str) -> Any:
    """Strict JSON: UTF-8 only, and NaN/Infinity (which Python would accept) are refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); pass a JSON file") from None
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        cut = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        where = "the file ends early: truncated?" if cut else f"line {e.lineno}, column {e.colno}"
        raise InputError(f"{path} is not valid JSON: {e.msg} ({where})") from None
    except ValueError as e:
        raise InputError(f"{path} is not strict JSON: {e}") from None
    except RecursionError:
        raise InputError(f"{path} nests too deeply to be a latent-scale or diffusers file") from None


def read_json(path: Path | str) -> Any:
    """A strict JSON file (see parse_json), refused in one sentence naming the file."""
    return parse_json(read_bytes(path), path)


def as_object(obj: Any, path: Path | str, what: str) -> dict[str, Any]:
    """`obj` if it is a JSON object; an array or null at the top is not `what`."""
    if not isinstance(obj, dict):
        found = "null" if obj is None else f"a JSON {_json_type(obj)}"
        raise InputError(f"{path} is not a {what}: it holds {found} where an object is expected")
    return obj


def read_object(path: Path | str, what: str) -> dict[str, Any]:
    """A strict JSON file whose top level is an object (`what` names the expected file in the error)."""
    return as_object(read_json(path), path, what)


def _json_type(obj: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(obj), type(obj).__name__)


# --- writing ----------------------------------------------------------------------------------------------------

def to_strict(obj: Any) -> Any:
    """`obj` with every NaN/±Infinity replaced by None, so the JSON written is JSON (null = undefined)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: to_strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict(v) for v in obj]
    return obj


def write_json(path: Path | str, obj: Any) -> None:
    """Strict JSON (see to_strict), written atomically (see write_atomic)."""
    text = json.dumps(to_strict(obj), indent=2, allow_nan=False) + "\n"
    write_atomic(Path(path), text.encode())


def _write_error(path: Path, e: OSError) -> InputError:
    """One sentence for a failed write, saying what to change."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(f"cannot write {path}: the disk is full (or over quota); free some space and run again")
    if e.errno == errno.EISDIR:
        return InputError(f"cannot write {path}: it is a folder; pass a file name")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(f"cannot write {path}: permission denied (a read-only or someone else's folder); "
                          "choose another place")
    if e.errno == errno.ENAMETOOLONG:
        return InputError(f"cannot write {path}: the name is too long for its file system; choose a shorter one")
    if e.errno == errno.ENOTDIR:
        return InputError(f"cannot write {path}: a part of the path is a file, not a folder")
    return InputError(f"cannot write {path} ({e.strerror or e})")


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, created with mode 0666 so the kernel applies the umask (and default ACLs)."""
    while True:
        tmp = path.with_name(f".{path.name[:64]}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _keep_mode(fd: int, like: Path) -> None:
    """Give the new file `like`'s mode (and owner, where we may) when `like` exists."""
    try:
        st = os.stat(like)
    except FileNotFoundError:
        return
    if os.geteuid() == 0:
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))


def write_atomic(path: Path | str, data: bytes, *, like: Path | str | None = None) -> None:
    """Write `data` to a temp file beside `path`, fsync and rename it over `path`, so a crash leaves the old
    file or the new one, never half of either. The file keeps the mode (and owner, as root) of `like`,
    default `path` itself, or gets the umask mode when new. Failures are one sentence; no temp file stays."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        with os.fdopen(fd, "wb") as f:
            _keep_mode(f.fileno(), Path(like) if like else path)
            _write_all(f.fileno(), data)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- where outputs may go ---------------------------------------------------------------------------------------

def _same_file(path: Path, st: os.stat_result | None, other: Path | str) -> bool:
    """The same file by inode (links, spellings) or, when neither exists yet, the same resolved path."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        o = os.stat(other)
    except OSError:
        return False
    return st is not None and (st.st_dev, st.st_ino) == (o.st_dev, o.st_ino)


def _is_ours(path: Path, kind: str) -> bool:
    """Whether an existing file is one the tool wrote as `kind` ("result", "checkpoint" or "plot")."""
    try:
        if kind == "plot":
            return _read_head(path).startswith(_IMAGE_MAGIC)
        obj = read_json(path)
    except InputError:
        return False
    if kind == "checkpoint":
        return isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND
    results = obj if isinstance(obj, list) and obj else [obj]  # a --size sweep writes a list of results
    return all(isinstance(r, dict) and "schema" in r and "state" in r for r in results)


def check_output(path: Path | str, *, inputs: Iterable[Path | str] = (), force: bool = False,
                 what: str = "--output", kind: str = "result") -> None:
    """Refuse, before any work, an output that would destroy something: a folder or a non-regular file,
    one of the command's own inputs (both even with force), or an existing file the tool did not write
    as `kind` ("result", "checkpoint", "plot") unless force."""
    p = Path(path)
    st = _stat(p, what)
    if st is not None:
        _refuse_special(p, st, what)
    for source in inputs:
        if _same_file(p, st, source):
            raise InputError(f"{what} {p} is also an input of this command ({source}); write to another file")
    if st is not None and not force and not _is_ours(p, kind):
        raise InputError(f"{what} {p} exists and is not a latent-scale {kind}; "
                         "pass another path, or --force to replace it")


def check_checkpoint_path(path: Path | str, resume: bool, force: bool, *,
                          inputs: Iterable[Path | str] = ()) -> None:
    """check_output for --checkpoint, and an existing checkpoint is continued (--resume) or replaced
    (--force), never silently overwritten by a fresh run."""
    check_output(path, inputs=inputs, force=force, what="--checkpoint", kind="checkpoint")
    if Path(path).exists() and not resume and not force:
        raise InputError(f"--checkpoint {path} already exists; pass --resume to continue it, "
                         "or --force to start over and replace it")
