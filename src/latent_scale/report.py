"""The result shown as a table (built and read by schema); the histogram bins a run starts with."""

from __future__ import annotations

import json
import math
import textwrap
from typing import Any

from .conventions import CONVENTIONS, normalisations
from .forecast import table_rows
from .known import lookup
from .schema.keys import (
    KEY_CONFIG_NORMALISED,
    KEY_NUM_IMAGES,
    KEY_REFERENCES,
    KEY_SCALE_FACTOR_CI95,
    KEY_SCALE_FACTOR_CI95_DATASET,
)

NORMAL_BEYOND = {1: 0.31731, 3: 0.0026998}  # P(|X| > k) for X ~ N(0, 1)


WIDTH = 100  # every table fits this many columns; longer values wrap under their own column


def _units(r: dict[str, Any]) -> str:
    """The result's unit in words, plural: images, clips, audio clips, latents."""
    return f"{r['recipe'].get('unit', 'image')}s"


def _fmt(x: float | None, digits: int = 5) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3g}%"


def _published_row(r: dict[str, Any]) -> tuple[str, str] | None:
    entry = lookup(r["model"]["source"]) if r["model"].get("source") else None
    if entry is None:
        return None
    if entry.scaling_factor is None:
        return "published", f"per-channel latents_mean/std ({entry.name}; `latent-scale known --model ...`)"
    shift = f", shift {entry.shift_factor:g}" if entry.shift_factor is not None else ""
    return "published", (f"{entry.scaling_factor:g}{shift} ({entry.name}); "
                         f"estimate / published = {r['scale_factor'] / entry.scaling_factor:.4f}")


def _rows_headline(r: dict[str, Any]) -> list[tuple[str, str]]:
    lo, hi = r[KEY_SCALE_FACTOR_CI95]
    size = r["recipe"].get("dataset_size")
    subset = size is not None and r[KEY_NUM_IMAGES] + len(r["skipped"]) < size
    images = f"{r[KEY_NUM_IMAGES]}" + (f" of {size}" if subset else "")
    rows = [
        (_units(r), images + (f" ({len(r['skipped'])} skipped)" if r["skipped"] else "")),
        ("latent shape", " × ".join(str(d) for d in r["latent_shape"])
         + (" channels, size varies" if len(r["latent_shape"]) == 1 else "")),
        ("mean", _fmt(r["mean"])),
        ("std", _fmt(r["std"])),
        ("scale factor", f"{r['scale_factor']:.5f} " + ("(no interval before 2 " + _units(r) + "; "
                                                         if _half(lo, hi) is None else f"± {_half(lo, hi):.5f} (95%, ")
         + f"posterior {r['recipe']['posterior']})"),
    ]
    if subset and _half(*r.get(KEY_SCALE_FACTOR_CI95_DATASET, (None, None))) is not None:
        dlo, dhi = r[KEY_SCALE_FACTOR_CI95_DATASET]
        rows.append((f"  all {_units(r)}", f"± {(dhi - dlo) / 2:.5f} for the value on all {size} (95%)"))
    return rows


def _half(lo: float | None, hi: float | None) -> float | None:
    """An interval's half-width; None while it is undefined (null in JSON, nan in memory)."""
    return None if lo is None or hi is None or not math.isfinite(hi - lo) else (hi - lo) / 2


def _rows_config(r: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("shift factor", _fmt(r["shift_factor"])),
        ("rms factor", f"{1 / r['rms']:.5f} (uncentred)" if r["rms"] else "-"),
        ("config factor", _fmt(r["model"].get("config_scaling_factor"))),
    ]
    own = r.get(KEY_CONFIG_NORMALISED)
    if own:
        rows.append(("config → std", f"{own['std']:.4f}, mean {own['mean']:+.4f} after the model's own "
                                      f"{own['convention']} normalisation (1 and 0 are perfect)"))
    published = _published_row(r)
    if published:
        rows.append(published)
    return rows + [(f"ratio to {v}", f"{r['scale_factor'] / v:.4f}") for v in r[KEY_REFERENCES].values()]


def _rows_distribution(r: dict[str, Any]) -> list[tuple[str, str]]:
    dist, f, rows = r.get("distribution", {}), r["scale_factor"], []
    if dist.get("beyond_1") is not None:
        rows.append(("beyond ±1, ±3", f"{_pct(dist['beyond_1'])}, {_pct(dist['beyond_3'])} of scaled values "
                                      f"(normal: {_pct(NORMAL_BEYOND[1])}, {_pct(NORMAL_BEYOND[3])})"))
    if "skew" in dist:
        rows.append(("shape", f"range [{dist['min'] * f:.3g}, {dist['max'] * f:.3g}] scaled, skew "
                              f"{dist['skew']:.3g}, excess kurtosis {dist['excess_kurtosis']:.3g}"))
    return rows


