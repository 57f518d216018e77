"""A result's numbers recomputed from its sealed state in plain Python, and the check that they are
the ones the result states.

Every command that reads a result (apply, compare, plot, merge) checks its headline against its
state first; doing it with the standard library's floats (IEEE float64, as the statistics keep
them) instead of torch lets `apply --dry-run` and a wrong argument answer before torch loads. The
formulas are those of `stats` (moments, latent, posterior, interval, histogram), written for the
per-channel moments a state holds: channels pooled by Chan's k-group formula with `math.fsum`.
tests/test_schema.py checks that both give the same numbers on a real result.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

from ..errors import InputError
from . import keys
from .parse import DAMAGED, to_json
from .result import Result
from .state import Histogram, Latent, Moments, State

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile (stats.interval.Z95)
DISTRIBUTION = ("min", "max", "skew", "excess_kurtosis", "beyond_1", "beyond_3")
ESTIMATE = ("scale_factor", "std", "mean")
NAN = math.nan


def reported(posterior: str, stochastic: bool) -> str:
    """The posterior rules of stats.PosteriorStats: deterministic encoders only have the mode."""
    return posterior if stochastic else "mode"


def realised_key(posterior: str, stochastic: bool) -> str:
    """Which latents a posterior saw: expected_sample's are the sample's."""
    return "mode" if reported(posterior, stochastic) == "mode" else "sample"


def base_key(posterior: str, stochastic: bool) -> str:
    """Whose moments a posterior's numbers come from: expected_sample's from the mode's (and σ²)."""
    return "mode" if reported(posterior, stochastic) in ("mode", "expected_sample") else "sample"


def pooled(m: Moments) -> tuple[int, float, float, float, float]:
    """(n, mean, M2, M3, M4) over all channels: each channel's central sums about the pooled mean."""
    n = sum(m.n)
    mean = math.fsum(k * x for k, x in zip(m.n, m.mean, strict=True)) / n if n else 0.0
    d = [x - mean for x in m.mean]
    nd2 = [k * e * e for k, e in zip(m.n, d, strict=True)]
    rows = list(zip(d, nd2, m.m2, m.m3, m.m4, strict=True))
    return (n, mean, math.fsum(m2 + a for _, a, m2, _, _ in rows),
            math.fsum(m3 + e * (3 * m2 + a) for e, a, m2, m3, _ in rows),
            math.fsum(m4 + e * (4 * m3 + e * (6 * m2 + a)) for e, a, m2, m3, m4 in rows))


def standardised(n: int, mean: float, m2: float, m3: float, m4: float) -> dict[str, float]:
    """mean, ddof=1 std, skew and excess kurtosis of one group (NaN where undefined), as stats defines them."""
    pop = m2 / n if n > 0 else NAN
    ok = pop > 0
    return {"mean": mean if n > 0 else NAN, "std": math.sqrt(m2 / (n - 1)) if n > 1 else NAN,
            "skew": m3 / n / pop**1.5 if ok else NAN, "excess_kurtosis": m4 / n / pop**2 - 3 if ok else NAN}


def rms(std: float, mean: float, n: int) -> float:
    """Uncentred root mean square from the ddof=1 std and the mean."""
    return math.sqrt(std**2 * (n - 1) / n + mean**2) if n else NAN


def factor_sd(latent: Latent, population: int | None) -> float:
    """Delta-method standard error of 1/std, units as the draws (stats.interval.factor_sd)."""
    units = latent.images
    if units.n < 2:
        return NAN
    a, c = units.mean
    var = c - a * a
    if var <= 0:
        return NAN
    g = (a * var**-1.5, -0.5 * var**-1.5)
    s = [[x / (units.n - 1) for x in row] for row in units.comoment]
    q = sum(sum(g[i] * s[i][j] for i in range(2)) * g[j] for j in range(2))
    fpc = 1.0 if population is None else max(population - units.n, 0) / max(population - 1, 1)
    return math.sqrt(max(q, 0.0) * fpc / units.n)


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear y(x) through (xs, ys), xs non-decreasing; flat outside."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    k = bisect_right(xs, x) - 1
    width = xs[k + 1] - xs[k]
    frac = (x - xs[k]) / width if width > 0 else 1.0
    return ys[k] + frac * (ys[k + 1] - ys[k])


