"""`option()`: a dataclass field that also describes its command-line option, so the CLI and the Python
API are generated from one declaration (Options and every source's own options use it)."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, *, panel: str = "Data", cli: type | None = None,
           flags: tuple[str, ...] = (), shown: str | None = None) -> Any:
    """`cli`: the click type when the field's Python type is wider than what a command line can say
    (e.g. a comma list for --size); `panel`: the help panel it is listed under; `flags`: its spellings;
    `shown`: the default in words, where the default is decided at run time (None)."""
    return field(default=default, metadata={"help": help, "cli": cli, "flags": flags, "panel": panel, "shown": shown})
