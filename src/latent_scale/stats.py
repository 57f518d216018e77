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


class Workspace:
    """Named buffers that one update after another reuses. On CPU a fresh batch-sized temporary is
    typically handed back to the OS when freed and page-faulted in again by the next update, which
    cost more than the arithmetic done in it (scripts/bench.py, statistics rows)."""

    def __init__(self) -> None:
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A contiguous (uninitialised) tensor; the buffer only grows, so smaller batches reuse it."""
        n = math.prod(shape)
        buf = self._flat.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self._flat[name] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)

    def rows(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B·C, values): one row per image and channel, a view of a contiguous z
        (the common case), else a contiguous copy into a buffer."""
        shape = (z.shape[0] * z.shape[1], z[0, 0].numel())
        try:
            return z.view(shape)
        except RuntimeError:
            return self.get("rows", tuple(z.shape), z.dtype, z.device).copy_(z).view(shape)


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
        n, mean, m2, m3, m4 = (t.view(groups, -1) for t in self._fields())
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
            out = out.merge(Moments(*(t[i] for t in self._fields())))
        return out

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.n, self.mean, self.m2, self.m3, self.m4)

    def to_dict(self) -> dict[str, Any]:
        return {k: t.tolist() for k, t in zip(("n", "mean", "m2", "m3", "m4"), self._fields(), strict=True)}

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


def histogram_edges(unit: float, bins: int = 256, reach: float = 64.0, core: float = 0.25) -> torch.Tensor:
    """Fixed bin edges unit·core·sinh(t), t evenly spaced: fine near 0, wide in the tails.

    They depend on `unit` alone (the latent std the model config implies), never on the data, so
    shards, resumed runs and merges bin identically. They reach ±`reach` units, so a config
    factor that is off by a large factor still leaves a usable histogram (bins are ~5 % of a
    unit wide at ±1 unit, ~15 % at ±3).
    """
    t = math.asinh(reach / core)
    return unit * core * torch.sinh(torch.linspace(-t, t, bins + 1, dtype=torch.float64))


