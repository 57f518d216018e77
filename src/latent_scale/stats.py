"""Exact streaming statistics of latents, in float64.

Knows nothing of models or files: it receives latent tensors (B, C, ...) and
keeps per-channel central moments merged with Chan/Pébay's pairwise formulas
(never raw power sums, which cancel catastrophically when |mean| >> std), plus
per-image moments so that the error bar treats images, not correlated latent
elements, as the independent unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

Z95 = 1.959963984540054


@dataclass
class Moments:
    """Count, mean and central moment sums M2..M4 of one or more groups (vectorised)."""

    n: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor
    m3: torch.Tensor
    m4: torch.Tensor

    @classmethod
    def empty(cls, shape: tuple[int, ...] = ()) -> Moments:
        return cls(*(torch.zeros(shape, dtype=torch.float64) for _ in range(5)))

    @classmethod
    def of(cls, x: torch.Tensor) -> Moments:
        """Two-pass moments of each row of x (groups, values) — exact within a batch."""
        x = x.double()
        mean = x.mean(dim=1)
        d = x - mean[:, None]
        d2 = d * d
        n = torch.full_like(mean, x.shape[1])
        return cls(n, mean, d2.sum(1), (d2 * d).sum(1), (d2 * d2).sum(1))

    def merge(self, o: Moments) -> Moments:
        """Pébay's pairwise update: exact for any split and order of the data."""
        n = self.n + o.n
        safe = torch.where(n > 0, n, torch.ones_like(n))
        delta = o.mean - self.mean
        na, nb = self.n, o.n
        mean = self.mean + delta * nb / safe
        m2 = self.m2 + o.m2 + delta**2 * na * nb / safe
        m3 = (
            self.m3
            + o.m3
            + delta**3 * na * nb * (na - nb) / safe**2
            + 3 * delta * (na * o.m2 - nb * self.m2) / safe
        )
        m4 = (
            self.m4
            + o.m4
            + delta**4 * na * nb * (na * na - na * nb + nb * nb) / safe**3
            + 6 * delta**2 * (na * na * o.m2 + nb * nb * self.m2) / safe**2
            + 4 * delta * (na * o.m3 - nb * self.m3) / safe
        )
        return Moments(n, mean, m2, m3, m4)

    def total(self) -> Moments:
        """Merge the groups (channels) into one: the moments over all elements."""
        out = Moments.empty()
        for i in range(self.n.shape[0]):
            out = out.merge(Moments(*(t[i] for t in self._fields())))
        return out

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.n, self.mean, self.m2, self.m3, self.m4)

    def to_dict(self) -> dict[str, Any]:
        return {k: t.tolist() for k, t in zip(("n", "mean", "m2", "m3", "m4"), self._fields(), strict=True)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Moments:
        return cls(*(torch.tensor(d[k], dtype=torch.float64) for k in ("n", "mean", "m2", "m3", "m4")))

    def summary(self) -> dict[str, float]:
        """mean, ddof=1 std, skew and excess kurtosis, as numpy/scipy define them."""
        n, m2 = float(self.n), float(self.m2)
        var = m2 / (n - 1) if n > 1 else math.nan
        pop = m2 / n if n > 0 else math.nan
        return {
            "mean": float(self.mean),
            "std": math.sqrt(var) if var == var else math.nan,
            "skew": float(self.m3) / n / pop**1.5 if pop > 0 else math.nan,
            "excess_kurtosis": float(self.m4) / n / pop**2 - 3 if pop > 0 else math.nan,
        }


class ImageMoments:
    """Welford co-moments of per-image (a_i, c_i) for the delta-method interval.

    a_i = mean(z - r), c_i = mean((z - r)^2) about a reference r (the first batch's
    mean) so nothing cancels; states with different r are rebased exactly on merge.
    """

    def __init__(self) -> None:
        self.ref: float | None = None
        self.n = 0
        self.mean = torch.zeros(2, dtype=torch.float64)
        self.comoment = torch.zeros(2, 2, dtype=torch.float64)

    def update(self, z: torch.Tensor) -> None:
        flat = z.double().reshape(z.shape[0], -1)
        if self.ref is None:
            self.ref = float(flat.mean())
        d = flat - self.ref
        ac = torch.stack([d.mean(1), (d * d).mean(1)], dim=1).cpu()
        other = ImageMoments()
        other.ref, other.n = self.ref, ac.shape[0]
        other.mean = ac.mean(0)
        dev = ac - other.mean
        other.comoment = dev.T @ dev
        self.merge(other)

    def rebased(self, ref: float) -> ImageMoments:
        """The same data about another reference: (a, c) -> (a + δ, c + 2δa + δ²)."""
        out = ImageMoments()
        out.ref, out.n = ref, self.n
        if self.ref is None:
            return out
        delta = self.ref - ref
        jac = torch.tensor([[1.0, 0.0], [2 * delta, 1.0]], dtype=torch.float64)
        a, c = self.mean.tolist()
        out.mean = torch.tensor([a + delta, c + 2 * delta * a + delta * delta], dtype=torch.float64)
        out.comoment = jac @ self.comoment @ jac.T
        return out

    def merge(self, other: ImageMoments) -> None:
        if other.n == 0:
            return
        if self.n == 0:
            self.ref, self.n = other.ref, other.n
            self.mean, self.comoment = other.mean.clone(), other.comoment.clone()
            return
        o = other.rebased(self.ref) if other.ref != self.ref else other
        n = self.n + o.n
        delta = o.mean - self.mean
        self.comoment = self.comoment + o.comoment + torch.outer(delta, delta) * self.n * o.n / n
        self.mean = self.mean + delta * o.n / n
        self.n = n

    def factor_sd(self) -> float:
        """Delta-method standard error of f = var^(-1/2), images as the unit."""
        if self.n < 2:
            return math.nan
        a, c = self.mean.tolist()
        var = c - a * a
        if var <= 0:
            return math.nan
        grad = torch.tensor([a * var**-1.5, -0.5 * var**-1.5], dtype=torch.float64)
        sigma = self.comoment / (self.n - 1)
        return math.sqrt(max(float(grad @ sigma @ grad), 0.0) / self.n)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "n": self.n, "mean": self.mean.tolist(), "comoment": self.comoment.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageMoments:
        out = cls()
        out.ref, out.n = d["ref"], int(d["n"])
        out.mean = torch.tensor(d["mean"], dtype=torch.float64)
        out.comoment = torch.tensor(d["comoment"], dtype=torch.float64)
        return out


class LatentStats:
    """Everything one latent variable (e.g. the posterior mode) contributes to the result."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.moments = Moments.empty((channels,))
        self.images = ImageMoments()
        self.min = torch.full((channels,), math.inf, dtype=torch.float64)
        self.max = torch.full((channels,), -math.inf, dtype=torch.float64)

    @staticmethod
    def channel_rows(z: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (C, B*...): channels are dim 1, batch, time and space pooled."""
        return z.transpose(0, 1).reshape(z.shape[1], -1)

    def update(self, z: torch.Tensor) -> None:
        if z.ndim < 3 or z.shape[1] != self.channels:
            raise ValueError(f"expected latents (B, {self.channels}, ...), got {tuple(z.shape)}")
        rows = self.channel_rows(z.double())
        batch = Moments.of(rows)
        self.moments = self.moments.merge(Moments(*(t.cpu() for t in batch._fields())))
        self.min = torch.minimum(self.min, rows.amin(1).cpu())
        self.max = torch.maximum(self.max, rows.amax(1).cpu())
        self.images.update(z)

    def merge(self, other: LatentStats) -> None:
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {other.channels}-channel stats into {self.channels}-channel stats")
        self.moments = self.moments.merge(other.moments)
        self.images.merge(other.images)
        self.min = torch.minimum(self.min, other.min)
        self.max = torch.maximum(self.max, other.max)

    @property
    def num_elements(self) -> int:
        return int(self.moments.n.sum())

    def summary(self) -> dict[str, Any]:
        """Global and per-channel numbers; the factor's 95 % interval by the delta method."""
        total = self.moments.total().summary()
        std = total["std"]
        factor = 1 / std if std > 0 else math.nan
        sd = self.images.factor_sd()
        n = self.moments.n
        per_std = torch.sqrt(self.moments.m2 / torch.clamp(n - 1, min=1))
        return {
            "scale_factor": factor,
            "scale_factor_ci95": [factor - Z95 * sd, factor + Z95 * sd],
            "std": std,
            "mean": total["mean"],
            "rms": math.sqrt(std**2 * (self.num_elements - 1) / self.num_elements + total["mean"] ** 2)
            if self.num_elements
            else math.nan,
            "skew": total["skew"],
            "excess_kurtosis": total["excess_kurtosis"],
            "min": float(self.min.min()),
            "max": float(self.max.max()),
            "num_images": self.images.n,
            "num_elements": self.num_elements,
            "per_channel": {"mean": self.moments.mean.tolist(), "std": per_std.tolist()},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "moments": self.moments.to_dict(),
            "images": self.images.to_dict(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentStats:
        out = cls(int(d["channels"]))
        out.moments = Moments.from_dict(d["moments"])
        out.images = ImageMoments.from_dict(d["images"])
        out.min = torch.tensor(d["min"], dtype=torch.float64)
        out.max = torch.tensor(d["max"], dtype=torch.float64)
        return out


class PosteriorStats:
    """The three estimates one encode pass yields: mode (μ), sample (μ + σε), expected_sample.

    expected_sample is exact in expectation over ε: E[s²] of μ + σε with ddof=1 is
    Var(μ) + mean(σ²), so it only needs the mode's moments plus per-channel mean(σ²).
    Deterministic encoders (σ is None) only have the mode.
    """

    def __init__(self, channels: int, stochastic: bool) -> None:
        self.channels = channels
        self.stochastic = stochastic
        self.mode = LatentStats(channels)
        self.sample = LatentStats(channels) if stochastic else None
        self.sigma2 = Moments.empty((channels,)) if stochastic else None

    def update(self, mu: torch.Tensor, sigma: torch.Tensor | None, eps: torch.Tensor | None) -> None:
        self.mode.update(mu)
        if self.stochastic:
            if sigma is None or eps is None:
                raise ValueError("a stochastic posterior needs sigma and eps")
            self.sample.update(mu.double() + sigma.double() * eps.double())
            rows = LatentStats.channel_rows(sigma.double() ** 2)
            self.sigma2 = self.sigma2.merge(Moments(*(t.cpu() for t in Moments.of(rows)._fields())))

    def merge(self, other: PosteriorStats) -> None:
        if other.stochastic != self.stochastic:
            raise ValueError("cannot merge stochastic and deterministic statistics")
        self.mode.merge(other.mode)
        if self.stochastic:
            self.sample.merge(other.sample)
            self.sigma2 = self.sigma2.merge(other.sigma2)

    @property
    def num_images(self) -> int:
        return self.mode.images.n

    def expected_sample(self) -> dict[str, float]:
        mode = self.mode.summary()
        n = self.mode.num_elements
        mean_sigma2 = float((self.sigma2.mean * self.sigma2.n).sum()) / n if n else math.nan
        std = math.sqrt(mode["std"] ** 2 + mean_sigma2)
        return {"scale_factor": 1 / std, "std": std, "mean": mode["mean"]}

    def estimates(self) -> dict[str, dict[str, Any]]:
        out = {"mode": self.mode.summary()}
        if self.stochastic:
            out["sample"] = self.sample.summary()
            out["expected_sample"] = self.expected_sample()
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"channels": self.channels, "stochastic": self.stochastic, "mode": self.mode.to_dict()}
        if self.stochastic:
            d["sample"] = self.sample.to_dict()
            d["sigma2"] = self.sigma2.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PosteriorStats:
        out = cls(int(d["channels"]), bool(d["stochastic"]))
        out.mode = LatentStats.from_dict(d["mode"])
        if out.stochastic:
            out.sample = LatentStats.from_dict(d["sample"])
            out.sigma2 = Moments.from_dict(d["sigma2"])
        return out
