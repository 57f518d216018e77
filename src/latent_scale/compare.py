"""`compare`: results side by side, and whether their factors differ beyond their intervals.

Results are read through the schema (their numbers checked against their states), so an edited file
cannot pass for a difference.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from .errors import InputError
from .report import WIDTH
from .schema import Result
from .schema.recompute import Z95
from .schema.sweep import read_result_file


def load_results(paths: list[str | Path]) -> tuple[list[Result], list[str]]:
    """The results in the files and a name for each (the file's stem; its path when stems repeat).

    A file holding a list of results (a --size sweep) gives one entry per size, named stem@SIZE.
    """
    stems = [Path(p).stem for p in paths]
    results, names = [], []
    for path, stem in zip(paths, stems, strict=True):
        base = stem if stems.count(stem) == 1 else str(path)
        found = read_result_file(path)
        results += found
        names += [f"{base}@{r.recipe.size}" for r in found] if len(found) > 1 else [base]
    return results, names


def compare_results(results: list[Result], names: list[str]) -> dict[str, Any]:
    """Each result's numbers, and a verdict for each against the first.

    Results with different channel counts still compare on their global numbers (a factor is a
    factor); only the per-channel overlay refuses them (see check_overlay).
    """
    if len(results) < 2:
        raise InputError(f"compare needs two or more results, got {len(results)}")
    rows = [_summary(r, name) for r, name in zip(results, names, strict=True)]
    return {"results": rows, "verdicts": [_verdict(rows[0], row) for row in rows[1:]]}


def check_overlay(results: list[Result], names: list[str]) -> None:
    """Per-channel histograms overlay only when every result has the same channels."""
    channels = {name: r.state.channels for r, name in zip(results, names, strict=True)}
    if len(set(channels.values())) > 1:
        listed = ", ".join(f"{n} {c}" for n, c in channels.items())
        raise InputError(f"cannot overlay per-channel histograms of results with different channel counts "
                         f"({listed}); drop -o to compare the table only")


def _summary(r: Result, name: str) -> dict[str, Any]:
    lo, hi = r.scale_factor_ci95
    return {
        "name": name,
        "scale_factor": r.scale_factor,
        "half_width": None if lo is None or hi is None else (hi - lo) / 2,
        "shift_factor": r.shift_factor,
        "rms": r.rms,
        "per_channel": {"mean": r.per_channel.mean, "std": r.per_channel.std},
        "config_scaling_factor": r.model.config_scaling_factor,
        "beyond_1": r.distribution.beyond_1,
        "beyond_3": r.distribution.beyond_3,
        "num_units": r.units,
        "unit": r.unit_name,
        "size": r.recipe.size,
        "posterior": r.recipe.posterior,
        "model": r.model.source,
        "data": r.recipe.data,
    }


def _verdict(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two-sided z-test at 95 % for independent runs: z = (f_a - f_b) / sqrt(se_a² + se_b²).

    Results of the same model on the same data share units, so they are not independent; their
    errors are positively correlated, which makes this z too small: a "differ" still holds, a
    "no difference" may hide a real one.
    """
    z = None
    if a["half_width"] is not None and b["half_width"] is not None:
        se = math.hypot(a["half_width"], b["half_width"]) / Z95
        z = (b["scale_factor"] - a["scale_factor"]) / se if se > 0 else None
    if z is None and b["scale_factor"] == a["scale_factor"]:
        z = 0.0  # the same numbers, e.g. one result read twice
    return {"name": b["name"], "against": a["name"], "z": z, "differ": z is not None and abs(z) > Z95,
            "independent": (a["model"], a["data"]) != (b["model"], b["data"])}


def format_comparison(cmp: dict[str, Any]) -> str:
    """The side-by-side table (one column per result), then one verdict line per pair."""
    rows = cmp["results"]
    table = [("", [r["name"] for r in rows]), (_units(rows), [str(r["num_units"]) for r in rows])]
    table += [(label, [show(r) for r in rows]) for label, show in _FIELDS]
    channels = max(len(r["per_channel"]["mean"]) for r in rows)
    table += [(f"ch {c} mean / std", [_channel(r, c) for r in rows]) for c in range(channels)]
    first = max(len(label) for label, _ in table)
    widths = [max(len(cells[i]) for _, cells in table) for i in range(len(rows))]
    lines = []
    for columns in _blocks(widths, WIDTH - first):  # as many result columns as fit, then the next ones below
        lines += [f"{label:<{first}}" + "".join(f"  {cells[i]:>{widths[i]}}" for i in columns)
                  for label, cells in table] + [""]
    return "\n".join(lines + [textwrap.fill(_verdict_line(v, _units(rows)), WIDTH, subsequent_indent="    ")
                              for v in cmp["verdicts"]])


def _blocks(widths: list[int], room: int) -> list[list[int]]:
    """Column indices in runs that fit `room` characters (two spaces before each; one column at least)."""
    blocks: list[list[int]] = [[]]
    for i, w in enumerate(widths):
        if blocks[-1] and sum(2 + widths[j] for j in blocks[-1]) + 2 + w > room:
            blocks.append([])
        blocks[-1].append(i)
    return blocks


def _units(rows: list[dict[str, Any]]) -> str:
    """What the results count: their unit's plural when they share one (images, clips, latents)."""
    units = {r["unit"] for r in rows}
    return f"{units.pop()}s" if len(units) == 1 else "units"


def _verdict_line(v: dict[str, Any], units: str) -> str:
    if v["z"] is None:
        return f"{v['name']} vs {v['against']}: cannot tell (no interval; each needs 2+ {units})"
    text = f"differ (z = {v['z']:.2f})" if v["differ"] else f"no difference (z = {v['z']:.2f})"
    note = "" if v["independent"] else "; same model and data, not independent: a difference would be understated"
    return f"{v['name']} vs {v['against']}: {text} at 95 %{note}"


def _channel(r: dict[str, Any], c: int) -> str:
    mean, std = r["per_channel"]["mean"], r["per_channel"]["std"]
    return f"{_num(mean[c])} / {_num(std[c])}" if c < len(mean) else "-"


def _num(x: float | None) -> str:
    """The table's one number format: 5 significant digits, trailing zeros kept, so every number in
    it reads to the same precision ("1.2000" beside "1.0280", never "1.2")."""
    return "-" if x is None else f"{x:#.5g}"


def _pct(x: float | None) -> str:
    """A fraction as a percentage, 3 significant digits (trailing zeros kept)."""
    return "-" if x is None else f"{100 * x:#.3g}%"


_FIELDS = [
    ("size", lambda r: "-" if r["size"] is None else str(r["size"])),  # audio and stored latents have none
    ("posterior", lambda r: str(r["posterior"])),
    ("scale factor (95%)", lambda r: f"{_num(r['scale_factor'])} ± {_num(r['half_width'])}"),
    ("shift factor", lambda r: _num(r["shift_factor"])),
    ("rms factor", lambda r: _num(1 / r["rms"] if r["rms"] else None)),
    ("config factor", lambda r: _num(r["config_scaling_factor"])),
    ("beyond ±1 (N: 31.7%)", lambda r: _pct(r["beyond_1"])),
    ("beyond ±3 (N: 0.27%)", lambda r: _pct(r["beyond_3"])),
]