class Histogram:
    """Per-channel counts over fixed edges; slot 0 counts values below edges[0], the last slot
    values at or above edges[-1], slot k the bin [edges[k-1], edges[k]). Counts add exactly."""

    def __init__(self, edges: torch.Tensor, channels: int) -> None:
        self.edges = edges.to(torch.float64).cpu()
        self.counts = torch.zeros((channels, len(edges) + 1), dtype=torch.int64)
        self._lookup: dict[tuple[torch.device, torch.dtype], _SlotLookup] = {}

    def update(self, rows: torch.Tensor, work: Workspace | None = None) -> None:
        """rows: (B·C, values), row r holding channel r % C, on any device."""
        work = work or Workspace()
        x = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()  # exact
        idx = self.slots(x, work)
        channel = torch.arange(x.shape[0], device=x.device, dtype=idx.dtype) % self.counts.shape[0]
        idx += channel[:, None] * self.counts.shape[1]
        counts = torch.bincount(idx.view(-1), minlength=self.counts.numel())
        self.counts += counts.view_as(self.counts).cpu()

    def slots(self, x: torch.Tensor, work: Workspace | None = None) -> torch.Tensor:
        """torch.bucketize(x, edges, right=True) for float32/float64 x, as a contiguous int32 tensor:
        the same integers, 15x cheaper (see _SlotLookup)."""
        key = (x.device, x.dtype)
        if key not in self._lookup:
            self._lookup[key] = _SlotLookup(self.edges, x.dtype, x.device)
        return self._lookup[key](x, work or Workspace())

    def merge(self, other: Histogram) -> None:
        if not torch.equal(self.edges, other.edges):
            raise ValueError("cannot merge histograms with different bin edges (different model configs?)")
        self.counts += other.counts

    def count_beyond(self, t: float, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Per channel, how many values have |x| > t: exact at bin edges, linear within a bin.

        lo/hi (per-channel min/max) close the open-ended outer slots.
        """
        out = torch.zeros(self.counts.shape[0], dtype=torch.float64)
        for c, counts in enumerate(self.counts.to(torch.float64)):
            xs = torch.cat([torch.minimum(lo[c], self.edges[:1]), self.edges, torch.maximum(hi[c], self.edges[-1:])])
            cum = torch.cat([torch.zeros(1, dtype=torch.float64), counts.cumsum(0)])
            out[c] = cum[-1] - _interp(t, xs, cum) + _interp(-t, xs, cum)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        out = cls(torch.tensor(d["edges"], dtype=torch.float64), len(d["counts"]))
        out.counts = torch.tensor(d["counts"], dtype=torch.int64)
        return out


class _SlotLookup:
    """Exact bucketize as two table lookups, without a binary search per value (35 ns/value on CPU,
    mostly mispredicted branches).

    x >= edge is decided in x's own dtype against the edge rounded up into it (the same answer for
    every x of that dtype). cell(x) = trunc(clamp((x - lo) · inv)) is monotone in x, since every step
    rounds monotonically, so an edge whose cell is below x's is <= x and one whose cell is above is
    > x; the grid is fine enough that a cell holds at most one edge, which x is compared with. Cells
    are found by running cell() itself on the edges, so the answer equals bucketize's whatever the
    rounding. Where a cell would hold two edges (equal edges, or a grid too coarse), and for NaN,
    bucketize itself is used."""

    MAX_CELLS = 1 << 16

    def __init__(self, edges: torch.Tensor, dtype: torch.dtype, device: torch.device) -> None:
        self.edges = _round_up(edges, dtype).to(device)
        span = float(self.edges[-1].double() - self.edges[0].double()) if len(edges) else 0.0
        gap = float(torch.diff(self.edges.double()).min()) if len(edges) > 1 else 0.0
        self.exact = gap > 0 and math.isfinite(span)
        if not self.exact:
            return
        self.cells = math.ceil(min(self.MAX_CELLS, 2 * span / gap))
        # lo and inv exact in x's dtype, so that a kernel computing in wider precision (a scalar tail, a
        # GPU) rounds each step to the same value as a narrow vectorised one
        self.lo, self.inv = float(self.edges[0]), float(torch.tensor(self.cells / span, dtype=dtype))
        cell = self.cell(self.edges).long()
        self.exact = int(torch.bincount(cell, minlength=self.cells).max()) <= 1
        self.base = torch.searchsorted(cell, torch.arange(self.cells, device=device), out_int32=True)  # below
        self.edge_in = torch.full((self.cells,), math.nan, dtype=dtype, device=device).index_put_((cell,), self.edges)

    def cell(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Each value's grid cell, as a float of x's dtype (NaN stays NaN)."""
        return torch.sub(x, self.lo, out=out).mul_(self.inv).clamp_(0, self.cells - 1)

    def __call__(self, x: torch.Tensor, work: Workspace) -> torch.Tensor:
        shape = tuple(x.shape)
        out = work.get("slots", shape, torch.int32, x.device)  # int32 halves the traffic of int64
        if self.exact:
            cell = self.cell(x, work.get("cell", shape, x.dtype, x.device))
            if math.isfinite(float(cell.sum())):  # no NaN: its cell would be no integer
                index = work.get("index", shape, torch.int32, x.device).copy_(cell).view(-1)
                edge = torch.index_select(self.edge_in, 0, index, out=cell.view(-1)).view(shape)
                above = torch.ge(x, edge, out=work.get("above", shape, torch.bool, x.device))
                return torch.index_select(self.base, 0, index, out=out.view(-1)).view(shape).add_(above)
        return torch.bucketize(x, self.edges, right=True, out_int32=True, out=out)


