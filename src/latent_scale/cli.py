"""A thin command line over the Python API; maps user errors to one sentence and an exit code.

The `estimate` options are generated from `options.Options` (one home for defaults and help), and
torch, diffusers and PIL are imported only inside the commands that need them, so `--help`,
`--version`, `known` and a bad option answer at once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from .errors import EXIT_INTERRUPTED, InputError, Interrupted
from .options import Options
from .version import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure the latent scale factor (and shift) of a diffusers autoencoder.")


def flag(*names: str, **kwargs: Any) -> Any:
    """A yes/no option: off by default, shown without a type in the help."""
    return typer.Option(False, *names, metavar="", show_default=False, **kwargs)


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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"latent-scale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = flag("--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Measure the latent scale factor (and shift) of a diffusers autoencoder."""


def _cli_type(f: dataclasses.Field, hints: dict[str, Any]) -> Any:
    """The click-facing type of an Options field: its declared CLI type, else the non-None part."""
    kind = f.metadata.get("cli") or hints[f.name]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    kind = args[0] if args else kind
    return Optional[kind] if f.default is None else kind  # noqa: UP045 - typer needs typing.Optional


def _option_fields() -> list[tuple[dataclasses.Field, dict[str, Any]]]:
    """Every estimate option: the shared ones, then each source's own (with their type hints)."""
    from .sources import registered

    groups = [Options, *(cls.options for cls in registered() if cls.options)]
    return [(f, typing.get_type_hints(group)) for group in groups for f in dataclasses.fields(group)
            if f.metadata.get("cli") != "skip"]


def _estimate_signature() -> inspect.Signature:
    """ctx, every option as a typer.Option under its help panel, then the display-only options."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for f, hints in _option_fields():
        shown = f.metadata["shown"] or (f.default is not None and f.default is not False)
        yes_no = hints[f.name] is bool
        default = typer.Option(f.default, *f.metadata["flags"], help=f.metadata["help"], show_default=shown,
                               rich_help_panel=f.metadata["panel"], metavar="" if yes_no else None)
        params.append(inspect.Parameter(f.name, keyword, default=default, annotation=_cli_type(f, hints)))
    params += [
        inspect.Parameter("json_", keyword, annotation=bool, default=flag(
            "--json", help="Print the result JSON on stdout instead of the table", rich_help_panel="Output")),
        inspect.Parameter("snippets", keyword, annotation=bool, default=flag(
            "--snippets", help="Also print a diffusers config.json snippet per normalisation",
            rich_help_panel="Output")),
        inspect.Parameter("config", keyword, annotation=Optional[Path], default=typer.Option(  # noqa: UP045
            None, help="A TOML preset (see configs/); options given here override it", rich_help_panel="Model")),
    ]
    return inspect.Signature(params)


def _explicit(ctx: typer.Context) -> dict[str, Any]:
    """Only the options the user typed, so a --config preset fills in the rest."""
    return {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k).name != "DEFAULT"}


@user_errors
def estimate(ctx: typer.Context, **params: Any) -> None:
    """Estimate the scale factor of MODEL on DATA (images, video or audio clips, a dataset) or of stored
    --latents."""
    from .early_checks import check_paths
    from .options import make_options

    options = _explicit(ctx)
    json_, snippets = options.pop("json_", False), options.pop("snippets", False)
    config = options.pop("config", None)
    opts = make_options(str(config) if config else None, **options)  # fails fast, before torch is imported
    check_paths(opts)
    from . import distributed
    from .checkpoint import Checkpoint
    from .estimation import run

    results = run(opts)
    rank, world = distributed.init()
    if rank == 0:
        _show(results[0] if len(results) == 1 else results, json_, snippets)
        _wrote(opts.output, Checkpoint.path_for(opts.checkpoint, rank, world), opts.save_latents)


estimate.__signature__ = _estimate_signature()
app.command(name="estimate")(estimate)


def _wrote(*paths: str | Path | None) -> None:
    """One `wrote PATH` line per file or folder written, on stderr for every command, so stdout holds
    only the table or pure JSON."""
    for path in filter(None, paths):
        typer.echo(f"wrote {path}", err=True)


def _show(result: dict | list[dict], json_: bool, snippets: bool) -> None:
    """The table (one line per size for a sweep), or the JSON."""
    from .report import format_snippets, format_sweep, format_table

    if json_:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(format_sweep(result) if isinstance(result, list) else format_table(result))
    if snippets and isinstance(result, dict):
        typer.echo("\n" + format_snippets(result))


@app.command()
@user_errors
def merge(
    results: list[Path] = typer.Argument(..., help="Result JSON files of the shards."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the merged result."),
    force: bool = flag("--force", help="Replace an existing file that is not a latent-scale result."),
    json_: bool = flag("--json", help="Print the merged JSON instead of the table."),
    snippets: bool = flag("--snippets", help="Also print a diffusers config.json snippet per normalisation."),
) -> None:
    """Combine shard results exactly into one result (a --size sweep: size by size)."""
    from .merge import merge_files

    _show(merge_files(results, output, force=force), json_, snippets)
    _wrote(output)


@app.command()
@user_errors
def compare(
    results: list[Path] = typer.Argument(..., help="Result JSON files (a --size sweep file gives one per size)."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Also draw the per-channel histograms overlaid (needs matplotlib)."),
    json_: bool = flag("--json", help="Print the comparison as JSON."),
    force: bool = flag("--force",
                               help="Let -o replace an existing file that is not a latent-scale plot."),
) -> None:
    """Results side by side, and whether their factors differ beyond their 95 % intervals."""
    from .compare import check_overlay, compare_results, format_comparison, load_results
    from .outputs import check_output

    if output:
        check_output(output, inputs=results, what="-o", kind="plot", force=force)
    found, names = load_results(results)
    cmp = compare_results(found, names)
    if output:
        check_overlay(found, names)  # refuse before printing anything
    typer.echo(json.dumps(cmp, indent=2) if json_ else format_comparison(cmp))
    if output:
        from .plot import plot_compare

        _wrote(plot_compare(found, names, output))


@app.command()
@user_errors
def known(
    model: str | None = typer.Option(None, help="Show this hub id's entry (and its per-channel values)."),
    registry: list[Path] = typer.Option([], help="An extra registry TOML file (repeatable); later files win."),
    json_: bool = flag("--json", help="Print JSON instead of text."),
    classes: bool = flag("--classes", help="Every autoencoder class of the installed diffusers, "
                                 "with its status here (supported: input, posteriors; or refused, and why)."),
) -> None:
    """Published scale factors (and shifts, per-channel constants), each with its source."""
    from .known import describe, known_factors, lookup, summary_table

    if classes:
        if model is not None or registry:
            raise InputError("--classes lists the autoencoder classes of diffusers; --model and --registry belong "
                             "to the published factors: run `latent-scale known` with them instead")
        from .known import classes_table
        from .models.status import class_statuses

        rows = class_statuses()
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2) if json_ else classes_table(rows))
        return
    if model is not None:
        entry = lookup(model, registry)
        if entry is None:
            raise InputError(f"no published values for {model!r}; `latent-scale known` lists the known models "
                             "(add yours with --registry FILE)")
        typer.echo(json.dumps(entry.to_dict(), indent=2) if json_ else describe(entry))
        return
    entries = known_factors(registry)
    typer.echo(json.dumps([e.to_dict() for e in entries], indent=2) if json_ else summary_table(entries))


@app.command()
@user_errors
def apply(
    result: Path = typer.Argument(..., help="A result JSON of latent-scale estimate or merge."),
    to: str = typer.Option(..., help="The local VAE (or pipeline) folder whose config.json to update."),
    shift: bool = flag("--shift", help="Write shift_factor and scaling_factor (SD3/FLUX convention)."),
    per_channel: bool = flag("--per-channel", help="Write latents_mean/latents_std and scaling_factor 1."),
    rms: bool = flag("--rms", help="Write the uncentred factor 1/rms as scaling_factor."),
    subfolder: str | None = typer.Option(None, help="Subfolder of --to holding the VAE's config.json."),
    dry_run: bool = flag("--dry-run", help="Print what would be set and removed; write nothing."),
    force: bool = flag("--force", help="Write into a config of another class than the one measured."),
    size: int | None = typer.Option(None, help="The entry of a --size sweep result to apply."),
) -> None:
    """Write the measured factor into a local VAE's config.json (atomically; the original stays as .bak)."""
    from .apply import apply_result, describe_apply

    done = apply_result(result, to, shift=shift, per_channel=per_channel, rms=rms, subfolder=subfolder,
                        dry_run=dry_run, force=force, size=size)
    typer.echo(describe_apply(done))
    if done["changed"] and not dry_run:
        _wrote(done["backup"], done["config"])