def _rows_run(r: dict[str, Any]) -> list[tuple[str, str]]:
    run, rows = r["run"], []
    if r.get("frames"):
        first, later = r["frames"]["first"], r["frames"]["later"]
        rows.append(("video frames", f"first latent frame {first['scale_factor']:.5f} (std {first['std']:.4g}), "
                                     f"later frames {later['scale_factor']:.5f} (std {later['std']:.4g})"))
    if run.get("stop_reason"):
        rows.append(("stopped early", run["stop_reason"]))
    if run.get("rel_tol_unmet"):
        rows.append(("--rel-tol", run["rel_tol_unmet"]))
    if r.get("input_scale"):
        rows.append(("input scale", r["input_scale"]["note"]))
    rows.append(("precision", _precision(r)))
    if run.get("images_per_s"):
        rows.append(("speed", _speed(r)))
    return rows + (table_rows(run["forecast"], _units(r)) if run.get("forecast") else [])


def _speed(r: dict[str, Any]) -> str:
    """Units/s; the encoder's TFLOP/s and its share of the device's practical peak for the dtype that ran."""
    run = r["run"]
    text = f"{run['images_per_s']:.3g} {_units(r)}/s"
    tflops, share = run.get("achieved_tflops"), run.get("fraction_of_peak")
    peak = run.get("peak_tflops")
    if tflops:
        text += f", encoder {tflops:.3g} TFLOP/s"
    if share and peak:
        where, dtype = str(run.get("device", "device")).split(":")[0].upper(), r["recipe"].get("dtype")
        text += f" = {_pct(share)} of this {where}'s {dtype} peak ({peak:.3g} TFLOP/s)"
    return text


def _precision(r: dict[str, Any]) -> str:
    """The dtype that ran, always, with the float32 check of its first chunk when it was low precision."""
    check, dtype = r["run"].get("precision_check"), r["recipe"].get("dtype")
    if check:
        return (f"{check['dtype']} encoder: std {check['std_rel_diff']:+.2g} relative to float32 "
                f"({check['images']} {_units(r)} re-encoded; --dtype float32 to avoid)")
    if r["recipe"].get("source") == "latents":
        return "no encoder: stored latents, read in float64"
    return f"{dtype} encoder" if dtype else "not recorded"


def format_table(r: dict[str, Any]) -> str:
    """The short human summary printed on stdout."""
    return format_rows(_rows_headline(r) + _rows_config(r) + _rows_distribution(r) + _rows_run(r))


def format_rows(rows: list[tuple[str, str]], width: int = WIDTH) -> str:
    """Label and value per row; a value too long for `width` columns wraps onto lines under itself."""
    label = max(len(k) for k, _ in rows)
    lines = []
    for key, value in rows:
        parts = textwrap.wrap(value, width - label - 2, break_long_words=False, break_on_hyphens=False) or [""]
        lines += [f"{key:<{label}}  {parts[0]}", *(" " * (label + 2) + part for part in parts[1:])]
    return "\n".join(lines)


def format_sweep(results: list[dict[str, Any]]) -> str:
    """One line per --size of a one-pass sweep, with the factor's ratio to the first size; then the dtype
    that ran (one pass: the same for every size)."""
    first = results[0]["scale_factor"]
    units = _units(results[0])
    lines = [f"{'size':>6}  {units:>7}  {'scale factor':>22}  {'shift':>9}  ratio to {results[0]['recipe']['size']}"]
    for r in results:
        half = _half(*r[KEY_SCALE_FACTOR_CI95])
        factor = f"{r['scale_factor']:>11.5f} ± " + ("-" if half is None else f"{half:.5f}").ljust(8)
        lines.append(f"{r['recipe']['size']:>6}  {r[KEY_NUM_IMAGES]:>7}  {factor}  {r['shift_factor']:>9.4g}  "
                     f"{r['scale_factor'] / first:.4f}")
    return "\n".join(lines) + "\n" + format_rows([("precision", _precision(results[0]))])


def format_snippets(r: dict[str, Any]) -> str:
    """A ready config.json fragment per convention, each after a comment saying how pipelines use it."""
    lines = []
    for name, values in normalisations(r).items():
        lines += [f"# {name} — {CONVENTIONS[name]}", json.dumps(values)]
    return "\n".join(lines)


