"""The mergeable state (what `stats.PosteriorStats.to_dict()` writes), typed, with every invariant
the accumulator keeps checked: the exact merge formulas would turn a broken one into a confident
wrong number, so a state that breaks one is refused, naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .parse import Count, Invalid, Positive, join, optional, to_json

MAX_CHANNELS = 1 << 16


def _lengths(field: str, channels: int, **lists: list[Any]) -> None:
    for key, values in lists.items():
        if len(values) != channels:
            raise Invalid(join(field, key), f"has {len(values)} entries, not {channels}")


@dataclass(frozen=True)
class Moments:
    """Per-channel count, mean and central sums M2..M4 (Chan/Pébay merges)."""

    n: list[Count]
    mean: list[float]
    m2: list[float]
    m3: list[float]
    m4: list[float]

    def check_channels(self, field: str, channels: int) -> int:
        """The count every channel shares (each latent has every channel); sums that can be negative are not."""
        _lengths(field, channels, n=self.n, mean=self.mean, m2=self.m2, m3=self.m3, m4=self.m4)
        if len(set(self.n)) > 1:
            raise Invalid(join(field, "n"), f"differs between channels ({self.n}), though every latent has "
                                            "every channel")
        n = self.n[0]
        for c in range(channels):
            if self.m2[c] < 0:
                raise Invalid(join(join(field, "m2"), c), f"is {self.m2[c]!r}, but a sum of squares is never negative")
            if self.m4[c] < -1e-9 * self.m2[c] ** 2 / max(n, 1):  # m4 >= m2²/n exactly; the slack is round-off's
                raise Invalid(join(join(field, "m4"), c), f"is {self.m4[c]!r}, but a sum of 4th powers is never "
                                                          "negative")
            if n == 0 and (self.mean[c], self.m2[c], self.m3[c], self.m4[c]) != (0, 0, 0, 0):
                raise Invalid(field, f"has moments in channel {c} although it counts no values")
        return n


@dataclass(frozen=True)
class UnitMoments:
    """Co-moments of each unit's (mean, mean square about `ref`): they give the factor's interval."""

    ref: float | None
    n: Count
    mean: list[float]
    comoment: list[list[float]]

    def check(self, field: str) -> None:
        if len(self.mean) != 2:
            raise Invalid(join(field, "mean"), f"has {len(self.mean)} entries, not 2")
        if len(self.comoment) != 2 or any(len(row) != 2 for row in self.comoment):
            raise Invalid(join(field, "comoment"), "is not a 2 × 2 matrix")
        if self.n and self.ref is None:
            raise Invalid(join(field, "ref"), "is null although units were counted")
        if self.mean[1] < 0 or self.comoment[0][0] < 0 or self.comoment[1][1] < 0:
            raise Invalid(field, "has a negative mean square or variance")


@dataclass(frozen=True)
class Histogram:
    """Fixed edges (from the model config, never the data) and per-channel integer counts, the two
    outer cells holding what falls beyond them."""

    edges: list[float]
    counts: list[list[Count]]

    def check(self, field: str) -> None:
        edges = self.edges
        if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise Invalid(join(field, "edges"), "are not strictly increasing")

    def check_channels(self, field: str, channels: int, n: int) -> None:
        _lengths(field, channels, counts=self.counts)
        for c, row in enumerate(self.counts):
            where = join(join(field, "counts"), c)
            if len(row) != len(self.edges) + 1:
                raise Invalid(where, f"has {len(row)} entries, not {len(self.edges) + 1}")
            if sum(row) != n:
                raise Invalid(where, f"adds up to {sum(row)}, not the channel's {n} values")


@dataclass(frozen=True)
class Latent:
    """Everything one latent variable (the mode μ, or the sample μ + σε) contributes."""

    channels: Positive
    moments: Moments
    images: UnitMoments
    min: list[float | None]
    max: list[float | None]
    histogram: Histogram

    def check_channels(self, field: str, channels: int) -> tuple[int, int]:
        """(values per channel, units) once they fit `channels`."""
        if self.channels != channels:
            raise Invalid(join(field, "channels"), f"is {self.channels!r}, not the state's {channels}")
        n = self.moments.check_channels(join(field, "moments"), channels)
        units = self.images.n
        if units > n or (units == 0) != (n == 0):
            raise Invalid(join(field, "images.n"), f"is {units}, which does not fit the {n} values counted per "
                                                   "channel")
        self._check_range(field, channels, n)
        self.histogram.check_channels(join(field, "histogram"), channels, n)
        return n, units

    def _check_range(self, field: str, channels: int, n: int) -> None:
        """min <= mean <= max per channel (to round-off) once anything was counted (before, ±inf: null)."""
        _lengths(field, channels, min=self.min, max=self.max)
        for c in range(channels if n else 0):
            lo, hi, mean = self.min[c], self.max[c], self.moments.mean[c]
            if lo is None or hi is None:
                raise Invalid(join(join(field, "min" if lo is None else "max"), c), "is null although values "
                                                                                    "were counted")
            slack = 1e-9 * max(abs(lo), abs(hi))
            if not lo - slack <= mean <= hi + slack:
                raise Invalid(join(join(field, "moments.mean"), c), f"is {mean!r}, outside [min, max] = "
                                                                    f"[{lo!r}, {hi!r}]")


@dataclass(frozen=True)
class State:
    """The accumulator of one run (`stats.PosteriorStats`): the mode, and for stochastic encoders the
    sample and the moments of σ² (from which expected_sample is exact)."""

    channels: Positive
    stochastic: bool
    mode: Latent
    sample: Latent | None = optional()
    sigma2: Moments | None = optional()

    def check(self, field: str) -> None:
        if self.channels > MAX_CHANNELS:
            raise Invalid(join(field, "channels"), f"is {self.channels!r}, not a channel count")
        n, units = self.mode.check_channels(join(field, "mode"), self.channels)
        if not self.stochastic:
            return
        for key in ("sample", "sigma2"):
            if getattr(self, key) is None:
                raise Invalid(join(field, key), "is missing")
        self._check_sample(field, n, units)

    def _check_sample(self, field: str, n: int, units: int) -> None:
        """The sample and σ² count the same latents as the mode, and bin them alike."""
        sample_n, sample_units = self.sample.check_channels(join(field, "sample"), self.channels)
        _same(sample_n, n, join(field, "sample.moments.n"), join(field, "mode.moments.n"))
        _same(sample_units, units, join(field, "sample.images.n"), join(field, "mode.images.n"))
        if self.sample.histogram.edges != self.mode.histogram.edges:
            raise Invalid(join(field, "sample.histogram.edges"), f"differ from {field}.mode.histogram.edges")
        _same(self.sigma2.check_channels(join(field, "sigma2"), self.channels), n, join(field, "sigma2.n"),
              join(field, "mode.moments.n"))
        if min(self.sigma2.mean) < 0:
            raise Invalid(join(field, "sigma2.mean"), "is negative, but a variance never is")

    @property
    def num_units(self) -> int:
        return self.mode.images.n

    def to_stats(self) -> Any:
        """The accumulator itself (stats.PosteriorStats), for merging and recomputing."""
        from ..stats import PosteriorStats

        return PosteriorStats.from_dict(to_json(self))


def _same(value: Any, expected: Any, field: str, other: str) -> None:
    if value != expected:
        raise Invalid(field, f"is {value!r} but {other} is {expected!r}; both count the same latents")

