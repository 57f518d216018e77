"""The registry of sources: each kind of data people hold is one module that defines a Source.

Built-in sources are named in BUILTIN_SOURCES (asked in that order; images, the fallback, last) and
imported on first use; sources registered by users are asked first. Only sources whose input kind
the model takes are asked, so an audio autoencoder's --data goes to the audio source.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from ..errors import InputError
from .base import INPUTS, Source, SourceContext

if TYPE_CHECKING:
    from ..options import Options

BUILTIN_SOURCES = ("tables", "video", "audio", "latents", "images")  # module names; one line per kind of data

_REGISTRY: dict[str, type[Source]] = {}
_ORDER: list[str] = []


def register_source(cls: type[Source], *, replace: bool = False, builtin: bool = False) -> type[Source]:
    """Teach the tool a new kind of data; a kind already registered is refused unless `replace`."""
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise TypeError(f"{cls!r} is not a subclass of latent_scale.sources.base.Source")
    for attr in ("kind", "input", "unit", "units"):
        if not isinstance(getattr(cls, attr, None), str):
            raise TypeError(f"source {cls.__name__} has no {attr}")
    if cls.input not in INPUTS:
        raise TypeError(f"source {cls.__name__}: input must be one of {', '.join(INPUTS)}, not {cls.input!r}")
    if cls.options is not None and not dataclasses.is_dataclass(cls.options):
        raise TypeError(f"source {cls.__name__}: options must be a dataclass")
    if cls.kind in _REGISTRY and not replace:
        raise ValueError(f"a source named {cls.kind!r} is already registered; pass replace=True to replace it")
    if cls.kind not in _REGISTRY:
        _ORDER.insert(len(_ORDER) if builtin else 0, cls.kind)
    _REGISTRY[cls.kind] = cls
    return cls


_LOADED: set[str] = set()


def registered() -> list[type[Source]]:
    """Every source, in the order they are asked; built-in modules are imported on first use."""
    for name in BUILTIN_SOURCES:
        if name not in _LOADED:
            _LOADED.add(name)
            register_source(importlib.import_module(f".{name}", __name__).SOURCE, builtin=True)
    return [_REGISTRY[kind] for kind in _ORDER]


def source_named(kind: str) -> type[Source]:
    registered()
    return _REGISTRY[kind]


def context_for(opts: Options, kind: str, channels: int | None = None) -> SourceContext:
    """What source `kind` may know of the options: the shared preprocessing ones and its own."""
    return SourceContext(opts.sizes, opts.crop, opts.cache_dir, opts.sources.get(kind), channels, opts.column)


def open_source(spec: str, context: Callable[[str], SourceContext], takes: Collection[str], model: str) -> Source:
    """The first source whose input kind the `model` class takes and that claims --data `spec`
    (`context(kind)`: that source's context, holding its own options)."""
    candidates = [cls for cls in registered() if cls.input in takes and cls.input != "latents"]
    wanted = " or ".join(dict.fromkeys(cls.units for cls in candidates))
    for cls in candidates:
        if cls.accepts(spec, context(cls.kind)):
            try:
                return cls.open(spec, context(cls.kind))
            except InputError:  # a folder claimed by default ("holds no images"): say what it does hold
                other = next((o for o in registered() if o not in candidates and o.input != "latents"
                              and o.accepts(spec, context(o.kind))), None)
                if other is None:
                    raise
                raise InputError(f"{model} encodes {wanted}, but --data {spec} holds {other.units}; pass {wanted}, "
                                 f"or an autoencoder of {other.units} with --model") from None
    raise InputError(f"{model} encodes {wanted}, and --data {spec} holds none; pass {wanted} with --data")
