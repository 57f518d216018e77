"""Published latent normalisation constants, each with its source: a TOML registry users can extend.

Why a data file and not a dict in code: a user who trains or finds another model adds a
file (or an entry) without touching the package; the format is documented at the top of
known_factors.toml.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .errors import InputError

BUILTIN = Path(__file__).with_name("known_factors.toml")
ENV_VAR = "LATENT_SCALE_KNOWN"
_added: list[Path] = []


@dataclass(frozen=True)
class Published:
    """One model family's published constants, as the diffusers config keys name them."""

    name: str
    ids: tuple[str, ...]
    source: str
    scaling_factor: float | None = None
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    notes: str = ""
    registry: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _entry(raw: dict[str, Any], where: str) -> Published:
    name = raw.get("name")
    ids, source = raw.get("ids"), raw.get("source")
    if not (isinstance(name, str) and isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)
            and isinstance(source, str)):
        raise InputError(f"{where}: every [[model]] needs name, a non-empty list of ids and a source link")
    unknown = set(raw) - {f for f in Published.__dataclass_fields__ if f != "registry"}
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} in model {name!r}")
    mean, std = raw.get("latents_mean"), raw.get("latents_std")
    if raw.get("scaling_factor") is None and not (mean and std):
        raise InputError(f"{where}: model {name!r} needs scaling_factor or latents_mean and latents_std")
    if (mean is None) != (std is None) or (mean and len(mean) != len(std)):
        raise InputError(f"{where}: model {name!r} needs latents_mean and latents_std of the same length")
    return Published(name=name, ids=tuple(ids), source=source, scaling_factor=raw.get("scaling_factor"),
                     shift_factor=raw.get("shift_factor"), latents_mean=tuple(mean) if mean else None,
                     latents_std=tuple(std) if std else None, notes=raw.get("notes", ""), registry=where)


def read_registry(path: str | Path) -> list[Published]:
    """The entries of one registry file; a malformed file is a user error naming the file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"registry {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"registry {path} is not a readable TOML file ({e})") from None
    models = data.get("model")
    if not isinstance(models, list):
        raise InputError(f"registry {path} has no [[model]] entries")
    return [_entry(m, str(path)) for m in models]


def add_registry(path: str | Path) -> None:
    """Add a registry file for this process (validated now, so a bad file fails early)."""
    read_registry(path)
    _added.append(Path(path))


def known_factors(registry: Iterable[str | Path] = ()) -> list[Published]:
    """Every entry: the built-in file, then $LATENT_SCALE_KNOWN, add_registry() files and `registry`."""
    env = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return [entry for path in [BUILTIN, *env, *_added, *registry] for entry in read_registry(path)]


def lookup(model: str, registry: Iterable[str | Path] = ()) -> Published | None:
    """The entry whose ids contain `model` (a hub id, case-insensitive); a later file wins."""
    key = model.strip().rstrip("/").lower()
    for entry in reversed(known_factors(registry)):
        if key in (i.lower() for i in entry.ids):
            return entry
    return None
