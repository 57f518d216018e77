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
from .reading import refuse_special, stat_or_none

BUILTIN = Path(__file__).with_name("known_factors.toml")
ENV_VAR = "LATENT_SCALE_KNOWN"


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
    st = stat_or_none(Path(path), "registry")
    if st is not None:
        refuse_special(Path(path), st, "registry")  # a FIFO would block `known` forever, /dev/zero never end
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
    """Add a registry file for this process and its children (validated now, so a bad file fails
    early). It goes into $LATENT_SCALE_KNOWN, the one visible place extra registries are listed."""
    read_registry(path)
    os.environ[ENV_VAR] = os.pathsep.join([*_env_registries(), str(path)])


def _env_registries() -> list[str]:
    return [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]


def known_factors(registry: Iterable[str | Path] = ()) -> list[Published]:
    """Every entry: the built-in file, then $LATENT_SCALE_KNOWN (add_registry() adds to it), then `registry`."""
    return [entry for path in [BUILTIN, *_env_registries(), *registry] for entry in read_registry(path)]


def lookup(model: str, registry: Iterable[str | Path] = ()) -> Published | None:
    """The entry whose ids contain `model` (a hub id, case-insensitive); a later file wins."""
    key = model.strip().rstrip("/").lower()
    for entry in reversed(known_factors(registry)):
        if key in (i.lower() for i in entry.ids):
            return entry
    return None


def summary_table(entries: list[Published]) -> str:
    """Name, published values and an example id per entry, its source shortened on the line below:
    the table fits 100 columns; `latent-scale known --model ID` shows the full link."""
    rows = [("model", "published", "e.g. id")]
    for e in entries:
        values = "latents_mean/std" if e.scaling_factor is None else f"{e.scaling_factor:g}"
        values += f" shift {e.shift_factor:g}" if e.shift_factor is not None else ""
        values += " + latents_mean/std" if e.scaling_factor is not None and e.latents_mean else ""
        rows.append((e.name, values, e.ids[0]))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:2], widths, strict=True)) + "  " + row[2]
             for row in rows]
    for k, e in enumerate(entries):
        lines[k + 1] += "\n  source: " + short_link(e.source, 90)
    return "\n".join([*lines, "(full source links: latent-scale known --model ID)"])


def short_link(url: str, room: int) -> str:
    """`url` without its scheme, in at most `room` characters: a GitHub file keeps owner/repo and the
    file name (github.com/huggingface/diffusers/…/autoencoder_kl_mochi.py), anything else its ends."""
    text = url.split("://", 1)[-1]
    if len(text) <= room:
        return text
    parts = text.split("/")
    if parts[0] == "github.com" and len(parts) > 4:
        text = "/".join(parts[:3]) + "/…/" + parts[-1]
    if len(text) > room:
        half = (room - 1) // 2
        text = text[:half] + "…" + text[len(text) - (room - 1 - half):]
    return text


def describe(entry: Published) -> str:
    """Every field of one entry, one per line."""
    rows = [("name", entry.name), ("ids", ", ".join(entry.ids))]
    for key in ("scaling_factor", "shift_factor", "latents_mean", "latents_std"):
        value = getattr(entry, key)
        if value is not None:
            rows.append((key, ", ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"))
    rows += [("source", entry.source)] + ([("notes", entry.notes)] if entry.notes else [])
    import textwrap  # values wrap under their column at 100; a link or id is never broken

    return "\n".join(textwrap.fill(v, 100, initial_indent=f"{k:<14}  ", subsequent_indent=" " * 16,
                                   break_long_words=False, break_on_hyphens=False) for k, v in rows)


def classes_table(rows: list[Any], width: int = 100) -> str:
    """Every autoencoder class of the installed diffusers (models.status rows): class, status, input
    and posteriors on one line, what is particular (or why it is refused) wrapped below it."""
    import textwrap

    cells = [("class", "status", "input", "posterior")] + [(r.name, r.status, r.input, r.posterior) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)] + [0]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(c, widths, strict=True)).rstrip() for c in cells]
    for k, row in enumerate(rows):
        if row.note:
            lines[k + 1] += "\n" + textwrap.fill(row.note, width, initial_indent="    ", subsequent_indent="    ")
    counts = {s: sum(r.status == s for r in rows) for s in ("supported", "refused", "not yet decided")}
    return "\n".join([*lines, ", ".join(f"{n} {s}" for s, n in counts.items())])


def classes_markdown(rows: list[Any]) -> str:
    """The same rows as a Markdown table (docs/models.md holds the one of the diffusers CI installs)."""
    lines = ["| class | status | input | posterior | notes |", "|---|---|---|---|---|"]
    lines += [f"| `{r.name}` | {r.status} | {r.input} | {r.posterior} | {r.note.replace('|', '/')} |" for r in rows]
    return "\n".join(lines)
