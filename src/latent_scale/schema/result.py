"""The result, typed: what `estimate -o` and `merge -o` write, and what `compare`, `plot`, `apply`
and `merge` read back (through `read_result`, never by string keys).

`model`, `recipe` and `run` are open objects: each source and each run adds its own keys there
(documented in docs/result.md), so the keys the tool reads are typed and checked and the rest are
kept as written. The top level is closed: a key this version does not know is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from ..errors import InputError
from ..options import POSTERIORS, parse_shard
from . import keys
from .parse import Count, Invalid, Json, NonNegative, Positive, join, kind_of, optional, parse, raw_json, to_json
from .seal import check_sealed
from .state import State


def _schema(v: int, field: str) -> int:
    if v != keys.SCHEMA_VERSION:
        raise Invalid(field, f"is {v!r}", f"this version of latent-scale reads schema {keys.SCHEMA_VERSION}")
    return v


def _shard(x: Any, field: str) -> str | None:
    """A recorded `shard`: null, or 'i/n' by the rule --shard follows."""
    if x is None:
        return None
    try:
        parse_shard(x if isinstance(x, str) else "?")
    except InputError:
        raise Invalid(field, f"is {x!r}, not null or 'i/n' with 0 <= i < n") from None
    return x


Shard = Annotated[Json, _shard]


@dataclass(frozen=True)
class Skipped:
    """A unit that could not be used, and why."""

    path: str
    error: str


@dataclass(frozen=True)
class Estimate:
    scale_factor: float | None
    std: float | None
    mean: float | None


@dataclass(frozen=True)
class PerChannel:
    """Per latent channel; `mean` and `std` are diffusers' latents_mean / latents_std."""

    mean: list[float | None]
    std: list[float | None]
    min: list[float | None]
    max: list[float | None]
    skew: list[float | None]
    excess_kurtosis: list[float | None]


@dataclass(frozen=True)
class Distribution:
    min: float | None
    max: float | None
    skew: float | None
    excess_kurtosis: float | None
    beyond_1: float | None
    beyond_3: float | None


@dataclass(frozen=True)
class ConfigNormalised:
    convention: str
    mean: float | None
    std: float | None
    rms: float | None


@dataclass(frozen=True)
class FrameEstimate:
    scale_factor: float | None
    std: float | None
    mean: float | None
    num_elements: Count


@dataclass(frozen=True)
class Frames:
    """Video: the causal first latent frame and the later ones, each with its mergeable state."""

    first: FrameEstimate
    later: FrameEstimate
    state: dict[str, State]


@dataclass(frozen=True)
class InputScale:
    stored_scale: float
    multiply_stored_by: float
    note: str


@dataclass(frozen=True)
class Model:
    """The model measured (open: loading adds its own keys). `source` and `class` are null for
    stored latents measured without --model."""

    source: str | None
    class_name: str | None = optional(key="class")
    config_scaling_factor: float | None = None
    config_shift_factor: float | None = None
    config_latents_mean: list[float] | None = None
    config_latents_std: list[float] | None = None
    identity: dict[str, Json] | None = None
    raw: dict[str, Any] = raw_json()

    def check(self, field: str) -> None:
        if "class" not in self.raw:
            raise Invalid(join(field, "class"), "is missing")


@dataclass(frozen=True)
class Recipe:
    """What determines the numbers (open: each source adds its own keys)."""

    posterior: str
    data: str | None = None
    size: Positive | None = None
    unit: str | None = None
    source: str | None = None
    dataset_size: Count | None = None
    data_identity: dict[str, Json] | None = None
    cache: dict[str, Json] | None = None
    raw: dict[str, Any] = raw_json()


@dataclass(frozen=True)
class Run:
    """How the work went (open: the run adds its own keys)."""

    shard: Shard = None
    shards: list[Shard] | None = None
    missing_shards: list[str] | None = None
    merged_from: Positive | None = None
    seconds: NonNegative | None = None
    upcast_chunks: Count = 0
    stopped_early: bool = False
    raw: dict[str, Any] = raw_json()


