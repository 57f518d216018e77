"""The registry of sources: each kind of data people hold is one module that registers a Source.

`open_source` asks each registered source, in order, whether it claims the --data spec; sources
registered by users are asked first, the image source (the fallback) last. --latents always goes
to the latent source.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .base import Source

_REGISTRY: dict[str, type[Source]] = {}
_ORDER: list[str] = []


def register_source(cls: type[Source], *, replace: bool = False, builtin: bool = False) -> type[Source]:
    """Teach the tool a new kind of data; a kind already registered is refused unless `replace`."""
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise TypeError(f"{cls!r} is not a subclass of latent_scale.sources.base.Source")
    for attr in ("kind", "produces", "open", "accepts"):
        if not hasattr(cls, attr):
            raise TypeError(f"source {cls.__name__} has no {attr}")
    if cls.produces not in ("pixels", "latents"):
        raise TypeError(f"source {cls.__name__}: produces must be 'pixels' or 'latents', not {cls.produces!r}")
    if cls.kind in _REGISTRY and not replace:
        raise ValueError(f"a source named {cls.kind!r} is already registered; pass replace=True to replace it")
    if cls.kind not in _REGISTRY:
        _ORDER.insert(len(_ORDER) if builtin else 0, cls.kind)
    _REGISTRY[cls.kind] = cls
    return cls


def open_source(opts: Any, channels: int | None = None) -> Source:
    """The source for --latents (`channels`: the model's, when --model is given), else the first
    source that claims --data."""
    if opts.latents:
        return _REGISTRY["latents"].open(opts.latents, opts, channels=channels)
    source = next((cls for cls in map(_REGISTRY.get, _ORDER) if cls.produces == "pixels"
                   and cls.accepts(opts.data, opts)), None)
    if source is None:
        raise InputError(f"no source can read --data {opts.data}")
    opened = source.open(opts.data, opts)
    if opts.frames not in (None, 1) and opened.unit != "clip":
        raise InputError(f"--frames applies to video data; --data {opts.data} holds no videos")
    return opened


def _register_builtins() -> None:
    from .datasets import DatasetSource
    from .images import ImageSource
    from .latents import LatentSource
    from .video import VideoSource

    for cls in (VideoSource, DatasetSource, LatentSource, ImageSource):  # ImageSource claims everything: last
        register_source(cls, builtin=True)


_register_builtins()
