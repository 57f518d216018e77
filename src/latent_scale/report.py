"""The result: built from the merged statistics, shown as a table, saved as JSON, merged, applied."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .known import lookup
from .stats import PosteriorStats, histogram_edges

SCHEMA = 1
REFERENCES = {"sd1": 0.18215, "sdxl": 0.13025}
NORMAL_BEYOND = {1: 0.31731, 3: 0.0026998}  # P(|X| > k) for X ~ N(0, 1)
# How diffusers pipelines apply each convention (the snippet's comment, and apply's names).
CONVENTIONS = {
    "scale": "SD 1.x/2.x, SDXL: latents = z * scaling_factor",
    "shift": "SD3, FLUX: latents = (z - shift_factor) * scaling_factor",
    "per_channel": "SDXL-style/Mochi/Wan pipelines: latents = (z - latents_mean) * scaling_factor / latents_std",
    "rms": "uncentred, no shift: mean((z * scaling_factor)^2) = 1",
}


class Result(dict):
    """The result JSON as a dict that also allows attribute access (result.scale_factor)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def versions() -> dict[str, str]:
    import diffusers

    from . import __version__

    return {"latent_scale": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__}


def histogram_edges_for(info: dict[str, Any]) -> torch.Tensor:
    """Histogram bins from the model config alone, never the data, so every shard, resume and
    merge bins alike: the unit is the latent std the config implies (its largest latents_std,
    else 1/scaling_factor, else 1)."""
    unit = 1.0
    if info.get("config_latents_std"):
        unit = max(info["config_latents_std"])
    elif (info.get("config_scaling_factor") or 0) > 0:
        unit = 1 / info["config_scaling_factor"]
    return histogram_edges(unit)


def config_normalisation(info: dict[str, Any], channels: int) -> tuple[str, Any, Any] | None:
    """(convention, shift, scale) such that the model's own pipelines feed (z - shift) * scale
    to the diffusion model, per channel where the config has latents_mean/std; None if it says nothing."""
    factor = info.get("config_scaling_factor")
    mean, std = info.get("config_latents_mean"), info.get("config_latents_std")
    if mean and std and len(mean) == len(std) == channels:
        scale = (factor or 1.0) / torch.tensor(std, dtype=torch.float64)
        return "per_channel", torch.tensor(mean, dtype=torch.float64), scale
    if factor:
        shift = info.get("config_shift_factor")
        return ("shift" if shift else "scale"), shift or 0.0, factor
    return None


def _population(recipe: dict[str, Any], skipped: list[dict[str, str]]) -> int | None:
    """How many usable images a full pass would see (None when the data set's size is unknown)."""
    size = recipe.get("dataset_size")
    return None if size is None else size - len(skipped)


def _sig(x: float, digits: int = 6) -> float:
    """A config value to `digits` significant digits: far below the statistical error, easy to read."""
    return float(f"{x:.{digits}g}")


