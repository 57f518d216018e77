"""The result: built from the merged statistics, and shown as a table."""

from __future__ import annotations

import json
from typing import Any

import torch

from .conventions import CONVENTIONS, config_normalisation, normalisations
from .forecast import table_rows
from .known import lookup
from .stats import PosteriorStats, histogram_edges
from .validation import state_checksum
from .version import __version__

SCHEMA = 1
REFERENCES = {"sd1": 0.18215, "sdxl": 0.13025}
NORMAL_BEYOND = {1: 0.31731, 3: 0.0026998}  # P(|X| > k) for X ~ N(0, 1)


class Result(dict):
    """The result JSON as a dict that also allows attribute access (result.scale_factor)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def versions() -> dict[str, str]:
    """From the installed metadata: a --latents run never needs to import diffusers (0.75 s)."""
    from importlib.metadata import version

    return {"latent_scale": __version__, "torch": torch.__version__, "diffusers": version("diffusers")}


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


def population(recipe: dict[str, Any], skipped: list[dict[str, str]]) -> int | None:
    """How many usable images a full pass would see (None when the data set's size is unknown)."""
    size = recipe.get("dataset_size")
    return None if size is None else size - len(skipped)


def build_result(stats: PosteriorStats, model: dict[str, Any], recipe: dict[str, Any],
                 skipped: list[dict[str, str]], posterior: str, run: dict[str, Any],
                 latent_shape: list[int]) -> Result:
    """The schema-1 result; `state` carries the accumulator so `merge` needs nothing else."""
    dataset = population(recipe, skipped)
    estimates = stats.estimates(dataset)
    chosen = estimates[posterior]
    main = estimates[stats.base_key(posterior)]  # its interval
    seen = estimates[stats.realised_key(posterior)]  # its realised latents

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
    result["state_sha256"] = state_checksum(result["state"])
    return result


# Dense bfloat16/float16 tensor-core peaks (TFLOP/s) by device name, for the fraction of peak achieved.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0,
               "RTX 4090": 165.2}


def speed(posteriors: Any, units: int, seconds: float) -> dict[str, Any]:
    """Units/s and achieved encoder TFLOP/s, against the device's peak where we know it."""
    rate = units / seconds if seconds > 0 else None
    flops = posteriors.chunked.flops_per_unit if posteriors.chunked else None
    tflops = flops * rate / 1e12 if flops and rate else None
    peak = None
    if posteriors.device.type == "cuda" and posteriors.dtype in ("bfloat16", "float16"):
        name = torch.cuda.get_device_name(posteriors.device)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return {"images_per_s": rate, "encoder_gflop_per_image": flops / 1e9 if flops else None,
            "achieved_tflops": tflops, "device_peak_tflops": peak,
            "fraction_of_peak": tflops / peak if tflops and peak else None}


def frames_result(frames: dict[str, PosteriorStats], posterior: str) -> dict[str, Any]:
    """The first latent frame and the later ones as separate estimates, plus their mergeable state."""
    out: dict[str, Any] = {}
    for name, stats in frames.items():
        chosen = stats.estimates()[stats.key(posterior)]
        out[name] = {k: chosen[k] for k in ("scale_factor", "std", "mean")}
        out[name]["num_elements"] = stats.base(posterior).num_elements
    out["state"] = {name: stats.to_dict() for name, stats in frames.items()}
    return out


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
    lo, hi = r["scale_factor_ci95"]
    size = r["recipe"].get("dataset_size")
    subset = size is not None and r["num_images"] + len(r["skipped"]) < size
    images = f"{r['num_images']}" + (f" of {size}" if subset else "")
    rows = [
        (f"{r['recipe'].get('unit', 'image')}s", images + (f" ({len(r['skipped'])} skipped)" if r["skipped"] else "")),
        ("latent shape", " × ".join(str(d) for d in r["latent_shape"])
         + (" channels, size varies" if len(r["latent_shape"]) == 1 else "")),
        ("mean", _fmt(r["mean"])),
        ("std", _fmt(r["std"])),
        ("scale factor", f"{r['scale_factor']:.5f} ± {(hi - lo) / 2:.5f} (95%, posterior {r['recipe']['posterior']})"),
    ]
    if subset and "scale_factor_ci95_dataset" in r:
        dlo, dhi = r["scale_factor_ci95_dataset"]
        rows.append(("  all images", f"± {(dhi - dlo) / 2:.5f} for the value on all {size} (95%)"))
    return rows


def _rows_config(r: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("shift factor", _fmt(r["shift_factor"])),
        ("rms factor", f"{1 / r['rms']:.5f} (uncentred)" if r["rms"] else "-"),
        ("config factor", _fmt(r["model"].get("config_scaling_factor"))),
    ]
    own = r.get("config_normalised")
    if own:
        rows.append(("config → std", f"{own['std']:.4f}, mean {own['mean']:+.4f} after the model's own "
                                      f"{own['convention']} normalisation (1 and 0 are perfect)"))
    published = _published_row(r)
    if published:
        rows.append(published)
    return rows + [(f"ratio to {v}", f"{r['scale_factor'] / v:.4f}") for v in r["references"].values()]


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
    if run.get("precision_check"):
        check = run["precision_check"]
        rows.append(("precision", f"{check['dtype']}: std {check['std_rel_diff']:+.2g} relative to float32 "
                                  f"({check['images']} units re-encoded; --dtype float32 to avoid)"))
    if run.get("images_per_s"):
        tflops, peak = run.get("achieved_tflops"), run.get("fraction_of_peak")
        rows.append(("speed", f"{run['images_per_s']:.3g} {r['recipe'].get('unit', 'image')}s/s"
                              + (f", encoder {tflops:.3g} TFLOP/s" if tflops else "")
                              + (f" ({_pct(peak)} of {run['device_peak_tflops']:g} peak)" if peak else "")))
    return rows + (table_rows(run["forecast"]) if run.get("forecast") else [])


def format_table(r: dict[str, Any]) -> str:
    """The short human summary printed on stdout."""
    rows = _rows_headline(r) + _rows_config(r) + _rows_distribution(r) + _rows_run(r)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def format_sweep(results: list[dict[str, Any]]) -> str:
    """One line per --size of a one-pass sweep, with the factor's ratio to the first size."""
    first = results[0]["scale_factor"]
    lines = [f"{'size':>6}  {'units':>7}  {'scale factor':>22}  {'shift':>9}  ratio to {results[0]['recipe']['size']}"]
    for r in results:
        lo, hi = r["scale_factor_ci95"]
        factor = f"{r['scale_factor']:>11.5f} ± {(hi - lo) / 2:<8.5f}"
        lines.append(f"{r['recipe']['size']:>6}  {r['num_images']:>7}  {factor}  {r['shift_factor']:>9.4g}  "
                     f"{r['scale_factor'] / first:.4f}")
    return "\n".join(lines)


def format_snippets(r: dict[str, Any]) -> str:
    """A ready config.json fragment per convention, each after a comment saying how pipelines use it."""
    lines = []
    for name, values in normalisations(r).items():
        lines += [f"# {name} — {CONVENTIONS[name]}", json.dumps(values)]
    return "\n".join(lines)


