"""Building a result from the merged statistics (torch); reading one back checks it against its state
without torch (recompute). Both take the headline's fields from the estimates by `recompute.assemble`.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import torch

from ..conventions import config_normalisation, normalisations
from ..stats import PosteriorStats
from ..version import __version__
from . import keys
from .recompute import ESTIMATE, assemble, population, refuse_no_spread
from .seal import state_checksum

REFERENCES = {"sd1": 0.18215, "sdxl": 0.13025}


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


def headline(stats: PosteriorStats, posterior: str, dataset: int | None) -> dict[str, Any]:
    """The numbers a result states for `posterior`, all from the statistics."""
    return assemble(stats.estimates(dataset), posterior, stats.stochastic)


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
    """Refuse latents without spread (no scale factor 1/std exists); `what` names them for the user."""
    refuse_no_spread(stats.normalised(posterior)["std"], posterior, what)
