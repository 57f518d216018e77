"""Everything one latent variable (e.g. the posterior mode) contributes to the result: per-channel
moments, extremes, the histogram and the per-unit moments of the interval, for latents of any shape."""

from __future__ import annotations

import math
from typing import Any

import torch

from .histogram import Histogram
from .interval import Z95
from .moments import Moments, UnitMoments, rms
from .workspace import Workspace


class LatentStats:
    """Everything one latent variable (e.g. the posterior mode) contributes to the result; latents are
    (B, C, ...) of any trailing shape (1-D audio, 2-D images, 3-D video, tokens), channels on dim 1."""

    def __init__(self, channels: int, edges: torch.Tensor | None = None, work: Workspace | None = None) -> None:
        self.channels = channels
        self.work = work or Workspace()
        self.moments = Moments.empty((channels,))
        self.units = UnitMoments()
        self.min = torch.full((channels,), math.inf, dtype=torch.float64)
        self.max = torch.full((channels,), -math.inf, dtype=torch.float64)
        self.histogram = None if edges is None else Histogram(edges, channels)

    def update(self, z: torch.Tensor) -> None:
        if z.ndim < 2 or z.shape[1] != self.channels:
            raise ValueError(f"expected latents (B, {self.channels}, ...), got {tuple(z.shape)}")
        rows = self.work.rows(z)
        per = Moments.of(rows, self.work)
        self.moments = self.moments.merge(per.pooled(z.shape[0]).cpu())
        self.min = torch.minimum(self.min, rows.amin(1).view(z.shape[:2]).amin(0).double().cpu())
        self.max = torch.maximum(self.max, rows.amax(1).view(z.shape[:2]).amax(0).double().cpu())
        if self.histogram is not None:
            self.histogram.update(rows, self.work)
        self.units.update(per, z.shape[0])

    def merge(self, other: LatentStats) -> None:
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {other.channels}-channel stats into {self.channels}-channel stats")
        if (self.histogram is None) != (other.histogram is None):
            raise ValueError("cannot merge statistics with a histogram and statistics without one")
        if self.histogram is not None:
            self.histogram.merge(other.histogram)  # first: it refuses other edges before anything changed
        self.moments = self.moments.merge(other.moments)
        self.units.merge(other.units)
        self.min = torch.minimum(self.min, other.min)
        self.max = torch.maximum(self.max, other.max)

    @property
    def num_elements(self) -> int:
        return int(self.moments.n.sum())

    def beyond(self, scale: float, k: float) -> float | None:
        """Fraction of scaled values z·scale outside ±k, from the histogram (linear within a bin)."""
        if self.histogram is None or not scale > 0 or not self.num_elements:
            return None
        return float(self.histogram.count_beyond(k / scale, self.min, self.max).sum()) / self.num_elements

    def summary(self, population: int | None = None) -> dict[str, Any]:
        """Global and per-channel numbers; the factor's 95 % interval by the delta method.

        With `population` (the data set's size) also the interval of the full-data value,
        which a random subset of it estimates (see UnitMoments.factor_sd).
        """
        total = self.moments.total().summary()
        std = total["std"]
        factor, half = _factor(std), Z95 * self.units.factor_sd()
        per = self.moments.standardised()
        out = {
            "scale_factor": factor,
            "ci95": [factor - half, factor + half],
            "std": std,
            "mean": total["mean"],
            "rms": rms(std, total["mean"], self.num_elements),
            "skew": total["skew"],
            "excess_kurtosis": total["excess_kurtosis"],
            "min": float(self.min.min()),
            "max": float(self.max.max()),
            "beyond_1": self.beyond(factor, 1.0),
            "beyond_3": self.beyond(factor, 3.0),
            "units": self.units.n,
            "elements": self.num_elements,
            "per_channel": {"mean": self.moments.mean.tolist(), "std": per["std"].tolist(),
                            "min": self.min.tolist(), "max": self.max.tolist(),
                            "skew": per["skew"].tolist(), "excess_kurtosis": per["excess_kurtosis"].tolist()},
        }
        if population is not None:
            half_data = Z95 * self.units.factor_sd(population)
            out["ci95_dataset"] = [factor - half_data, factor + half_data]
        return out

    def factor_interval(self, population: int | None = None) -> tuple[float, float]:
        """The factor 1/std and its 95 % half-width: all the running check after each batch needs."""
        return _factor(self.moments.total().summary()["std"]), Z95 * self.units.factor_sd(population)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "channels": self.channels,
            "moments": self.moments.to_dict(),
            "images": self.units.to_dict(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
        }
        if self.histogram is not None:
            d["histogram"] = self.histogram.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], work: Workspace | None = None) -> LatentStats:
        out = cls(int(d["channels"]), work=work)
        out.moments = Moments.from_dict(d["moments"])
        out.units = UnitMoments.from_dict(d["images"])
        out.min = torch.tensor(d["min"], dtype=torch.float64)
        out.max = torch.tensor(d["max"], dtype=torch.float64)
        out.histogram = Histogram.from_dict(d["histogram"]) if d.get("histogram") else None
        return out


def _factor(std: float) -> float:
    """The scale factor 1/std (NaN without spread)."""
    return 1 / std if std > 0 else math.nan
