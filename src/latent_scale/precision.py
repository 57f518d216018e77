"""The precision check of a low-precision run: its first chunk, encoded again in float32.

bfloat16 keeps 8 bits of mantissa. Whether that moves the answer is measured on every such run, not
assumed: the run's encoder and a true float32 encoder (loaded in float32, not cast up) encode the same
images, and the relative difference of the two latent stds is the relative error bf16 adds to the
scale factor (1/std).
"""

from __future__ import annotations

import math
from typing import Any

import torch

DEFAULT_LIMIT = 1e-3  # the largest std difference accepted without --rel-tol


def precision_check(mu_low: torch.Tensor, mu_f32: torch.Tensor, dtype: torch.dtype | str) -> dict[str, Any]:
    """Compare the posterior means of one chunk: the run's dtype against float32 (both (B, C, ...)).

    std_rel_diff is signed, (std_low - std_float32) / std_float32 over all elements (ddof=1, as the
    result's std); mean_abs_diff_in_std is the mean |μ_low - μ_float32| in units of that std.
    """
    if mu_low.shape != mu_f32.shape:
        raise ValueError(f"precision check needs equal shapes, got {tuple(mu_low.shape)} and {tuple(mu_f32.shape)}")
    low, ref = mu_low.double(), mu_f32.double()
    std_low, std_ref = float(low.std()), float(ref.std())
    scale = std_ref if std_ref > 0 else math.nan
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "reference": "float32",
        "images": int(mu_low.shape[0]),
        "std": std_low,
        "std_float32": std_ref,
        "std_rel_diff": (std_low - std_ref) / scale,
        "mean_abs_diff_in_std": float((low - ref).abs().mean()) / scale,
    }


def precision_limit(rel_tol: float | None) -> float:
    """A quarter of --rel-tol (the low precision may use at most that share of the error budget)."""
    return rel_tol / 4 if rel_tol else DEFAULT_LIMIT


def precision_warning(check: dict[str, Any], rel_tol: float | None = None, units: str = "images") -> str | None:
    """One sentence when the low precision moved the std by more than precision_limit, else None;
    `units` is the source's word (images, clips, audio clips)."""
    diff, limit = abs(check["std_rel_diff"]), precision_limit(rel_tol)
    if not diff > limit:
        return None
    budget = "a quarter of --rel-tol" if rel_tol else "the default limit without --rel-tol"
    n = check["images"]
    counted = units.removesuffix("s") if n == 1 else f"{n} {units}"
    return (f"{check['dtype']} moved the latent std by {diff:.1e} relative to float32 on the first {counted}, "
            f"more than {limit:.1e} ({budget}); use --dtype float32 for this model")
