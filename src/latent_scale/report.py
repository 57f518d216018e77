"""The result: built from the merged statistics, shown as a table, saved as JSON, merged, applied."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError
from .stats import PosteriorStats

SCHEMA = 1
REFERENCES = {"sd1": 0.18215, "sdxl": 0.13025}


class Result(dict):
    """The result JSON as a dict that also allows attribute access (result.scale_factor)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def versions() -> dict[str, str]:
    import diffusers
    import torch

    from . import __version__

    return {"latent_scale": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__}


def build_result(stats: PosteriorStats, model: dict[str, Any], recipe: dict[str, Any],
                 skipped: list[dict[str, str]], posterior: str, run: dict[str, Any],
                 latent_shape: list[int]) -> Result:
    """The schema-1 result; `state` carries the accumulator so `merge` needs nothing else."""
    estimates = stats.estimates()
    chosen = estimates[posterior]
    main = estimates["mode" if posterior == "expected_sample" else posterior]
    ci = main["scale_factor_ci95"]
    if posterior == "expected_sample":  # same relative width as the mode's interval
        ci = [chosen["scale_factor"] * c / main["scale_factor"] for c in ci]
    return Result(
        schema=SCHEMA,
        scale_factor=chosen["scale_factor"],
        scale_factor_ci95=ci,
        std=chosen["std"],
        mean=chosen["mean"],
        rms=main["rms"],
        shift_factor=chosen["mean"],
        num_images=main["num_images"],
        num_elements=main["num_elements"],
        latent_shape=latent_shape,
        per_channel=main["per_channel"],
        distribution={k: main[k] for k in ("min", "max", "skew", "excess_kurtosis")},
        estimates={k: {f: v[f] for f in ("scale_factor", "std", "mean")} for k, v in estimates.items()},
        skipped=skipped,
        model=model,
        recipe={**recipe, "posterior": posterior},
        references=dict(REFERENCES),
        versions=versions(),
        run=run,
        state=stats.to_dict(),
    )


def write_json(path: Path, obj: Any) -> None:
    """Atomically: temp file in the same folder, fsync, rename. A crash leaves the old file or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path | str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not a readable JSON file ({e})") from None


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The first field (dotted path) where two nested dicts differ, described for the user."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            diff = first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if diff:
                return diff
        return None
    return None if a == b else f"{where} differs ({a!r} vs {b!r})"


def _fmt(x: float | None, digits: int = 5) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def format_table(r: dict[str, Any]) -> str:
    """The short human summary printed on stdout."""
    lo, hi = r["scale_factor_ci95"]
    half = (hi - lo) / 2
    rows = [
        ("images", f"{r['num_images']}" + (f" ({len(r['skipped'])} skipped)" if r["skipped"] else "")),
        ("latent shape", " × ".join(str(d) for d in r["latent_shape"])),
        ("mean", _fmt(r["mean"])),
        ("std", _fmt(r["std"])),
        ("scale factor", f"{r['scale_factor']:.5f} ± {half:.5f} (95%, posterior {r['recipe']['posterior']})"),
        ("shift factor", _fmt(r["shift_factor"])),
        ("config factor", _fmt(r["model"].get("config_scaling_factor"))),
    ]
    rows += [(f"ratio to {v}", f"{r['scale_factor'] / v:.4f}") for v in r["references"].values()]
    if r["run"].get("stop_reason"):
        rows.append(("stopped early", r["run"]["stop_reason"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def merge_results(results: list[dict[str, Any]]) -> Result:
    """Combine shard results exactly; refuse different models or recipes, naming the field."""
    if not results:
        raise InputError("merge needs at least one result file")
    first = results[0]
    shards = [r["run"].get("shard") for r in results]
    dupes = {s for s in shards if s is not None and shards.count(s) > 1}
    if dupes:
        raise InputError(f"shard {sorted(dupes)[0]} appears more than once; merge each shard once")
    stats = PosteriorStats.from_dict(first["state"])
    for r in results[1:]:
        diff = first_difference(first["model"], r["model"], "model") or first_difference(
            first["recipe"], r["recipe"], "recipe")
        if diff:
            raise InputError(f"cannot merge: {diff}")
        stats.merge(PosteriorStats.from_dict(r["state"]))
    seconds = sum(r["run"].get("seconds") or 0 for r in results)
    run = {"merged_from": len(results), "shards": shards, "seconds": seconds,
           "upcast_chunks": sum(r["run"].get("upcast_chunks", 0) for r in results),
           "stopped_early": any(r["run"].get("stopped_early") for r in results), "stop_reason": None}
    return build_result(stats, first["model"], {k: v for k, v in first["recipe"].items() if k != "posterior"},
                        [s for r in results for s in r["skipped"]], first["recipe"]["posterior"], run,
                        first["latent_shape"])