@dataclass(frozen=True)
class Result:
    """One result of schema 1, checked all the way down (see docs/result.md for each field).

    Dataclasses rather than pydantic: the standard library, no second import of a large package for
    commands that must answer fast, and `parse` words every refusal as the one sentence the CLI
    prints, naming the dotted field.
    """

    schema: Annotated[int, _schema]
    scale_factor: float
    scale_factor_ci95: list[float | None]
    std: float
    mean: float
    rms: float
    shift_factor: float
    num_images: Count
    num_elements: Count
    latent_shape: list[Positive]
    per_channel: PerChannel
    distribution: Distribution
    config_normalised: ConfigNormalised | None
    normalisations: dict[str, dict[str, Json]]
    estimates: dict[str, Estimate]
    skipped: list[Skipped]
    model: Model
    recipe: Recipe
    references: dict[str, float]
    versions: dict[str, str]
    run: Run
    state: State
    state_sha256: str
    unit: str | None = optional()
    num_units: Count | None = optional()
    scale_factor_ci95_dataset: list[float | None] | None = optional()
    latent_shapes: dict[str, Count] | None = optional()
    frames: Frames | None = optional()
    input_scale: InputScale | None = optional()

    def check(self, field: str) -> None:
        """What ties the fields together: the posterior the state has, its channels everywhere."""
        allowed = POSTERIORS if self.state.stochastic else ("mode",)
        if self.recipe.posterior not in allowed:
            raise Invalid("recipe.posterior", f"is {self.recipe.posterior!r}, not one of {', '.join(allowed)} "
                          f"(the state is {'stochastic' if self.state.stochastic else 'deterministic'})")
        channels = self.state.channels
        if self.latent_shape[:1] != [channels]:
            raise Invalid(keys.KEY_LATENT_SHAPE, f"is {self.latent_shape!r}, not the shape of {channels}-channel "
                                                 "latents")
        for name in ("mean", "std"):
            if len(getattr(self.per_channel, name)) != channels:
                raise Invalid(f"per_channel.{name}", f"has {len(getattr(self.per_channel, name))} entries, not "
                                                     f"the state's {channels}")
        for name in ("scale_factor_ci95", "scale_factor_ci95_dataset"):
            if getattr(self, name) is not None and len(getattr(self, name)) != 2:
                raise Invalid(name, "is not a [low, high] pair")
        if self.num_units is not None and self.num_units != self.num_images:
            raise Invalid(keys.KEY_NUM_UNITS, f"is {self.num_units}, but num_images (its alias) is "
                                              f"{self.num_images}")

    @property
    def units(self) -> int:
        """How many units were counted (num_units; num_images in results written before it existed)."""
        return self.num_images if self.num_units is None else self.num_units

    @property
    def unit_name(self) -> str:
        """What one unit is (image, clip, audio clip, latent)."""
        return self.unit or self.recipe.unit or "image"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, as written."""
        return to_json(self)


def parse_result(doc: Any, where: str) -> Result:
    """A result, structure and invariants checked and its seal verified (no torch needed);
    read_result also checks its numbers against its state."""
    if isinstance(doc, dict) and doc.get("kind") == keys.CHECKPOINT_KIND:
        raise InputError(f"{where} is a checkpoint, not a result; finish the run with --resume, "
                         "then use its -o result")
    if not isinstance(doc, dict) or not {keys.KEY_SCHEMA, keys.KEY_STATE} & set(doc):
        what = kind_of(doc) if not isinstance(doc, dict) else "a JSON object without schema or state"
        raise InputError(f"{where} is not a latent-scale result (it holds {what})")
    try:
        result = parse(Result, doc, "")
    except Invalid as e:
        raise e.refuse(where) from None
    check_sealed(doc, where)
    return result