def count_beyond(h: Histogram, t: float, lo: list[float], hi: list[float]) -> float:
    """How many values have |x| > t, over all channels: exact at bin edges, linear within a bin."""
    out = []
    for c, counts in enumerate(h.counts):
        xs = [min(lo[c], h.edges[0]), *h.edges, max(hi[c], h.edges[-1])]
        cum = [0.0]
        for k in counts:
            cum.append(cum[-1] + float(k))
        out.append(cum[-1] - _interp(t, xs, cum) + _interp(-t, xs, cum))
    return math.fsum(out)


def summary(latent: Latent, population: int | None) -> dict[str, Any]:
    """LatentStats.summary: global and per-channel numbers and the factor's 95 % interval."""
    m = latent.moments
    n = sum(m.n)
    total = standardised(*pooled(m))
    std = total["std"]
    factor = 1 / std if std > 0 else NAN
    half = Z95 * factor_sd(latent, None)
    lo = [math.inf if x is None else x for x in latent.min]
    hi = [-math.inf if x is None else x for x in latent.max]
    per = [standardised(*row) for row in zip(m.n, m.mean, m.m2, m.m3, m.m4, strict=True)]

    def beyond(k: float) -> float | None:
        return count_beyond(latent.histogram, k / factor, lo, hi) / n if factor > 0 and n else None

    out = {
        "scale_factor": factor, "ci95": [factor - half, factor + half], "std": std,
        "mean": total["mean"], "rms": rms(std, total["mean"], n), "skew": total["skew"],
        "excess_kurtosis": total["excess_kurtosis"], "min": min(lo), "max": max(hi),
        "beyond_1": beyond(1.0), "beyond_3": beyond(3.0), "units": latent.images.n, "elements": n,
        "per_channel": {"mean": list(m.mean), "std": [p["std"] for p in per], "min": lo, "max": hi,
                        "skew": [p["skew"] for p in per], "excess_kurtosis": [p["excess_kurtosis"] for p in per]},
    }
    if population is not None:
        half_data = Z95 * factor_sd(latent, population)
        out["ci95_dataset"] = [factor - half_data, factor + half_data]
    return out


def expected_sample(state: State) -> dict[str, Any]:
    """μ + σε in expectation over ε: the mode's moments plus mean(σ²) (PosteriorStats.expected_sample)."""
    m, s2 = state.mode.moments, state.sigma2
    n, mean, m2, _, _ = pooled(m)
    if n:
        m2 += (1 - 1 / n) * math.fsum(x * k for x, k in zip(s2.mean, s2.n, strict=True))
    std = math.sqrt(m2 / (n - 1)) if n > 1 else NAN
    per_std = [math.sqrt(v / max(k - 1, 1) + x) for k, v, x in zip(m.n, m.m2, s2.mean, strict=True)]
    return {"mean": mean, "std": std, "rms": rms(std, mean, n), "scale_factor": 1 / std if std > 0 else NAN,
            "per_channel": {"mean": list(m.mean), "std": per_std}}


def estimates(state: State, population: int | None = None) -> dict[str, dict[str, Any]]:
    """PosteriorStats.estimates: every posterior the state has, by name."""
    out = {"mode": summary(state.mode, population)}
    if state.stochastic:
        out["sample"] = summary(state.sample, population)
        out["expected_sample"] = expected_sample(state)
    return out


