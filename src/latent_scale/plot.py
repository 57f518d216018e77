"""Per-channel histograms of the scaled latents against a unit normal (matplotlib is optional)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .io import read_json
from .stats import LatentStats, PosteriorStats

INSTALL_HINT = "pip install 'latent-scale[plot]'"


def channel_densities(result: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(edges, density, outside) of z·scale_factor: edges (K+1,) in scaled units, density (C, K)
    normalised to each channel's count (so it compares with the N(0, 1) pdf), outside (C,)
    the fraction of values beyond the outer edges."""
    state = result.get("state")
    if not state:
        raise InputError("the result has no `state`; plot needs a result JSON written by latent-scale estimate")
    latent: LatentStats = PosteriorStats.from_dict(state).realised(result["recipe"]["posterior"])
    if latent.histogram is None:
        raise InputError("the result has no histogram (written by an older latent-scale); run estimate again")
    edges = latent.histogram.edges * result["scale_factor"]
    counts = latent.histogram.counts.to(torch.float64)
    total = counts.sum(1, keepdim=True).clamp(min=1)
    density = counts[:, 1:-1] / total / (edges[1:] - edges[:-1])
    return edges, density, (counts[:, 0] + counts[:, -1]) / total[:, 0]


def plot_result(result: dict[str, Any] | str | Path, output: str | Path) -> Path:
    """Draw one panel per channel: the histogram of z·scale_factor and the N(0, 1) density.

    Why per channel: a global factor can hide channels that are shifted or much wider than
    the others, which is exactly when per-channel latents_mean/std help.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(f"plot needs matplotlib; install it with {INSTALL_HINT}") from None
    r = read_json(result) if isinstance(result, (str, Path)) else result
    edges, density, outside = channel_densities(r)
    f = r["scale_factor"]
    means = [m * f for m in r["per_channel"]["mean"]]
    stds = [s * f for s in r["per_channel"]["std"]]
    reach = max(4.0, max(abs(m) + 4 * s for m, s in zip(means, stds, strict=True)))
    x = torch.linspace(-reach, reach, 401, dtype=torch.float64)
    normal = torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    channels = density.shape[0]
    cols = min(channels, 4 if channels <= 16 else 8)
    rows = math.ceil(channels / cols)
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for c, ax in enumerate(axes.flat):
        if c >= channels:
            ax.set_visible(False)
            continue
        ax.stairs(density[c].numpy(), edges.numpy(), fill=True, alpha=0.6, label="latents")
        ax.plot(x.numpy(), normal.numpy(), color="black", lw=1, label="N(0, 1)")
        ax.set_xlim(-reach, reach)
        ax.set_title(f"ch {c}: mean {means[c]:+.2f}, std {stds[c]:.2f}", fontsize=9)
        if outside[c] > 0:
            ax.text(0.02, 0.95, f"{100 * float(outside[c]):.2g}% off-range", transform=ax.transAxes,
                    fontsize=7, va="top")
    axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{r['model'].get('source', '')}: z × {f:.5f} ({r['num_images']} images, "
                 f"posterior {r['recipe']['posterior']})", fontsize=10)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
