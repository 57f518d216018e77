"""The posterior rules: which latents one encode pass yields (mode μ, sample μ + σε, expected_sample)
and whose statistics each estimate is built from; and the noise ε each unit is given."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .latent import LatentStats
from .moments import Moments, rms
from .workspace import Workspace


def noise(keys: Sequence[int], shape: Sequence[int], seed: int) -> torch.Tensor:
    """ε for each unit from a generator seeded by (seed, its noise key): split-independent."""
    g = torch.Generator()
    out = torch.empty((len(keys), *shape))
    for k, key in enumerate(keys):
        g.manual_seed((seed * 1_000_003 + key) % (2**63))
        out[k] = torch.randn(shape, generator=g)
    return out


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
            self.sigma2 = self.sigma2.merge(sigma2.cpu())

    def merge(self, other: PosteriorStats) -> None:
        if other.stochastic != self.stochastic:
            raise ValueError("cannot merge stochastic and deterministic statistics")
        self.mode.merge(other.mode)
        if self.stochastic:
            self.sample.merge(other.sample)
            self.sigma2 = self.sigma2.merge(other.sigma2)

    @property
    def num_images(self) -> int:
        return self.mode.units.n

    def key(self, posterior: str) -> str:
        """The posterior actually reported: deterministic encoders only have the mode."""
        return posterior if self.stochastic else "mode"

    def realised_key(self, key: str) -> str:
        """The posterior rule, part 1: which latents were actually seen; expected_sample's are the sample's."""
        return "mode" if self.key(key) == "mode" else "sample"

    def base_key(self, key: str) -> str:
        """The posterior rule, part 2: whose moments a posterior's numbers are built from. expected_sample
        is exact from the mode's moments plus mean(σ²), and takes the mode's per-unit interval."""
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
        return {"mean": mean, "std": std, "rms": rms(std, mean, int(n))}

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