def normalisations(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every common way to normalise latents, as the config.json keys diffusers reads (see CONVENTIONS).

    Per-channel sets scaling_factor to 1: pipelines divide by latents_std and then multiply by
    scaling_factor, so anything else would not give unit variance.
    """
    per = r["per_channel"]
    return {
        "scale": {"scaling_factor": _sig(r["scale_factor"])},
        "shift": {"scaling_factor": _sig(r["scale_factor"]), "shift_factor": _sig(r["shift_factor"])},
        "per_channel": {"latents_mean": [_sig(m) for m in per["mean"]],
                        "latents_std": [_sig(s) for s in per["std"]], "scaling_factor": 1.0},
        "rms": {"scaling_factor": _sig(1 / r["rms"])},
    }


def build_result(stats: PosteriorStats, model: dict[str, Any], recipe: dict[str, Any],
                 skipped: list[dict[str, str]], posterior: str, run: dict[str, Any],
                 latent_shape: list[int]) -> Result:
    """The schema-1 result; `state` carries the accumulator so `merge` needs nothing else."""
    population = _population(recipe, skipped)
    estimates = stats.estimates(population)
    chosen = estimates[posterior]
    main = estimates["mode" if posterior == "expected_sample" else posterior]  # its interval
    seen = estimates["sample" if posterior == "expected_sample" else posterior]  # its realised latents

    def rescaled(ci: list[float]) -> list[float]:  # expected_sample: the mode's relative width
        return [chosen["scale_factor"] * c / main["scale_factor"] for c in ci]

    extra = {}
    if "scale_factor_ci95_dataset" in main:
        extra["scale_factor_ci95_dataset"] = rescaled(main["scale_factor_ci95_dataset"])
    config = config_normalisation(model, stats.channels)
    result = Result(
        schema=SCHEMA,
        scale_factor=chosen["scale_factor"],
        scale_factor_ci95=rescaled(main["scale_factor_ci95"]),
        **extra,
        std=chosen["std"],
        mean=chosen["mean"],
        rms=chosen["rms"],
        shift_factor=chosen["mean"],
        num_images=main["num_images"],
        num_elements=main["num_elements"],
        latent_shape=latent_shape,
        per_channel={**seen["per_channel"], **chosen["per_channel"]},
        distribution={k: seen[k] for k in ("min", "max", "skew", "excess_kurtosis", "beyond_1", "beyond_3")},
        config_normalised=None if config is None else {
            "convention": config[0], **stats.normalised(posterior, config[1], config[2])},
        estimates={k: {f: v[f] for f in ("scale_factor", "std", "mean")} for k, v in estimates.items()},
        skipped=skipped,
        model=model,
        recipe={**recipe, "posterior": posterior},
        references=dict(REFERENCES),
        versions=versions(),
        run=run,
        state=stats.to_dict(),
    )
    result["normalisations"] = normalisations(result)
    return result


@contextmanager
def _atomically(path: Path) -> Iterator[Path]:
    """A temp file beside `path` for the block to fill; then fsync and rename it over `path`,
    so a crash leaves the old file or the new one, never half of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
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


def write_json(path: Path, obj: Any) -> None:
    """Atomically (see _atomically)."""
    with _atomically(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3g}%"


def _published_row(r: dict[str, Any]) -> tuple[str, str] | None:
    entry = lookup(r["model"]["source"])
    if entry is None:
        return None
    if entry.scaling_factor is None:
        return "published", f"per-channel latents_mean/std ({entry.name}; `latent-scale known --model ...`)"
    shift = f", shift {entry.shift_factor:g}" if entry.shift_factor is not None else ""
    return "published", (f"{entry.scaling_factor:g}{shift} ({entry.name}); "
                         f"estimate / published = {r['scale_factor'] / entry.scaling_factor:.4f}")


def format_table(r: dict[str, Any]) -> str:
    """The short human summary printed on stdout."""
    lo, hi = r["scale_factor_ci95"]
    f = r["scale_factor"]
    size = r["recipe"].get("dataset_size")
    subset = size is not None and r["num_images"] + len(r["skipped"]) < size
    images = f"{r['num_images']}" + (f" of {size}" if subset else "")
    rows = [
        ("images", images + (f" ({len(r['skipped'])} skipped)" if r["skipped"] else "")),
        ("latent shape", " × ".join(str(d) for d in r["latent_shape"])
         + (" channels, size varies (--no-crop)" if len(r["latent_shape"]) == 1 else "")),
        ("mean", _fmt(r["mean"])),
        ("std", _fmt(r["std"])),
        ("scale factor", f"{f:.5f} ± {(hi - lo) / 2:.5f} (95%, posterior {r['recipe']['posterior']})"),
    ]
    if subset and "scale_factor_ci95_dataset" in r:
        dlo, dhi = r["scale_factor_ci95_dataset"]
        rows.append(("  all images", f"± {(dhi - dlo) / 2:.5f} for the value on all {size} (95%)"))
    rows += [
        ("shift factor", _fmt(r["shift_factor"])),
        ("rms factor", f"{1 / r['rms']:.5f} (uncentred)"),
        ("config factor", _fmt(r["model"].get("config_scaling_factor"))),
    ]
    own = r.get("config_normalised")
    if own:
        rows.append(("config → std", f"{own['std']:.4f}, mean {own['mean']:+.4f} after the model's own "
                                      f"{own['convention']} normalisation (1 and 0 are perfect)"))
    published = _published_row(r)
    if published:
        rows.append(published)
    rows += [(f"ratio to {v}", f"{f / v:.4f}") for v in r["references"].values()]
    dist = r.get("distribution", {})
    if dist.get("beyond_1") is not None:
        rows.append(("beyond ±1, ±3", f"{_pct(dist['beyond_1'])}, {_pct(dist['beyond_3'])} of scaled values "
                                      f"(normal: {_pct(NORMAL_BEYOND[1])}, {_pct(NORMAL_BEYOND[3])})"))
    if "skew" in dist:
        rows.append(("shape", f"range [{dist['min'] * f:.3g}, {dist['max'] * f:.3g}] scaled, skew "
                              f"{dist['skew']:.3g}, excess kurtosis {dist['excess_kurtosis']:.3g}"))
    if r["run"].get("stop_reason"):
        rows.append(("stopped early", r["run"]["stop_reason"]))
    if r["run"].get("images_per_s"):
        tflops, peak = r["run"].get("achieved_tflops"), r["run"].get("fraction_of_peak")
        rows.append(("speed", f"{r['run']['images_per_s']:.3g} images/s"
                              + (f", encoder {tflops:.3g} TFLOP/s" if tflops else "")
                              + (f" ({_pct(peak)} of {r['run']['device_peak_tflops']:g} peak)" if peak else "")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def format_snippets(r: dict[str, Any]) -> str:
    """A ready config.json fragment per convention, each after a comment saying how pipelines use it."""
    lines = []
    for name, values in normalisations(r).items():
        lines += [f"# {name} — {CONVENTIONS[name]}", json.dumps(values)]
    return "\n".join(lines)


def _looks_like_hub_id(s: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", s) is not None and not s.startswith(".")


def apply_result(result: dict[str, Any] | str | Path, to: str | Path, *, shift: bool = False,
                 per_channel: bool = False, rms: bool = False, subfolder: str | None = None) -> dict[str, Any]:
    """Write a result's normalisation into a local VAE folder's config.json.

    Why: a mistyped factor silently ruins a training run, so the write is atomic, the old
    config stays as config.json.bak, and a result from another class or channel count is refused.
    Default is the global scaling_factor; shift/per_channel/rms pick another convention
    (see CONVENTIONS). Returns {"config": path, "backup": path, "written": {key: value}}.
    """
    from .models import latent_channels, local_subfolder

    if sum((shift, per_channel, rms)) > 1:
        raise InputError("--shift, --per-channel and --rms are alternative conventions; pick one")
    r = read_json(result) if isinstance(result, (str, Path)) else result
    if "scale_factor" not in r or "per_channel" not in r:
        raise InputError(f"{result if isinstance(result, (str, Path)) else 'the result'} is not a latent-scale result")
    folder = Path(to).expanduser()
    if not folder.exists():
        if _looks_like_hub_id(str(to)):
            raise InputError(f"--to {to} looks like a hub id; apply writes into a local folder: download it "
                             f"(huggingface-cli download {to} --local-dir DIR) and pass DIR")
        raise InputError(f"--to {to} does not exist; pass the folder that holds the VAE's config.json")
    if not folder.is_dir():
        raise InputError(f"--to {to} is a file; pass the folder that holds the VAE's config.json")
    sub = local_subfolder(folder, subfolder)
    path = folder / sub / "config.json" if sub else folder / "config.json"
    config = read_json(path)
    want, have = r["model"].get("class"), config.get("_class_name")
    if want and have and want != have:
        raise InputError(f"the result was measured on a {want}, but {path} describes a {have}; "
                         "pass the folder of the model you measured")
    channels = latent_channels(config)
    if channels is not None and channels != len(r["per_channel"]["mean"]):
        raise InputError(f"the result has {len(r['per_channel']['mean'])} latent channels, but {path} "
                         f"has {channels}; pass the folder of the model you measured")
    convention = "shift" if shift else "per_channel" if per_channel else "rms" if rms else "scale"
    written = normalisations(r)[convention]
    backup = path.with_name(path.name + ".bak")
    with _atomically(backup) as tmp:
        shutil.copy2(path, tmp)
    write_json(path, {**config, **written})
    return {"config": path, "backup": backup, "written": written}


def merge_results(results: list[dict[str, Any]]) -> Result:
    """Combine shard results exactly; refuse different models or recipes, naming the field."""
    if not results:
        raise InputError("merge needs at least one result file")
    first = results[0]
    shards = [s for r in results for s in r["run"].get("shards") or [r["run"].get("shard")]]
    if len(shards) > 1 and None in shards:
        raise InputError(f"result {shards.index(None) + 1} was not made with --shard i/n; "
                         "merging it with others would count images twice")
    dupes = {s for s in shards if s is not None and shards.count(s) > 1}
    if dupes:
        raise InputError(f"shard {sorted(dupes)[0]} appears more than once; merge each shard once")
    if len({s.split("/")[1] for s in shards if s}) > 1:
        raise InputError(f"cannot merge shards of different splits ({', '.join(sorted(set(shards)))}); "
                         "use the same n for every shard")
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