def assemble(found: dict[str, dict[str, Any]], posterior: str, stochastic: bool) -> dict[str, Any]:
    """The numbers a result states for `posterior`, from the estimates of every posterior: the one
    place that says which estimate each headline field comes from (build.headline uses it too)."""
    chosen = found[posterior]
    main = found[base_key(posterior, stochastic)]  # its interval
    seen = found[realised_key(posterior, stochastic)]  # its realised latents

    def rescaled(ci: list[float]) -> list[float]:  # expected_sample: the mode's relative width
        return [chosen["scale_factor"] * c / main["scale_factor"] for c in ci]

    out = {
        keys.KEY_SCALE_FACTOR: chosen["scale_factor"],
        keys.KEY_SCALE_FACTOR_CI95: rescaled(main["ci95"]),
        keys.KEY_STD: chosen["std"], keys.KEY_MEAN: chosen["mean"], keys.KEY_RMS: chosen["rms"],
        keys.KEY_SHIFT_FACTOR: chosen["mean"],
        keys.KEY_NUM_UNITS: main["units"], keys.KEY_NUM_IMAGES: main["units"],
        keys.KEY_NUM_ELEMENTS: main["elements"],
        keys.KEY_PER_CHANNEL: {**seen["per_channel"], **chosen["per_channel"]},
        keys.KEY_DISTRIBUTION: {k: seen[k] for k in DISTRIBUTION},
        keys.KEY_ESTIMATES: {k: {f: v[f] for f in ESTIMATE} for k, v in found.items()},
    }
    if "ci95_dataset" in main:
        out[keys.KEY_SCALE_FACTOR_CI95_DATASET] = rescaled(main["ci95_dataset"])
    return out


def population(recipe: dict[str, Any], skipped: list[dict[str, str]]) -> int | None:
    """How many usable units a full pass would see (None when the data set's size is unknown)."""
    size = recipe.get("dataset_size")
    return None if size is None else size - len(skipped)


def refuse_no_spread(std: float, posterior: str, what: str) -> None:
    """Refuse latents without spread: a scale factor 1/std does not exist when std is 0.

    `what` names them for the user (e.g. "the merged results").
    """
    if not std > 0:
        raise InputError(f"{what} have latents with no spread (std {std} for posterior {posterior}), so no scale "
                         "factor exists; check that the model's weights are trained and its encoder is not broken")


def _differs(stated: Any, exact: Any, floor: float) -> bool:
    """Whether a stated number is not the one the state gives: counts exactly, other numbers to
    1e-9 relative (`floor` for numbers near 0), undefined (NaN) as null."""
    if isinstance(exact, dict):
        return not isinstance(stated, dict) or any(_differs(stated.get(k), v, floor) for k, v in exact.items())
    if isinstance(exact, list):
        return (not isinstance(stated, list) or len(stated) != len(exact)
                or any(_differs(a, b, floor) for a, b in zip(stated, exact, strict=True)))
    if exact is None or (isinstance(exact, float) and not math.isfinite(exact)):
        return stated is not None
    if isinstance(exact, int):
        return stated != exact
    return stated is None or abs(stated - exact) > 1e-9 * (abs(exact) + floor)


def check_headline(result: Result, where: str) -> None:
    """Refuse a result whose numbers are not those its (sealed) state gives, so a hand-edited headline
    (0.3 where the state says 0.911) never reaches a config or a table."""
    state, posterior = result.state, result.recipe.posterior
    found = estimates(state, population(to_json(result.recipe), to_json(result.skipped)))
    refuse_no_spread(found[posterior]["std"], posterior, f"the units of {where}")
    exact = assemble(found, posterior, state.stochastic)
    doc = {**result.to_dict(), keys.KEY_NUM_UNITS: result.units}
    for key, value in exact.items():
        if _differs(doc.get(key), value, exact[keys.KEY_STD]):
            raise InputError(f"{where}: {key} is not what its state gives{_show(doc.get(key), value)}; "
                             f"{DAMAGED}")


def _show(stated: Any, exact: Any) -> str:
    """The two numbers, where the field is one number."""
    if isinstance(exact, float) and isinstance(stated, float | int):
        return f" ({stated!r} stated, {exact:.6g} from the state)"
    return ""