def _round_up(edges: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Each float64 edge e as the least value t of `dtype` with t >= e, so that x >= e <=> x >= t."""
    t = edges.to(dtype)
    return torch.where(t.double() < edges, torch.nextafter(t, torch.tensor(math.inf, dtype=dtype)), t)


def _interp(x: float, xs: torch.Tensor, ys: torch.Tensor) -> float:
    """Piecewise-linear y(x) through (xs, ys), xs non-decreasing; flat outside."""
    if x <= xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1])
    k = int(torch.searchsorted(xs, torch.tensor([x], dtype=xs.dtype), right=True)) - 1
    width = float(xs[k + 1] - xs[k])
    frac = (x - float(xs[k])) / width if width > 0 else 1.0
    return float(ys[k] + frac * (ys[k + 1] - ys[k]))


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

    def update(self, per: Moments, images: int) -> None:
        """per: the moments of each (image, channel) row, laid out (images, channels). An image's a and c
        follow from its channels' means and M2 exactly, without another pass over its values."""
        n, mean, m2 = (t.view(images, -1) for t in (per.n, per.mean, per.m2))
        if self.ref is None:
            self.ref = float((n * mean).sum() / n.sum())
        d = mean - self.ref
        size = n.sum(1)
        ac = torch.stack([(n * d).sum(1) / size, (m2 + n * d * d).sum(1) / size], dim=1).cpu()
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

    def factor_sd(self, population: int | None = None) -> float:
        """Delta-method standard error of f = var^(-1/2), images as the unit.

        Without `population` the images are draws from an unlimited image distribution (the
        factor "for images like these"). With it they are a random subset, drawn without
        replacement, of `population` images, and the error is that of the full-data value:
        the variance shrinks by the finite-population correction (N - n) / (N - 1), to 0 when
        every image was seen.
        """
        if self.n < 2:
            return math.nan
        a, c = self.mean.tolist()
        var = c - a * a
        if var <= 0:
            return math.nan
        grad = torch.tensor([a * var**-1.5, -0.5 * var**-1.5], dtype=torch.float64)
        sigma = self.comoment / (self.n - 1)
        fpc = 1.0 if population is None else max(population - self.n, 0) / max(population - 1, 1)
        return math.sqrt(max(float(grad @ sigma @ grad), 0.0) * fpc / self.n)

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

    def __init__(self, channels: int, edges: torch.Tensor | None = None, work: Workspace | None = None) -> None:
        self.channels = channels
        self.work = work or Workspace()
        self.moments = Moments.empty((channels,))
        self.images = ImageMoments()
        self.min = torch.full((channels,), math.inf, dtype=torch.float64)
        self.max = torch.full((channels,), -math.inf, dtype=torch.float64)
        self.histogram = None if edges is None else Histogram(edges, channels)

    def update(self, z: torch.Tensor) -> None:
        if z.ndim < 3 or z.shape[1] != self.channels:
            raise ValueError(f"expected latents (B, {self.channels}, ...), got {tuple(z.shape)}")
        rows = self.work.rows(z)
        per = Moments.of(rows, self.work)
        self.moments = self.moments.merge(Moments(*(t.cpu() for t in per.pooled(z.shape[0])._fields())))
        self.min = torch.minimum(self.min, rows.amin(1).view(z.shape[:2]).amin(0).double().cpu())
        self.max = torch.maximum(self.max, rows.amax(1).view(z.shape[:2]).amax(0).double().cpu())
        if self.histogram is not None:
            self.histogram.update(rows, self.work)
        self.images.update(per, z.shape[0])

    def merge(self, other: LatentStats) -> None:
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {other.channels}-channel stats into {self.channels}-channel stats")
        self.moments = self.moments.merge(other.moments)
        self.images.merge(other.images)
        self.min = torch.minimum(self.min, other.min)
        self.max = torch.maximum(self.max, other.max)
        if self.histogram is not None and other.histogram is not None:
            self.histogram.merge(other.histogram)
        else:  # a state saved before histograms existed: the merged counts would be partial
            self.histogram = None

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
        which a random subset of it estimates (see ImageMoments.factor_sd).
        """
        total = self.moments.total().summary()
        std = total["std"]
        factor, half = self.factor_interval()
        per = self.moments.standardised()
        out = {
            "scale_factor": factor,
            "scale_factor_ci95": [factor - half, factor + half],
            "std": std,
            "mean": total["mean"],
            "rms": _rms(std, total["mean"], self.num_elements),
            "skew": total["skew"],
            "excess_kurtosis": total["excess_kurtosis"],
            "min": float(self.min.min()),
            "max": float(self.max.max()),
            "beyond_1": self.beyond(factor, 1.0),
            "beyond_3": self.beyond(factor, 3.0),
            "num_images": self.images.n,
            "num_elements": self.num_elements,
            "per_channel": {"mean": self.moments.mean.tolist(), "std": per["std"].tolist(),
                            "min": self.min.tolist(), "max": self.max.tolist(),
                            "skew": per["skew"].tolist(), "excess_kurtosis": per["excess_kurtosis"].tolist()},
        }
        if population is not None:
            _, half_data = self.factor_interval(population)
            out["scale_factor_ci95_dataset"] = [factor - half_data, factor + half_data]
        return out

    def factor_interval(self, population: int | None = None) -> tuple[float, float]:
        """The factor 1/std and its 95 % half-width: all the running check after each batch needs."""
        std = self.moments.total().summary()["std"]
        return (1 / std if std > 0 else math.nan), Z95 * self.images.factor_sd(population)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "channels": self.channels,
            "moments": self.moments.to_dict(),
            "images": self.images.to_dict(),
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
        out.images = ImageMoments.from_dict(d["images"])
        out.min = torch.tensor(d["min"], dtype=torch.float64)
        out.max = torch.tensor(d["max"], dtype=torch.float64)
        out.histogram = Histogram.from_dict(d["histogram"]) if d.get("histogram") else None
        return out


def _rms(std: float, mean: float, n: int) -> float:
    """Uncentred root mean square from the ddof=1 std and the mean."""
    return math.sqrt(std**2 * (n - 1) / n + mean**2) if n else math.nan


class PosteriorStats:
    """The three estimates one encode pass yields: mode (μ), sample (μ + σε), expected_sample.

    expected_sample is exact in expectation over ε: E[s²] of μ + σε with ddof=1 is
    Var(μ) + mean(σ²), so it only needs the mode's moments plus per-channel mean(σ²).
    Deterministic encoders (σ is None) only have the mode.
    """

    def __init__(self, channels: int, stochastic: bool, edges: torch.Tensor | None = None) -> None:
        self.channels = channels
        self.stochastic = stochastic
        self.work = Workspace()  # one set of buffers for the three, which update one after another
        self.mode = LatentStats(channels, edges, self.work)
        self.sample = LatentStats(channels, edges, self.work) if stochastic else None
        self.sigma2 = Moments.empty((channels,)) if stochastic else None

    def update(self, mu: torch.Tensor, sigma: torch.Tensor | None, eps: torch.Tensor | None) -> None:
        self.mode.update(mu)
        if self.stochastic:
            if sigma is None or eps is None:
                raise ValueError("a stochastic posterior needs sigma and eps")
            mu, sigma, eps = mu.double(), sigma.double(), eps.double()
            sample = self.work.get("sample", tuple(mu.shape), torch.float64, mu.device)
            self.sample.update(torch.mul(sigma, eps, out=sample).add_(mu))
            sq = torch.mul(sigma, sigma, out=self.work.get("sigma2", tuple(mu.shape), torch.float64, mu.device))
            sigma2 = Moments.of(self.work.rows(sq), self.work).pooled(sq.shape[0])
            self.sigma2 = self.sigma2.merge(Moments(*(t.cpu() for t in sigma2._fields())))

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

    def key(self, posterior: str) -> str:
        """The posterior actually reported: deterministic encoders only have the mode."""
        return posterior if self.stochastic else "mode"

    def realised_key(self, key: str) -> str:
        """The posterior rule, part 1: which latents were actually seen; expected_sample's are the sample's."""
        return "mode" if self.key(key) == "mode" else "sample"

    def base_key(self, key: str) -> str:
        """The posterior rule, part 2: whose moments a posterior's numbers are built from. expected_sample
        is exact from the mode's moments plus mean(σ²), and takes the mode's per-image interval."""
        return "mode" if self.key(key) in ("mode", "expected_sample") else "sample"

    def realised(self, key: str) -> LatentStats:
        return getattr(self, self.realised_key(key))

    def base(self, key: str) -> LatentStats:
        return getattr(self, self.base_key(key))

    def interval(self, key: str) -> tuple[float, float]:
        """Running factor and 95 % half-width for a posterior: all the check after each batch needs."""
        return self.base(key).factor_interval()

    def normalised(self, key: str, shift: torch.Tensor | float = 0.0,
                   scale: torch.Tensor | float = 1.0) -> dict[str, float]:
        """mean, ddof=1 std and rms over all elements of (z - shift) * scale, shift/scale per channel.

        Exact from the per-channel moments; for expected_sample exact in expectation over ε:
        E[M2] gains (1 - 1/N)·Σ scale²·σ² over the mode's M2.
        """
        moments = self.base(key).moments.affine(shift, scale)
        total = moments.total()
        n = float(total.n)
        m2 = float(total.m2)
        if key == "expected_sample":
            sum_sigma2 = self.sigma2.mean * self.sigma2.n * torch.as_tensor(scale, dtype=torch.float64) ** 2
            m2 += (1 - 1 / n) * float(sum_sigma2.sum()) if n else 0.0
        std = math.sqrt(m2 / (n - 1)) if n > 1 else math.nan
        mean = float(total.mean)
        return {"mean": mean, "std": std, "rms": _rms(std, mean, int(n))}

    def expected_sample(self) -> dict[str, Any]:
        """Global and per-channel numbers of μ + σε in expectation (per channel: Var(μ_c) + mean(σ_c²))."""
        out = self.normalised("expected_sample")
        m = self.mode.moments
        per_var = m.m2 / torch.clamp(m.n - 1, min=1) + self.sigma2.mean
        out["scale_factor"] = 1 / out["std"]
        out["per_channel"] = {"mean": m.mean.tolist(), "std": torch.sqrt(per_var).tolist()}
        return out

    def estimates(self, population: int | None = None) -> dict[str, dict[str, Any]]:
        out = {"mode": self.mode.summary(population)}
        if self.stochastic:
            out["sample"] = self.sample.summary(population)
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
        out.mode = LatentStats.from_dict(d["mode"], out.work)
        if out.stochastic:
            out.sample = LatentStats.from_dict(d["sample"], out.work)
            out.sigma2 = Moments.from_dict(d["sigma2"])
        return out
