"""Every autoencoder class the installed diffusers exports, with its status here: supported (which
input, which posteriors), refused (why, and what to do instead), or not yet decided.

Computed from the installed package, so a class a later diffusers adds shows up as not yet decided
instead of being missed. A class is an autoencoder here when its name says so (autoencoder, VAE,
VQModel, tokenizer) and it is a diffusers model with an encode() method.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .families import FAMILIES, REFUSED
from .family import Family

NAME = re.compile(r"autoencoder|vae|vqmodel|tokenizer", re.IGNORECASE)
UNDECIDED = "not yet decided"


@dataclass(frozen=True)
class ClassStatus:
    """One row of the table: the class, its status, and for a supported class its input and posteriors."""

    name: str
    status: str  # "supported", "refused" or UNDECIDED
    input: str = ""
    posterior: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def input_words(family: Family) -> str:
    """The kind of data a run of the class measures, in the words of its units."""
    if family.input != "pixels":
        return "audio clips (mel)" if family.input == "mel" else "audio clips"
    if not family.single_frame:
        return "clips"
    return "images, clips" if family.video and family.temporal else "images"


def notes(family: Family) -> str:
    """What is particular about how the class is fed or read."""
    said = [text for flag, text in (
        (family.one_at_a_time, "one unit per encode call"),
        (family.alpha, "RGBA: an opaque alpha channel is added"),
        (family.pixel_range != (-1.0, 1.0), "[0, 1] pixels (its encode resizes and normalises)"),
        (family.raw is not None, "raw features, before the normalisation its encode applies"),
        (family.tokens, "tokens (B, N, C) read as channels C"),
        (family.deterministic and family.output == "latent_dist", "its latent_dist has no posterior spread"),
        (bool(family.encode_kwargs), ", ".join(f"encode({k}={v!r})" for k, v in family.encode_kwargs)),
        (family.audio is not None and family.audio.flat, "mono, (B, samples)"),
    ) if flag]
    return "; ".join(said)


def status_of(name: str) -> ClassStatus | None:
    """The row of class `name`, or None where it is no autoencoder (no encode(), not a diffusers model)."""
    if name in FAMILIES:
        family = FAMILIES[name]
        return ClassStatus(name, "supported", input_words(family), family.posterior_kind, notes(family))
    if name in REFUSED:
        return ClassStatus(name, "refused", note=REFUSED[name])
    import diffusers

    cls = getattr(diffusers, name)
    if type(cls).__name__ == "DummyObject":  # its backends are missing: it cannot be inspected
        return ClassStatus(name, UNDECIDED, note=f"needs {', '.join(cls._backends)} to inspect")
    if callable(getattr(cls, "encode", None)) and isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin):
        return ClassStatus(name, UNDECIDED)
    return None


def class_statuses() -> list[ClassStatus]:
    """The rows of every autoencoder class the installed diffusers exports, sorted by name."""
    import diffusers

    rows = (status_of(name) for name in sorted(dir(diffusers)) if NAME.search(name))
    return [row for row in rows if row is not None]
