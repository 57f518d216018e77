"""The 95 % interval of the factor f = 1/std by the delta method, units (not elements) as the draws.

Elements within one unit are correlated, so their count says little about the error; the unit-level
means a_i = mean(z - r) and c_i = mean((z - r)²) are independent draws, and f is a smooth function of
their means: with A = mean(a), C = mean(c), var = C - A², f = var^(-1/2),
∇f = (A·var^(-3/2), -½·var^(-3/2)) and Var(f) ≈ ∇fᵀ Σ ∇f / n, Σ the sample covariance of (a_i, c_i).
"""

from __future__ import annotations

import math

import torch

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def factor_sd(n: int, mean: torch.Tensor, comoment: torch.Tensor, population: int | None = None) -> float:
    """Delta-method standard error of f = var^(-1/2) from n units' mean (a, c) and co-moment sums.

    Without `population` the units are draws from an unlimited distribution (the factor "for data
    like these"). With it they are a random subset, drawn without replacement, of `population`
    units, and the error is that of the full-data value: the variance shrinks by the finite-population
    correction (N - n) / (N - 1), to 0 when every unit was seen.
    """
    if n < 2:
        return math.nan
    a, c = mean.tolist()
    var = c - a * a
    if var <= 0:
        return math.nan
    grad = torch.tensor([a * var**-1.5, -0.5 * var**-1.5], dtype=torch.float64)
    sigma = comoment / (n - 1)
    fpc = 1.0 if population is None else max(population - n, 0) / max(population - 1, 1)
    return math.sqrt(max(float(grad @ sigma @ grad), 0.0) * fpc / n)
