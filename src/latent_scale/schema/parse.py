"""Typed parsing: a JSON value checked against a dataclass's annotations, all the way down.

Every file the tool reads back (results, checkpoints) is plain JSON that damage, a hand edit or a
file from elsewhere can spoil. Instead of checking each field by hand, the dataclasses of the schema
declare their fields' types (`float`, `Count`, `list[float]`, `X | None`, `Literal[...]`, nested
dataclasses) and `parse` checks a value against them, naming the dotted field that is wrong. A
dataclass may add a `check(field)` method for invariants between its fields, run once it is built.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from ..errors import InputError

MAX_COUNT = 2**53  # float64 holds every whole number below this exactly
DAMAGED = "the file is damaged or was edited"


class Invalid(Exception):
    """One broken rule: the dotted field, what is wrong with it, and the likely cause."""

    def __init__(self, field: str, problem: str, cause: str = DAMAGED) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem, self.cause = field, problem, cause

    def refuse(self, where: str) -> InputError:
        """The one sentence the user reads: the file, the field, what is wrong and why it may be."""
        return InputError(f"{where}: {self.field} {self.problem}; {self.cause}")


def join(field: str, key: str | int) -> str:
    """The dotted name of `key` inside `field` (list entries as [i])."""
    if isinstance(key, int):
        return f"{field}[{key}]"
    return f"{field}.{key}" if field else key


def kind_of(x: Any) -> str:
    """How a JSON value is called in messages."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true/false"
    names = {dict: "a JSON object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(x), type(x).__name__)


def _count(v: float, field: str) -> int:
    if v < 0 or v != int(v) or v >= MAX_COUNT:
        raise Invalid(field, f"is {v!r}, not a count (a whole number from 0 to 2**53)")
    return int(v)


def _positive(v: int, field: str) -> int:
    if v < 1:
        raise Invalid(field, f"is {v!r}, not a positive whole number")
    return v


def _non_negative(v: float, field: str) -> float:
    if v < 0:
        raise Invalid(field, f"is {v!r}, but it is never negative")
    return v


Count = Annotated[float, _count]  # a whole number of things, written as a JSON number
Positive = Annotated[int, _positive]
NonNegative = Annotated[float, _non_negative]
Json = Any  # a JSON value the schema does not look into (identities, fingerprints)


def _number(x: Any, field: str) -> float:
    """A finite JSON number (undefined values are written null, never NaN)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise Invalid(field, f"is {kind_of(x)}, not a number")
    try:
        v = float(x)
    except OverflowError:
        raise Invalid(field, "is too large for a float") from None
    if not math.isfinite(v):
        raise Invalid(field, f"is {v}, not a finite number")
    return v


def _whole(x: Any, field: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise Invalid(field, f"is {x!r}, not a whole number")
    return x


def _plain(kind: type, name: str) -> Callable[[Any, str], Any]:
    def check(x: Any, field: str) -> Any:
        if not isinstance(x, kind):
            raise Invalid(field, f"is {kind_of(x)}, not {name}")
        return x
    return check


SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    float: _number, int: _whole, str: _plain(str, "a string"), bool: _plain(bool, "true/false")}


def obj(x: Any, field: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise Invalid(field or "the document", f"is {kind_of(x)}, not a JSON object")
    return x


def array(x: Any, field: str, length: int | None = None) -> list[Any]:
    if not isinstance(x, list):
        raise Invalid(field, f"is {kind_of(x)}, not a list")
    if length is not None and len(x) != length:
        raise Invalid(field, f"has {len(x)} entries, not {length}")
    return x


def parse(tp: Any, value: Any, field: str) -> Any:
    """`value` checked against the type `tp` (and converted: counts to int, dataclasses built)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        out = parse(args[0], value, field)
        for rule in args[1:]:
            out = rule(out, field)
        return out
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, float) and not math.isfinite(value))):
            return None  # undefined: null in a file, NaN in a result not yet written (see outputs.to_strict)
        (inner,) = [a for a in args if a is not type(None)]
        return parse(inner, value, field)
    if origin is Literal:
        if value not in args or isinstance(value, bool):
            raise Invalid(field, f"is {value!r}, not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        return [parse(args[0], v, join(field, i)) for i, v in enumerate(array(value, field))]
    if origin is dict:
        return {k: parse(args[1], v, join(field, k)) for k, v in obj(value, field).items()}
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, field)
    return SCALARS[tp](value, field)


def json_key(f: dataclasses.Field) -> str:
    """The field's name in the JSON (`class` cannot be a Python name)."""
    return f.metadata.get("key", f.name)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def parse_dataclass(cls: Any, value: Any, field: str) -> Any:
    """A dataclass from a JSON object: each field parsed by its annotation, a missing required field
    refused, then `check(field)`. A closed object refuses keys it does not declare; an open one (a
    field marked `raw`) accepts them and keeps the whole object as written in that field."""
    d = obj(value, field)
    hints = get_type_hints(cls, include_extras=True)
    raw = next((f.name for f in dataclasses.fields(cls) if f.metadata.get("raw")), None)
    named = [f for f in dataclasses.fields(cls) if f.name != raw]
    found: dict[str, Any] = {} if raw is None else {raw: d}
    for f in named:
        key = json_key(f)
        if key in d:
            found[f.name] = parse(hints[f.name], d[key], join(field, key))
        elif _required(f):
            raise Invalid(join(field, key), "is missing")
    unknown = [k for k in d if k not in {json_key(f) for f in named}]
    if raw is None and unknown:
        raise Invalid(join(field, unknown[0]), "is not a field this version of latent-scale knows",
                      "the file was edited or comes from a newer latent-scale")
    out = cls(**found)
    if hasattr(out, "check"):
        out.check(field)
    return out


def to_json(x: Any) -> Any:
    """The JSON value of a parsed dataclass (the inverse of parse): an open object as it was written,
    a closed one field by field, leaving out optional fields it does not have."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        raw = next((f.name for f in dataclasses.fields(x) if f.metadata.get("raw")), None)
        if raw is not None:
            return getattr(x, raw)
        return {json_key(f): to_json(getattr(x, f.name)) for f in dataclasses.fields(x)
                if not (f.metadata.get("omit_none") and getattr(x, f.name) is None)}
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items()}
    if isinstance(x, list):
        return [to_json(v) for v in x]
    return x


def raw_json() -> Any:
    """The field of an open object that keeps the object as written (see parse_dataclass)."""
    return dataclasses.field(default_factory=dict, metadata={"raw": True}, repr=False, compare=False)


def optional(default: Any = None, **metadata: Any) -> Any:
    """A field that a result may leave out (written only when it has a value)."""
    return dataclasses.field(default=default, metadata={"omit_none": True, **metadata})

