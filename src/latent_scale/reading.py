"""Reading the tool's own files and diffusers configs: regular files only (a FIFO would block forever),
strict JSON (NaN and Infinity are not JSON), one sentence naming the file when anything is wrong."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import InputError


def stat_or_none(path: Path, what: str) -> os.stat_result | None:
    """The file's status (None if it does not exist); a path that cannot even be looked up is the user's to fix."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError(f"{what} {path} cannot be looked up ({e.strerror}); check the path") from None


def refuse_special(path: Path, st: os.stat_result, what: str) -> None:
    """Folders, FIFOs, devices and sockets are never read or replaced: a FIFO would block forever."""
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {path} is a folder; pass a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {path} is not a regular file (a device, FIFO or socket); pass a file")


def read_bytes(path: Path | str) -> bytes:
    """The bytes of a regular file; anything else is refused before it is opened."""
    p = Path(path)
    st = stat_or_none(p, "the file")
    if st is None:
        raise InputError(f"{p} does not exist")
    refuse_special(p, st, "the file")
    try:  # O_NONBLOCK: should a FIFO replace the file after the check, opening it still cannot block
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            refuse_special(p, os.fstat(f.fileno()), "the file")
            return f.read()
    except MemoryError:
        raise InputError(f"{p} is too large to read ({st.st_size} bytes); is it the right file?") from None
    except OSError as e:
        raise InputError(f"{p} cannot be read ({e.strerror or e}); check its permissions") from None


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
