"""The normalisation conventions diffusers pipelines apply to latents, and a result's values for each."""

from __future__ import annotations

import math
from typing import Any

# How diffusers pipelines apply each convention (the snippet's comment, and apply's names).
CONVENTIONS = {
    "scale": "SD 1.x/2.x, SDXL: latents = z * scaling_factor",
    "shift": "SD3, FLUX: latents = (z - shift_factor) * scaling_factor",
    "per_channel": "SDXL-style/Mochi/Wan pipelines: latents = (z - latents_mean) * scaling_factor / latents_std",
    "rms": "uncentred, no shift: mean((z * scaling_factor)^2) = 1",
}
# Every config.json key some convention writes; a convention's write removes the ones it does not write.
CONVENTION_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std")


def config_normalisation(info: dict[str, Any], channels: int) -> tuple[str, Any, Any] | None:
    """(convention, shift, scale) such that the model's own pipelines feed (z - shift) * scale
    to the diffusion model, per channel where the config has latents_mean/std; None if it says nothing."""
    factor = info.get("config_scaling_factor")
    mean, std = info.get("config_latents_mean"), info.get("config_latents_std")
    if mean and std and len(mean) == len(std) == channels:
        import torch  # here, so `apply` answers without importing torch

        scale = (factor or 1.0) / torch.tensor(std, dtype=torch.float64)
        return "per_channel", torch.tensor(mean, dtype=torch.float64), scale
    if factor:
        shift = info.get("config_shift_factor")
        return ("shift" if shift else "scale"), shift or 0.0, factor
    return None


def _sig(x: Any, digits: int = 6) -> float | None:
    """A config value to `digits` significant digits: far below the statistical error, easy to read;
    None where the result holds no finite number (apply refuses it, snippets show null)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        rounded = float(f"{x:.{digits}g}")
    except OverflowError:  # an int beyond float range
        return None
    return rounded if math.isfinite(rounded) else None


def _inverse(x: Any) -> float | None:
    """1/x, or None where x is no finite non-zero number (rms is 0 only when every latent is 0)."""
    return _sig(1 / x) if _sig(x) else None


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
        "rms": {"scaling_factor": _inverse(r["rms"])},
    }
