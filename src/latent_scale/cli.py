"""A thin command line over the Python API; maps user errors to one sentence and an exit code."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from . import distributed
from .apply import apply_result
from .errors import EXIT_INTERRUPTED, InputError, Interrupted
from .estimate import estimate as run_estimate
from .io import read_json, write_json
from .known import known_factors, lookup
from .merge import merge_results
from .report import format_snippets, format_table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure the latent scale factor (and shift) of a diffusers autoencoder.")


def _explicit(ctx: typer.Context) -> dict:
    """Only the options the user typed, so a --config preset fills in the rest."""
    return {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k).name != "DEFAULT"}


def user_errors(command: Callable) -> Callable:
    """Turn InputError / Interrupted / Ctrl-C into one line on stderr and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InputError as e:
            print(f"latent-scale: error: {e}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except Interrupted as e:
            print(f"latent-scale: {e}", file=sys.stderr)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            print("latent-scale: interrupted", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


@app.command()
@user_errors
def estimate(
    ctx: typer.Context,
    model: str = typer.Option(
        "CompVis/stable-diffusion-v1-4",
        help="Hub id, diffusers folder (pipeline or VAE), or single .safetensors/.ckpt file."),
    data: str = typer.Option(
        "imagenette", help="imagenette, samples, an image folder, a .txt list of paths, or 'shards/*.tar'."),
    size: int = typer.Option(512, help="Resize the shorter side, then center crop to size×size."),
    crop: bool = typer.Option(True, help="Center crop to size×size; --no-crop keeps the aspect ratio (one by one)."),
    posterior: str = typer.Option("sample", help="sample, mode or expected_sample (all three are in the JSON)."),
    seed: int = typer.Option(0, help="Seeds the image order (for --limit) and the posterior noise."),
    batch_size: int = typer.Option(12, help="Images per DataLoader batch."),
    chunk_size: str = typer.Option("auto", help="Images per encode() call; auto halves on out-of-memory."),
    limit: int | None = typer.Option(None, help="Stop after N images of a seeded shuffled order."),
    rel_tol: float | None = typer.Option(None, help="Stop once the 95% interval is within ±rel_tol of the factor."),
    min_images: int = typer.Option(50, help="--rel-tol never stops before this many images."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16."),
    workers: int | None = typer.Option(None, help="DataLoader worker processes [default: min(8, cores)]."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the encoder (worth it on GPUs, long runs)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the result JSON here (atomically)."),
    json_: bool = typer.Option(False, "--json", help="Print the result JSON on stdout instead of the table."),
    snippets: bool = typer.Option(False, help="Also print a diffusers config.json snippet per normalisation."),
    checkpoint: Path | None = typer.Option(None, help="Save state here periodically and on Ctrl-C/SIGTERM."),
    checkpoint_every: float = typer.Option(60.0, help="Seconds between checkpoint saves."),
    resume: bool = typer.Option(False, help="Continue from --checkpoint."),
    shard: str | None = typer.Option(None, help="i/n: take images i, i+n, …; combine with `merge`."),
    strict: bool = typer.Option(False, help="Stop at the first unreadable image (exit 2)."),
    subfolder: str | None = typer.Option(None, help="Subfolder of the model holding the VAE."),
    revision: str | None = typer.Option(None, help="Hub revision."),
    variant: str | None = typer.Option(None, help="Weights variant, e.g. fp16."),
    cache_dir: Path | None = typer.Option(None, help="Dataset cache [default: $XDG_CACHE_HOME/latent-scale]."),
    progress: bool = typer.Option(True, help="Show the progress bar on stderr."),
    config: Path | None = typer.Option(None, help="A TOML preset (see configs/); options given here override it."),
) -> None:
    """Estimate the scale factor of MODEL on DATA."""
    options = _explicit(ctx)
    options.pop("config", None)
    options.pop("json_", None)
    options.pop("snippets", None)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    result = run_estimate(config=str(config) if config else None, **options)
    if distributed.init()[0] == 0:
        _show(result, json_, snippets)


def _show(result: dict, json_: bool, snippets: bool) -> None:
    typer.echo(json.dumps(result, indent=2) if json_ else format_table(result))
    if snippets and not json_:
        typer.echo("\n" + format_snippets(result))


@app.command()
@user_errors
def merge(
    results: list[Path] = typer.Argument(..., help="Result JSON files of the shards."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the merged result."),
    json_: bool = typer.Option(False, "--json", help="Print the merged JSON instead of the table."),
    snippets: bool = typer.Option(False, help="Also print a diffusers config.json snippet per normalisation."),
) -> None:
    """Combine shard results exactly into one result."""
    merged = merge_results([read_json(p) for p in results])
    write_json(output, merged)
    _show(merged, json_, snippets)


@app.command()
@user_errors
def known(
    model: str | None = typer.Option(None, help="Show this hub id's entry (and its per-channel values)."),
    registry: list[Path] = typer.Option([], help="An extra registry TOML file (repeatable); later files win."),
    json_: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Published scale factors (and shifts, per-channel constants), each with its source."""
    if model is not None:
        entry = lookup(model, registry)
        if entry is None:
            raise InputError(f"no published values for {model!r}; `latent-scale known` lists the known models "
                             "(add yours with --registry FILE)")
        typer.echo(json.dumps(entry.to_dict(), indent=2) if json_ else _describe(entry))
        return
    entries = known_factors(registry)
    if json_:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    rows = [("model", "published", "e.g. id", "source")]
    for e in entries:
        values = "latents_mean/std" if e.scaling_factor is None else f"{e.scaling_factor:g}"
        values += f" shift {e.shift_factor:g}" if e.shift_factor is not None else ""
        values += " + latents_mean/std" if e.scaling_factor is not None and e.latents_mean else ""
        rows.append((e.name, values, e.ids[0], e.source))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])


def _describe(entry) -> str:  # noqa: ANN001 - a known.Published
    rows = [("name", entry.name), ("ids", ", ".join(entry.ids))]
    for key in ("scaling_factor", "shift_factor", "latents_mean", "latents_std"):
        value = getattr(entry, key)
        if value is not None:
            rows.append((key, ", ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"))
    rows += [("source", entry.source)] + ([("notes", entry.notes)] if entry.notes else [])
    return "\n".join(f"{k:<14}  {v}" for k, v in rows)


@app.command()
@user_errors
def apply(
    result: Path = typer.Argument(..., help="A result JSON of latent-scale estimate or merge."),
    to: str = typer.Option(..., help="The local VAE (or pipeline) folder whose config.json to update."),
    shift: bool = typer.Option(False, help="Write shift_factor and scaling_factor (SD3/FLUX convention)."),
    per_channel: bool = typer.Option(False, help="Write latents_mean/latents_std and scaling_factor 1."),
    rms: bool = typer.Option(False, help="Write the uncentred factor 1/rms as scaling_factor."),
    subfolder: str | None = typer.Option(None, help="Subfolder of --to holding the VAE's config.json."),
) -> None:
    """Write the measured factor into a local VAE's config.json (atomically; the old one stays as .bak)."""
    done = apply_result(result, to, shift=shift, per_channel=per_channel, rms=rms, subfolder=subfolder)
    written = ", ".join(f"{k}={v if not isinstance(v, list) else f'[{len(v)} values]'}"
                        for k, v in done["written"].items())
    typer.echo(f"wrote {written} into {done['config']} (previous config: {done['backup']})")


@app.command()
@user_errors
def plot(
    result: Path = typer.Argument(..., help="A result JSON of latent-scale estimate or merge."),
    output: Path = typer.Option(..., "--output", "-o", help="Image file to write (png, pdf, svg ...)."),
) -> None:
    """Per-channel histograms of the scaled latents against a unit normal (needs matplotlib)."""
    from .plot import plot_result

    typer.echo(f"wrote {plot_result(result, output)}")


def _warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"latent-scale: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (130 when interrupted)."""
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    with warnings.catch_warnings():  # scoped, so calling main() in-process leaks nothing
        warnings.showwarning = _warning
        warnings.filterwarnings("ignore")  # library deprecation noise is not the user's business
        warnings.filterwarnings("always", module=r"latent_scale(\.|$)")
        try:
            app(args=argv, prog_name="latent-scale")
        finally:
            distributed.shutdown()
