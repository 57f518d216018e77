"""Per-channel histograms of the scaled latents against a unit normal (matplotlib is optional)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import InputError
from .outputs import plot_mark, write_atomic
from .schema import Result
from .schema.sweep import pick_size, read_result_file, read_results

if TYPE_CHECKING:
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'latent-scale[plot]'"


def channel_densities(result: Result) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(edges, density, outside) of z·scale_factor: edges (K+1,) in scaled units, density (C, K)
    normalised to each channel's count (so it compares with the N(0, 1) pdf), outside (C,)
    the fraction of values beyond the outer edges."""
    histogram = result.state.to_stats().realised(result.recipe.posterior).histogram  # the latents seen
    edges = histogram.edges * result.scale_factor
    counts = histogram.counts.to(torch.float64)
    total = counts.sum(1, keepdim=True).clamp(min=1)
    density = counts[:, 1:-1] / total / (edges[1:] - edges[:-1])
    return edges, density, (counts[:, 0] + counts[:, -1]) / total[:, 0]


def plot_result(result: dict[str, Any] | list[dict[str, Any]] | str | Path, output: str | Path,
                size: int | None = None) -> Path:
    """Write result_figure to `output`: of every size of a sweep, or of the one `size` picks."""
    results = read_result_file(result) if isinstance(result, (str, Path)) else read_results(result, "the result")
    if size is not None:
        results = [pick_size(results, size, str(result) if isinstance(result, (str, Path)) else "the result",
                             "plot")]
    return _save(result_figure(results), output)


def plot_compare(results: list[Result], names: list[str], output: str | Path) -> Path:
    """Write compare_figure to `output`."""
    return _save(compare_figure(results, names), output)


def result_figure(results: list[Result]) -> Figure:
    """Per channel, the histogram of z·scale_factor and the N(0, 1) density; one row of panels per
    size of a sweep, each size scaled by its own factor.

    Why per channel: a global factor can hide channels that are shifted or much wider than
    the others, which is exactly when per-channel latents_mean/std help.
    """
    reach = _reach(results)
    first = results[0]
    labels = tuple(f"size {r.recipe.size}: density" if len(results) > 1 else "density" for r in results)
    fig, axes = _panels(first.state.channels, ylabels=labels)
    for r, row in zip(results, axes, strict=True):
        edges, density, outside = channel_densities(r)
        f = r.scale_factor
        for c, ax in enumerate(row):
            ax.stairs(density[c].numpy(), edges.numpy(), fill=True, alpha=0.6, label="latents")
            _normal(ax, reach)
            ax.set_title(f"ch {c}: mean {r.per_channel.mean[c] * f:+.2f}, std {r.per_channel.std[c] * f:.2f}",
                         fontsize=9)
            if outside[c] > 0:
                ax.text(0.02, 0.95, f"{100 * float(outside[c]):.2g}% off-range", transform=ax.transAxes,
                        fontsize=7, va="top")
    axes[0][0].legend(fontsize=7, loc="upper right")
    factors = ", ".join(f"{r.scale_factor:.5f}" for r in results)
    sizes = f" at sizes {', '.join(str(r.recipe.size) for r in results)}" if len(results) > 1 else ""
    fig.suptitle(f"{_measured(first)}: z × {factors}{sizes} ({first.units} {first.unit_name}s, posterior "
                 f"{first.recipe.posterior})", fontsize=10)
    return fig


def _measured(r: Result) -> str:
    """What was measured, for a title: the model, the stored latents when none was given, or neither
    (a latent_scale.Accumulator's result knows no file)."""
    if r.model.source:
        return r.model.source
    return f"latents in {r.recipe.data}" if r.recipe.data else f"latents of a {r.model.class_name or 'VAE'}"


