"""Central moments in float64: per-channel sums merged exactly, and per-unit co-moments for the interval.

Never raw power sums, which cancel catastrophically when |mean| >> std: moments are kept about the
mean and merged with Chan/Pébay's pairwise formulas, so any split and order of the data gives the
same numbers to float64 round-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .interval import factor_sd
from .workspace import Workspace


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
    def of(cls, x: torch.Tensor, work: Workspace | None = None) -> Moments:
        """Two-pass moments of each row of x (groups, values) in float64, whatever x's float dtype."""
        work = work or Workspace()
        mean = x.mean(dim=1, dtype=torch.float64)
        d = torch.sub(x, mean[:, None], out=work.get("d", tuple(x.shape), torch.float64, x.device))
        d2 = torch.mul(d, d, out=work.get("d2", tuple(x.shape), torch.float64, x.device))
        n = torch.full_like(mean, x.shape[1])
        m2 = d2.sum(1)
        m3 = torch.mul(d2, d, out=d).sum(1)
        return cls(n, mean, m2, m3, d2.mul_(d2).sum(1))

    def pooled(self, groups: int) -> Moments:
        """Rows laid out (groups, k) merged over the groups into k, in one step: about the pooled mean,
        each group's central sums gain the powers of its offset δ (the k-group form of Pébay's update)."""
        n, mean, m2, m3, m4 = (t.view(groups, -1) for t in self.fields())
        total = n.sum(0)
        mu = (n * mean).sum(0) / total
        d = mean - mu
        nd2 = n * d * d
        return Moments(total, mu, (m2 + nd2).sum(0), (m3 + d * (3 * m2 + nd2)).sum(0),
                       (m4 + d * (4 * m3 + d * (6 * m2 + nd2))).sum(0))

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
            out = out.merge(Moments(*(t[i] for t in self.fields())))
        return out

    def fields(self) -> tuple[torch.Tensor, ...]:
        return (self.n, self.mean, self.m2, self.m3, self.m4)

    def cpu(self) -> Moments:
        return Moments(*(t.cpu() for t in self.fields()))

    def to_dict(self) -> dict[str, Any]:
        return {k: t.tolist() for k, t in zip(("n", "mean", "m2", "m3", "m4"), self.fields(), strict=True)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Moments:
        return cls(*(torch.tensor(d[k], dtype=torch.float64) for k in ("n", "mean", "m2", "m3", "m4")))

    def affine(self, shift: torch.Tensor | float, scale: torch.Tensor | float) -> Moments:
        """Moments of (x - shift) * scale per group, exactly: central sums only pick up powers of scale."""
        return Moments(self.n, (self.mean - shift) * scale, self.m2 * scale**2, self.m3 * scale**3,
                       self.m4 * scale**4)

    def standardised(self) -> dict[str, torch.Tensor]:
        """Per group: mean, ddof=1 std, skew and excess kurtosis as numpy/scipy define them (nan if undefined)."""
        nan = torch.full_like(self.n, math.nan)
        var = torch.where(self.n > 1, self.m2 / torch.clamp(self.n - 1, min=1), nan)
        pop = torch.where(self.n > 0, self.m2 / torch.clamp(self.n, min=1), nan)
        ok = pop > 0
        safe = torch.where(ok, pop, torch.ones_like(pop))
        n = torch.clamp(self.n, min=1)
        return {
            "mean": torch.where(self.n > 0, self.mean, nan),
            "std": torch.sqrt(var),
            "skew": torch.where(ok, self.m3 / n / safe**1.5, nan),
            "excess_kurtosis": torch.where(ok, self.m4 / n / safe**2 - 3, nan),
        }

    def summary(self) -> dict[str, float]:
        """mean, ddof=1 std, skew and excess kurtosis of a single group, as floats."""
        return {k: float(v) for k, v in self.standardised().items()}


def rms(std: float, mean: float, n: int) -> float:
    """Uncentred root mean square from the ddof=1 std and the mean."""
    return math.sqrt(std**2 * (n - 1) / n + mean**2) if n else math.nan


class UnitMoments:
    """Welford co-moments of per-unit (a_i, c_i) for the delta-method interval: units (images, clips,
    latents), not their correlated elements, are the independent draws.

    a_i = mean(z - r), c_i = mean((z - r)^2) about a reference r (the first batch's
    mean) so nothing cancels; states with different r are rebased exactly on merge.
    """

    def __init__(self) -> None:
        self.ref: float | None = None
        self.n = 0
        self.mean = torch.zeros(2, dtype=torch.float64)
        self.comoment = torch.zeros(2, 2, dtype=torch.float64)

    def update(self, per: Moments, units: int) -> None:
        """per: the moments of each (unit, channel) row, laid out (units, channels). A unit's a and c
        follow from its channels' means and M2 exactly, without another pass over its values."""
        n, mean, m2 = (t.view(units, -1) for t in (per.n, per.mean, per.m2))
        if self.ref is None:
            self.ref = float((n * mean).sum() / n.sum())
        d = mean - self.ref
        size = n.sum(1)
        ac = torch.stack([(n * d).sum(1) / size, (m2 + n * d * d).sum(1) / size], dim=1).cpu()
        other = UnitMoments()
        other.ref, other.n = self.ref, ac.shape[0]
        other.mean = ac.mean(0)
        dev = ac - other.mean
        other.comoment = dev.T @ dev
        self.merge(other)

    def rebased(self, ref: float) -> UnitMoments:
        """The same data about another reference: (a, c) -> (a + δ, c + 2δa + δ²)."""
        out = UnitMoments()
        out.ref, out.n = ref, self.n
        if self.ref is None:
            return out
        delta = self.ref - ref
        jac = torch.tensor([[1.0, 0.0], [2 * delta, 1.0]], dtype=torch.float64)
        a, c = self.mean.tolist()
        out.mean = torch.tensor([a + delta, c + 2 * delta * a + delta * delta], dtype=torch.float64)
        out.comoment = jac @ self.comoment @ jac.T
        return out

    def merge(self, other: UnitMoments) -> None:
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

    def factor_sd(self, population: int | None = None) -> float:
        """Standard error of the factor 1/std, units as the independent draws (see interval.factor_sd)."""
        return factor_sd(self.n, self.mean, self.comoment, population)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "n": self.n, "mean": self.mean.tolist(), "comoment": self.comoment.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitMoments:
        out = cls()
        out.ref, out.n = d["ref"], int(d["n"])
        out.mean = torch.tensor(d["mean"], dtype=torch.float64)
        out.comoment = torch.tensor(d["comoment"], dtype=torch.float64)
        return out
