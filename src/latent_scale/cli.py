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
from .errors import EXIT_INTERRUPTED, InputError, Interrupted
from .estimate import estimate as run_estimate
from .report import format_table, merge_results, read_json, write_json

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
    data: str = typer.Option("imagenette", help="imagenette, samples, an image folder, or a .txt list of paths."),
    size: int = typer.Option(512, help="Resize the shorter side, then center crop to size×size."),
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
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the result JSON here (atomically)."),
    json_: bool = typer.Option(False, "--json", help="Print the result JSON on stdout instead of the table."),
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
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    result = run_estimate(config=str(config) if config else None, **options)
    if distributed.init()[0] == 0:
        typer.echo(json.dumps(result, indent=2) if json_ else format_table(result))


@app.command()
@user_errors
def merge(
    results: list[Path] = typer.Argument(..., help="Result JSON files of the shards."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the merged result."),
    json_: bool = typer.Option(False, "--json", help="Print the merged JSON instead of the table."),
) -> None:
    """Combine shard results exactly into one result."""
    merged = merge_results([read_json(p) for p in results])
    write_json(output, merged)
    typer.echo(json.dumps(merged, indent=2) if json_ else format_table(merged))


def _warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"latent-scale: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (130 when interrupted)."""
    warnings.showwarning = _warning
    warnings.filterwarnings("ignore")  # library deprecation noise is not the user's business
    warnings.filterwarnings("always", module=r"latent_scale(\.|$)")
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    try:
        app(args=argv, prog_name="latent-scale")
    finally:
        distributed.shutdown()