@app.command()
@user_errors
def plot(
    result: Path = typer.Argument(..., help="A result JSON of latent-scale estimate or merge."),
    output: Path = typer.Option(..., "--output", "-o", help="Image file to write (png, pdf, svg ...)."),
    force: bool = flag("--force", help="Let -o replace an existing file that is not a latent-scale plot."),
    size: int | None = typer.Option(None, help="Plot only this size of a --size sweep (default: a row per size)."),
) -> None:
    """Per-channel histograms of the scaled latents against a unit normal (needs matplotlib)."""
    from .outputs import check_output
    from .plot import plot_result

    check_output(output, inputs=[result], what="-o", kind="plot", force=force)
    _wrote(plot_result(result, output, size=size))


def _warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"latent-scale: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2 (130 when interrupted)."""
    with warnings.catch_warnings():  # scoped, so calling main() in-process leaks nothing
        warnings.showwarning = _warning
        warnings.filterwarnings("ignore")  # library deprecation noise is not the user's business
        warnings.filterwarnings("always", module=r"latent_scale(\.|$)")
        try:
            sys.exit(_run(argv))
        finally:
            if "latent_scale.distributed" in sys.modules:
                sys.modules["latent_scale.distributed"].shutdown()


def _run(argv: list[str] | None) -> int:
    """The app's exit code; a mistyped command line (an unknown option, a missing value) is one sentence
    like every other user error, not click's framed panel."""
    try:
        code = app(args=argv, prog_name="latent-scale", standalone_mode=False)
    except typer.Abort:  # Ctrl-C while the command line itself was being read
        print("latent-scale: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        # click's UsageError (typer vendors its own click, so it is matched by name): the help was printed
        # for a bare `latent-scale`; anything else is a mistyped command line
        kinds = {kind.__name__ for kind in type(e).__mro__}
        if "UsageError" not in kinds:
            raise
        if "NoArgsIsHelpError" not in kinds:
            where = e.ctx.command_path if getattr(e, "ctx", None) else "latent-scale"
            print(f"latent-scale: error: {e.format_message().rstrip('.')}; see `{where} --help`", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0
