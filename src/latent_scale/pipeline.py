"""`estimate`: the recipe. Options -> source -> (encoder) -> loop -> merged statistics -> result(s)."""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
import warnings
from typing import Any

import torch
from tqdm import tqdm

from . import distributed
from .checkpoint import Checkpoint, ForceQuit, StopSignals
from .encode import ChunkedEncoder, Posterior
from .errors import InputError, Interrupted
from .forecast import forecast, postfix
from .io import check_checkpoint_path, check_output, write_json
from .loop import Accumulate, Run, consume, frames_from_dict, frames_to_dict, merge_frames
from .models import Encoder, load_model
from .options import Options, make_options, parse_shard
from .report import Result, build_result, frames_result, histogram_edges_for, population, speed
from .sources import open_source
from .sources.base import Source, loader, order
from .stats import PosteriorStats


def estimate(model: str | None = None, data: str | None = None, *, config: str | None = None,
             **options: Any) -> Result | list[Result]:
    """Measure the latent scale factor of `model` on `data`; see Options for every keyword.

    Returns a Result (a dict with attribute access) with the fields of the result JSON, or one
    Result per size when `size` lists several.
    """
    results = run(make_options(config, model=model, data=data, **options))
    return results[0] if len(results) == 1 else results


def run(opts: Options) -> list[Result]:
    """The recipe, in the order it happens."""
    rank, world = distributed.init()
    if opts.rel_tol is not None and world > 1:
        raise InputError("--rel-tol needs a single process; with torchrun use --limit")
    _check_outputs(opts, rank, world)
    source = open_source(opts)
    encoder = _load_encoder(opts, rank, world)
    positions = _positions(len(source), opts, rank, world)
    views = len(opts.sizes) if source.produces == "pixels" else 1
    recipe = {**opts.recipe(), **source.recipe(), "dtype": str(encoder.dtype).removeprefix("torch."),
              "dataset_size": len(source)}
    ckpt = Checkpoint.for_rank(opts.checkpoint, rank, world, _fingerprint(encoder, recipe, opts, world, source),
                               opts.checkpoint_every)
    state = (ckpt.resume() if opts.resume and ckpt else None) or Run.empty(views)
    chunked = _chunked(encoder, opts)
    step = Accumulate(state, source, _posterior(chunked), seed=opts.seed, strict=opts.strict,
                      edges=histogram_edges_for(encoder.info.to_dict()), stochastic=encoder.stochastic)
    workers = _workers(opts, len(positions))
    batches = loader(source, positions[state.done:], opts.batch_size, workers, encoder.device.type == "cuda")
    start = time.monotonic()
    reason = _measure(batches, step, state, opts, ckpt, total=len(positions), show=opts.progress and rank == 0,
                      unit=source.unit)
    seconds = time.monotonic() - start
    state.upcast_chunks += chunked.upcast_chunks
    if ckpt:
        ckpt.save(state)
    run_info = {"seconds": seconds, "device": str(encoder.device), "world_size": world, "shard": opts.shard,
                "batch_size": opts.batch_size, "chunk_size": chunked.chunk, "workers": workers,
                "stopped_early": reason is not None, "stop_reason": reason, "compile": opts.compile}
    results = _results(state, encoder, chunked, recipe, opts, run_info, rank, world)
    if opts.output and rank == 0:
        write_json(opts.output, results[0] if len(results) == 1 else results)
    return results


def _check_outputs(opts: Options, rank: int, world: int) -> None:
    """Refuse, before any work, to overwrite what is not ours (or a checkpoint without --resume)."""
    if opts.output and rank == 0:
        check_output(opts.output, inputs=[opts.checkpoint] if opts.checkpoint else (), force=opts.force)
    path = Checkpoint.path_for(opts.checkpoint, rank, world)
    if path:
        check_checkpoint_path(path, opts.resume, opts.force, inputs=[opts.output] if opts.output else ())


def _load_encoder(opts: Options, rank: int, world: int) -> Encoder:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    encoder = load_model(opts.model, subfolder=opts.subfolder, revision=opts.revision, variant=opts.variant,
                         device=distributed.device_for(opts.device, rank, world), dtype=opts.dtype)
    if not encoder.stochastic and opts.posterior != "mode":
        warnings.warn(f"{encoder.info.class_name} is deterministic: reporting the posterior mode", stacklevel=2)
    return encoder


def _positions(num_units: int, opts: Options, rank: int, world: int) -> list[int]:
    """This process's units: the seeded order, then --shard i/n, then the torchrun rank."""
    shard_i, shard_n = parse_shard(opts.shard)
    return order(num_units, opts.seed, opts.limit)[shard_i::shard_n][rank::world]


def _fingerprint(encoder: Encoder, recipe: dict[str, Any], opts: Options, world: int,
                 source: Source) -> dict[str, Any]:
    """What must match for a checkpoint to continue: model, recipe, split, and the unit list itself
    (a folder that gained or lost files would silently shift every later unit)."""
    info = encoder.info.to_dict()
    model = {k: info[k] for k in ("source", "subfolder", "revision", "variant", "class")}
    units = hashlib.sha256("\n".join(source.ids).encode()).hexdigest()[:16]
    return {"model": model, "recipe": recipe, "shard": opts.shard, "world": world, "images": units}


