"""Building a result from the merged statistics, and checking a result read back against its state.

Every number of a result follows from its `state`; both directions go through `headline`, so a
result whose numbers were edited (the state's checksum still matching) is refused, never used.
"""

from __future__ import annotations

import math
from importlib.metadata import version
from typing import Any

import torch

from ..conventions import config_normalisation, normalisations
from ..errors import InputError
from ..stats import PosteriorStats
from ..version import __version__
from . import keys
from .parse import DAMAGED, to_json
from .result import Result
from .seal import state_checksum

REFERENCES = {"sd1": 0.18215, "sdxl": 0.13025}
DISTRIBUTION = ("min", "max", "skew", "excess_kurtosis", "beyond_1", "beyond_3")
ESTIMATE = ("scale_factor", "std", "mean")


class ResultDict(dict):
    """The result JSON as a dict that also allows attribute access (result.scale_factor): what
    `estimate` and `merge` return and write."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def versions() -> dict[str, str]:
    """diffusers' from the installed metadata: a --latents run never needs to import it (0.75 s)."""
    return {"latent_scale": __version__, "torch": torch.__version__, "diffusers": version("diffusers")}


def population(recipe: dict[str, Any], skipped: list[dict[str, str]]) -> int | None:
    """How many usable units a full pass would see (None when the data set's size is unknown)."""
    size = recipe.get("dataset_size")
    return None if size is None else size - len(skipped)


def headline(stats: PosteriorStats, posterior: str, dataset: int | None) -> dict[str, Any]:
    """The numbers a result states for `posterior`, all from the statistics."""
    estimates = stats.estimates(dataset)
    chosen = estimates[posterior]
    main = estimates[stats.base_key(posterior)]  # its interval
    seen = estimates[stats.realised_key(posterior)]  # its realised latents

    def rescaled(ci: list[float]) -> list[float]:  # expected_sample: the mode's relative width
        return [chosen["scale_factor"] * c / main["scale_factor"] for c in ci]

    out = {
        keys.KEY_SCALE_FACTOR: chosen["scale_factor"],
        keys.KEY_SCALE_FACTOR_CI95: rescaled(main["scale_factor_ci95"]),
        keys.KEY_STD: chosen["std"], keys.KEY_MEAN: chosen["mean"], keys.KEY_RMS: chosen["rms"],
        keys.KEY_SHIFT_FACTOR: chosen["mean"],
        keys.KEY_NUM_UNITS: main["num_images"], keys.KEY_NUM_IMAGES: main["num_images"],
        keys.KEY_NUM_ELEMENTS: main["num_elements"],
        keys.KEY_PER_CHANNEL: {**seen["per_channel"], **chosen["per_channel"]},
        keys.KEY_DISTRIBUTION: {k: seen[k] for k in DISTRIBUTION},
        keys.KEY_ESTIMATES: {k: {f: v[f] for f in ESTIMATE} for k, v in estimates.items()},
    }
    if "scale_factor_ci95_dataset" in main:
        out[keys.KEY_SCALE_FACTOR_CI95_DATASET] = rescaled(main["scale_factor_ci95_dataset"])
    return out


def build_result(stats: PosteriorStats, model: dict[str, Any], recipe: dict[str, Any],
                 skipped: list[dict[str, str]], posterior: str, run: dict[str, Any],
                 latent_shape: list[int]) -> ResultDict:
    """The schema-1 result, sealed; `state` carries the accumulator so `merge` needs nothing else."""
    config = config_normalisation(model, stats.channels)
    result = ResultDict({
        keys.KEY_SCHEMA: keys.SCHEMA_VERSION,
        **headline(stats, posterior, population(recipe, skipped)),
        keys.KEY_UNIT: recipe.get("unit", "image"),
        keys.KEY_LATENT_SHAPE: latent_shape,
        keys.KEY_CONFIG_NORMALISED: None if config is None else {
            "convention": config[0], **stats.normalised(posterior, config[1], config[2])},
        keys.KEY_SKIPPED: skipped,
        keys.KEY_MODEL: model,
        keys.KEY_RECIPE: {**recipe, "posterior": posterior},
        keys.KEY_REFERENCES: dict(REFERENCES),
        keys.KEY_VERSIONS: versions(),
        keys.KEY_RUN: run,
        keys.KEY_STATE: stats.to_dict(),
    })
    result[keys.KEY_NORMALISATIONS] = normalisations(result)
    result[keys.KEY_STATE_SHA256] = state_checksum(result[keys.KEY_STATE])
    return result


def frames_result(frames: dict[str, PosteriorStats], posterior: str) -> dict[str, Any]:
    """The first latent frame and the later ones as separate estimates, plus their mergeable state."""
    out: dict[str, Any] = {}
    for name, stats in frames.items():
        chosen = stats.estimates()[stats.key(posterior)]
        out[name] = {k: chosen[k] for k in ESTIMATE}
        out[name]["num_elements"] = stats.base(posterior).num_elements
    out["state"] = {name: stats.to_dict() for name, stats in frames.items()}
    return out


def check_spread(stats: PosteriorStats, posterior: str, what: str) -> None:
    """Refuse latents without spread: a scale factor 1/std does not exist when std is 0.

    `what` names them for the user (e.g. "the merged results").
    """
    std = stats.normalised(posterior)["std"]
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


def check_headline(result: Result, where: str) -> PosteriorStats:
    """Refuse a result whose numbers are not those its (sealed) state gives; returns the statistics.

    So a hand-edited headline (0.3 where the state says 0.911) never reaches a config or a table."""
    stats = result.state.to_stats()
    posterior = result.recipe.posterior
    check_spread(stats, posterior, f"the units of {where}")
    exact = headline(stats, posterior, population(to_json(result.recipe), to_json(result.skipped)))
    doc = {**result.to_dict(), keys.KEY_NUM_UNITS: result.units}
    for key, value in exact.items():
        if _differs(doc.get(key), value, exact[keys.KEY_STD]):
            raise InputError(f"{where}: {key} is not what its state gives{_show(doc.get(key), value)}; "
                             f"{DAMAGED}")
    return stats


def _show(stated: Any, exact: Any) -> str:
    """The two numbers, where the field is one number."""
    if isinstance(exact, float) and isinstance(stated, float | int):
        return f" ({stated!r} stated, {exact:.6g} from the state)"
    return ""