def compare_figure(results: list[Result], names: list[str]) -> Figure:
    """Each result's per-channel histogram of z × its own factor, overlaid: a linear panel for the
    body and a log-density panel below it for the tails, where VAEs differ most."""
    from .compare import check_overlay

    check_overlay(results, names)
    reach = _reach(results, tails=True)
    densities = [channel_densities(r) for r in results]
    fig, (body, tails) = _panels(results[0].state.channels, ylabels=("density", "density (log)"))
    for c, (top, low) in enumerate(zip(body, tails, strict=True)):
        for (edges, density, _), r, name in zip(densities, results, names, strict=True):
            for ax in (top, low):
                ax.stairs(density[c].numpy(), edges.numpy(), lw=1.2, label=f"{name} (× {r.scale_factor:.5g})")
        for ax in (top, low):
            _normal(ax, reach)
        low.set_yscale("log")
        seen = torch.cat([d[c][d[c] > 0] for _, d, _ in densities])
        if len(seen):  # the rarest bin any result filled: the tails, not empty bins' -inf
            low.set_ylim(bottom=float(seen.min()) / 2)
        top.set_title(f"ch {c}", fontsize=9)
    handles, labels = body[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    fig.suptitle(f"per-channel latents × each result's own scale factor ({len(results)} results)", fontsize=10)
    return fig


def _reach(results: list[Result], tails: bool = False) -> float:
    """Half the x range: 4 std beyond the farthest channel mean, and with `tails` the farthest
    value seen (up to 10 units), all in scaled units."""
    reach = 4.0
    for r in results:
        f, per = r.scale_factor, r.per_channel
        reach = max(reach, *(abs(m * f) + 4 * s * f for m, s in zip(per.mean, per.std, strict=True)
                             if m is not None and s is not None))
        seen = [x for x in per.min + per.max if x is not None]
        if tails and seen:
            reach = max(reach, min(10.0, f * max(abs(x) for x in seen)))
    return reach


def _normal(ax: Any, reach: float) -> None:
    """The N(0, 1) density every scaled channel should match, and the shared x range."""
    x = torch.linspace(-reach, reach, 401, dtype=torch.float64)
    ax.plot(x.numpy(), (torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)).numpy(), color="black", lw=1,
            ls="--", label="N(0, 1)")
    ax.set_xlim(-reach, reach)


def _panels(channels: int, ylabels: tuple[str, ...]) -> tuple[Figure, list[list[Any]]]:
    """A grid of channels (4 columns, 8 past 16 channels), each one axes tall per y label;
    returns the figure and, per y label, the channels' axes (unused ones hidden)."""
    rows_per_channel = len(ylabels)
    cols = min(channels, 4 if channels <= 16 else 8)
    rows = math.ceil(channels / cols)
    fig = _figure_class()(figsize=(3.2 * cols, (2.4 * rows + 0.2) * rows_per_channel + 0.4), layout="constrained")
    grid = fig.subplots(rows * rows_per_channel, cols, squeeze=False, sharex=True)
    kinds = [[grid[r * rows_per_channel + k][c] for r in range(rows) for c in range(cols)]
             for k in range(rows_per_channel)]
    for ax in (ax for kind in kinds for ax in kind[channels:]):
        ax.set_visible(False)
    for ax in grid[-1]:
        ax.set_xlabel("z × scale factor", fontsize=8)
    for kind, label in zip(kinds, ylabels, strict=True):
        for ax in kind[::cols]:
            ax.set_ylabel(label, fontsize=8)
    return fig, [kind[:channels] for kind in kinds]


def _figure_class() -> type:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(f"plot needs matplotlib; install it with {INSTALL_HINT}") from None
    return Figure


def _save(fig: Figure, output: str | Path) -> Path:
    """Render in memory in the format the suffix names, then write atomically keeping the file's mode."""
    out = Path(output)
    fmt = out.suffix.lower().lstrip(".") or "png"
    supported = [k for k in fig.canvas.get_supported_filetypes() if plot_mark(k)]  # re-plots replace only ours
    if fmt not in supported:
        raise InputError(f"cannot draw a .{fmt} picture; end -o with one of "
                         f"{', '.join('.' + k for k in sorted(supported))}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=100, **plot_mark(fmt))
    write_atomic(out, buffer.getvalue())
    return out