def _chunked(encoder: Encoder, opts: Options) -> ChunkedEncoder:
    def float32() -> Encoder:
        return load_model(opts.model, subfolder=opts.subfolder, revision=opts.revision, variant=opts.variant,
                          device=str(encoder.device), dtype="float32")

    auto = opts.chunk_size == "auto"
    return ChunkedEncoder(encoder, float32, opts.batch_size if auto else int(opts.chunk_size), auto,
                          count_flops=opts.crop, compile=opts.compile)


def _posterior(chunked: ChunkedEncoder) -> Any:
    def posterior(x: torch.Tensor) -> Posterior:
        return chunked(x)

    return posterior


def _workers(opts: Options, units: int) -> int:
    return opts.workers if opts.workers is not None else min(8, os.cpu_count() or 1, units)


def interval(state: Run, posterior: str) -> tuple[float, float]:
    """Running factor and 95 % half-width of the chosen posterior (nan until defined), worst view."""
    worst = (math.nan, math.nan)
    for stats in state.stats:
        if stats is None or stats.num_images < 2:
            return math.nan, math.nan
        f, half = stats.interval(posterior)
        if not half / f <= worst[1] / worst[0]:
            worst = (f, half)
    return worst


def _measure(batches: Any, step: Accumulate, state: Run, opts: Options, ckpt: Checkpoint | None, *,
             total: int, show: bool, unit: str) -> str | None:
    """Run the loop with progress, checkpoints, signals and --rel-tol; returns why it stopped early."""
    bar = tqdm(total=total, initial=state.done, unit=unit, file=sys.stderr, disable=not show, dynamic_ncols=True)
    signals = StopSignals()
    start, seen_before = time.monotonic(), state.num_units

    def after_batch(units: int) -> str | None:
        bar.update(units)
        f, half = interval(state, opts.posterior)
        seconds = (time.monotonic() - start) * state.num_units / max(state.num_units - seen_before, 1)
        hint = postfix(forecast(state.num_units, f, half, seconds, (opts.rel_tol,)))
        bar.set_postfix_str(f"factor {f:.5f} ± {half:.5f}" + (f", {hint}" if hint else ""), refresh=False)
        if signals.requested:
            raise KeyboardInterrupt
        if ckpt and ckpt.due():
            ckpt.save(state)
        if opts.rel_tol is not None and state.num_units >= opts.min_images and half < opts.rel_tol * f:
            return f"95% interval within ±{opts.rel_tol:g} after {state.num_units} {unit}s"
        return None

    try:
        with signals:
            return consume(batches, step, after_batch)
    except (KeyboardInterrupt, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not signals.requested:
            raise  # a real error, not a worker killed by the same Ctrl-C
        raise _interrupted(state, ckpt, isinstance(e, ForceQuit), unit) from None
    finally:
        bar.close()


def _interrupted(state: Run, ckpt: Checkpoint | None, force: bool, unit: str) -> Interrupted:
    if ckpt and not force:
        ckpt.save(state)
        return Interrupted(f"interrupted after {state.done} {unit}s; state saved to {ckpt.path}, "
                           "continue with --resume")
    return Interrupted(f"interrupted after {state.done} {unit}s; nothing new saved")


def _unmet(stats: PosteriorStats, opts: Options, stopped_early: bool) -> str | None:
    """Say so when --rel-tol was asked for and the data ran out first."""
    if opts.rel_tol is None or stopped_early:
        return None
    f, half = stats.interval(opts.posterior)
    return (f"not reached: ±{half / f:.3g} relative after all {stats.num_images} units "
            f"(asked ±{opts.rel_tol:g}; needs more data)")


def _results(state: Run, encoder: Encoder, chunked: ChunkedEncoder, recipe: dict[str, Any], opts: Options,
             run_info: dict[str, Any], rank: int, world: int) -> list[Result]:
    """One result per view, from the statistics of every rank merged in rank order."""
    results = []
    for v, size in enumerate(opts.sizes[:len(state.stats)]):
        extra = {"skipped": [s for s in state.skipped if s.get("view", v) == v], "upcast_chunks": state.upcast_chunks,
                 "latent_shape": state.latent_shapes[v], "frames": frames_to_dict(state.frames[v])}
        stats, parts = distributed.gather(state.stats[v], extra, rank, world)
        skipped = [{k: s[k] for k in ("path", "error")} for part in parts for s in part["skipped"]]
        if stats is None:
            raise InputError(f"no unit of --data {opts.latents or opts.data} could be used ({len(skipped)} skipped)")
        info = {**run_info, "upcast_chunks": sum(part["upcast_chunks"] for part in parts),
                "rel_tol_unmet": _unmet(stats, opts, run_info["stopped_early"]),
                "forecast": forecast(stats.num_images, *stats.interval(opts.posterior), run_info["seconds"],
                                     (opts.rel_tol,), population(recipe, skipped)),
                **speed(encoder, chunked.flops_per_unit, stats.num_images, run_info["seconds"])}
        shape = next(part["latent_shape"] for part in parts if part["latent_shape"])
        result = build_result(stats, encoder.info.to_dict(), {**recipe, "size": size}, skipped,
                              posterior=stats.key(opts.posterior), run=info, latent_shape=shape)
        frames = merge_frames([frames_from_dict(part["frames"]) for part in parts])
        if frames:
            result["frames"] = frames_result(frames, result["recipe"]["posterior"])
        results.append(result)
    return results
