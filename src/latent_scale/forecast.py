"""How many units, and how long, a target precision needs: read off the running interval.

The delta-method half-width of the factor shrinks as 1/sqrt(n) (units are independent: images,
clips, audio clips, latents), so the interval after n units already says what n a target needs;
at the rate measured so far that is also a time. Imports nothing heavy: the progress bar calls it after every batch.
"""

from __future__ import annotations

import math
from typing import Any

PRECISE = 1e-3  # the ±0.1 % every forecast shows, besides the user's --rel-tol


def images_needed(n: int, factor: float, half_width: float, rel_tol: float,
                  population: int | None = None) -> int | None:
    """Images (in all, not more) for the 95 % half-width to reach rel_tol·factor; None while undefined.

    `half_width` is the running interval's (images as draws from an unlimited distribution):
    n·half² is constant, so the count is n·(half / (rel_tol·factor))². With `population` the
    count for the full data set's own value instead: the finite-population correction
    (P - m) / (P - 1) on the variance k/m (see stats.UnitMoments.factor_sd), solved for m,
    gives m = k·P / (target²·(P - 1) + k), never more than P.
    """
    if n < 2 or not (factor > 0 and half_width >= 0 and rel_tol > 0):  # nan fails every comparison
        return None
    k = n * half_width**2
    target2 = (rel_tol * factor) ** 2
    if population is None:
        m = k / target2
    else:
        m = k * population / (target2 * (population - 1) + k) if k > 0 else 0.0
    return max(2, math.ceil(m))  # an interval needs two images


def forecast(n: int, factor: float, half_width: float, seconds: float, rel_tols: tuple[float | None, ...] = (),
             population: int | None = None, floor: int = 2) -> dict[str, Any]:
    """±0.1 % and each of `rel_tols`: images needed and the seconds they take at n / seconds.

    `floor` is --min-images: --rel-tol never stops before it, so no forecast is below it. With a
    `population` larger than n (a --limit subset) each target also carries the images and seconds
    that pin the full data set's own value. `seconds` must be the time these n images took.
    """
    rate = n / seconds if seconds > 0 and n > 0 else None
    subset = population is not None and population > n
    targets = []
    for tol in dict.fromkeys(t for t in (PRECISE, *rel_tols) if t):
        images = images_needed(n, factor, half_width, tol)
        images = None if images is None else max(images, floor)
        row = {"rel_tol": tol, "images": images, "seconds": _seconds(images, rate)}
        if subset:
            row["images_dataset"] = images_needed(n, factor, half_width, tol, population)
            row["seconds_dataset"] = _seconds(row["images_dataset"], rate)
        targets.append(row)
    return {"seen": n, "images_per_s": rate, "population": population, "targets": targets}


def _seconds(images: int | None, rate: float | None) -> float | None:
    return None if images is None or not rate else images / rate


def table_rows(fc: dict[str, Any], units: str = "images") -> list[tuple[str, str]]:
    """Rows for report.format_table: one per target, and with a subset what all units take; `units`
    is the source's word for them (images, clips, audio clips, latents)."""
    rate = fc["images_per_s"]
    at = f" at {rate:.3g} {units}/s" if rate else ""
    rows = []
    for t in fc["targets"]:
        label = f"±{_percent(t['rel_tol'])} needs"
        if t["images"] is None:
            rows.append((label, f"known after 2 {units}"))
            continue
        value = f"{_count(t['images'])} {units} ({_duration(t['seconds'])}{at})"
        if "images_dataset" in t:
            value += (f"; for the value of all {fc['population']}: {_count(t['images_dataset'])} "
                      f"({_duration(t['seconds_dataset'])})")
        rows.append((label, value))
    if fc["population"] is not None and fc["population"] > fc["seen"] and rate:
        rows.append((f"all {fc['population']} {units}", f"{_duration(fc['population'] / rate)}{at}"))
    return rows


def postfix(fc: dict[str, Any], units: str = "images") -> str:
    """Short, for the progress bar: the last target (the user's --rel-tol when given, else ±0.1 %)."""
    t = fc["targets"][-1]
    if t["images"] is None:
        return ""
    return f"±{_percent(t['rel_tol'])}: {_count(t['images'])} {units} ({_duration(t['seconds'])})"


def _percent(tol: float) -> str:
    return f"{100 * tol:g} %"


def _count(images: int) -> str:
    """Two significant digits: the forecast is good to tens of percent, not to the image."""
    digits = max(0, len(str(images)) - 2)
    return f"~{round(images, -digits):,}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "time unknown"
    unit, size = next(((u, s) for u, s in (("days", 86400), ("h", 3600), ("min", 60)) if seconds >= 2 * s), ("s", 1))
    value = seconds / size
    return f"~{value:.2g} {unit}" if value < 10 else f"~{round(value):,} {unit}"
