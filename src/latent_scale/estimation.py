"""`estimate`: the recipe. Options -> source -> (encoder) -> loop -> merged statistics -> result(s)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from . import distributed
from .checkpoint import Checkpoint
from .distributed import RunContext
from .encode import ChunkedEncoder, Posterior, speed
from .errors import InputError
from .forecast import forecast
from .hardware import chunk_budget
from .identity import data_identity, model_identity, prefetch_weight_hashes
from .loop import Accumulate, StopRule, drive
from .models import Encoder, load_model
from .options import DEFAULT_MODEL, Options, make_options, parse_shard
from .outputs import check_run_outputs, write_json
from .precision import precision_warning
from .saved_latents import LatentWriter
from .schema.build import ResultDict, build_result, check_spread, frames_result, population
from .sources import context_for, open_source, source_named
from .sources.base import Source, order
from .sources.batches import loader
from .sources.images import cache_root
from .state import Run, frames_from_dict, frames_to_dict, merge_frames
from .stats import PosteriorStats, histogram_edges_for


def estimate(model: str | None = None, data: str | None = None, *, config: str | None = None,
             **options: Any) -> ResultDict | list[ResultDict]:
    """Measure the latent scale factor of `model` on `data`; see Options for every keyword.

    Returns a ResultDict (a dict with attribute access) with the fields of the result JSON, or one
    ResultDict per size when `size` lists several.
    """
    results = run(make_options(config, model=model, data=data, **options))
    return results[0] if len(results) == 1 else results


NO_MODEL = {"source": None, "class": None}  # --latents without --model


@dataclass
class Posteriors:
    """What turns a batch of units into (mean, logvar | None): the encoder for pixels, the source
    itself for cached latents; plus what the result says about it."""

    fn: Callable[[torch.Tensor], Posterior]
    model: dict[str, Any]  # the result's `model` field, with its content identity
    device: torch.device
    dtype: str
    stochastic: bool
    chunked: ChunkedEncoder | None = None


def run(opts: Options) -> list[ResultDict]:
    """The recipe, in the order it happens. Torch's thread count (which loader workers lower on CPU) is
    the caller's again afterwards."""
    threads = torch.get_num_threads()
    try:
        with _collector_off_old_objects():
            return _run(opts)
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _collector_off_old_objects() -> Iterator[None]:
    """Freeze what existed before the run (torch's module graph) for its duration: listing and reading
    many small files makes objects fast enough to start full collections, each of which walked that
    graph (0.2 s of a 0.5 s run over 2,000 latent files). A caller that froze objects itself keeps them."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run(opts: Options) -> list[ResultDict]:
    rank, world = distributed.init()
    ctx = RunContext(rank, world, *parse_shard(opts.shard))
    _check_run(opts, ctx)
    source, posteriors = _source_and_posteriors(opts, ctx)
    opts = _settled(opts, source, posteriors.stochastic)
    positions = ctx.positions(order(len(source), opts.seed, opts.limit))
    recipe = _recipe(opts, source, posteriors)
    ckpt = Checkpoint.for_rank(opts.checkpoint, rank, world, _fingerprint(posteriors, recipe, opts, world),
                               opts.checkpoint_every, ids=source.ids, positions=len(positions), unit=source.unit,
                               sizes=opts.sizes)
    state = (ckpt.resume() if opts.resume and ckpt else None) or Run.empty(len(source.views()))
    cache = _latent_cache(opts, state, ckpt, posteriors, recipe, ctx)
    step = Accumulate(state, source, posteriors.fn, seed=opts.seed, strict=opts.strict, cache=cache,
                      edges=histogram_edges_for(posteriors.model),
                      stochastic=posteriors.stochastic)
    workers = _workers(opts, len(positions), posteriors.device)
    batches = loader(source, positions[state.done:], opts.batch_size, workers, posteriors.device.type == "cuda")
    start = time.monotonic()
    reason = drive(batches, step, state, StopRule(opts.posterior, opts.rel_tol, opts.min_units), ckpt,
                   total=len(positions), show=opts.progress and rank == 0)
    run_info = {"seconds": time.monotonic() - start, "device": str(posteriors.device), "world_size": world,
                "shard": opts.shard, "batch_size": opts.batch_size, "workers": workers,
                "stopped_early": reason is not None, "stop_reason": reason, "compile": opts.compile}
    _finish(state, ckpt, cache, posteriors, run_info, opts.rel_tol, source.units)
    results = _results(state, posteriors, source, recipe, opts, run_info, ctx)
    if opts.output and rank == 0:
        write_json(opts.output, results[0] if len(results) == 1 else results)
    return results


def _settled(opts: Options, source: Source, stochastic: bool) -> Options:
    """The posterior and seed not given: the data's own where it records them (a --save-latents folder:
    its run's), else sample (mode where there is no posterior spread) and 0. A posterior the data
    cannot give is refused, never replaced by another."""
    recorded = source.defaults()
    posterior = opts.posterior or recorded.get("posterior") or ("sample" if stochastic else "mode")
    seed = opts.seed if opts.seed is not None else recorded.get("seed", 0)
    if posterior != "mode" and not stochastic and source.input == "latents":
        raise InputError(f"--latents {opts.latents} holds posterior means only (no logvar), so it cannot give "
                         f"--posterior {posterior}; use --posterior mode, or store mean ‖ logvar (--moments)")
    return dataclasses.replace(opts, posterior=posterior, seed=seed)


def _recipe(opts: Options, source: Source, posteriors: Posteriors) -> dict[str, Any]:
    """The recipe, built once: what determines the numbers (the options', the source's and the
    encoder's parts), plus what the data is by content."""
    return {**opts.recipe(), "source": source.kind, **source.recipe(), "unit": source.unit,
            "dtype": posteriors.dtype, "dataset_size": len(source),
            "data_identity": data_identity(source.ids, source.root, source.signature())}


def _check_run(opts: Options, ctx: RunContext) -> None:
    """Refuse, before any work: what the split cannot do, and overwriting what is not ours."""
    if opts.rel_tol is not None and ctx.world > 1:
        raise InputError("--rel-tol needs a single process; with torchrun use --limit")
    if opts.save_latents and (opts.latents or len(opts.sizes) > 1):
        raise InputError("--save-latents writes the latents of one encoding run: drop --latents or the --size list")
    check_run_outputs(opts, Checkpoint.path_for(opts.checkpoint, ctx.rank, ctx.world), ctx.rank)


def _source_and_posteriors(opts: Options, ctx: RunContext) -> tuple[Source, Posteriors]:
    """The model first (its family says which input kinds it takes), then the first source that takes
    --data; stored latents go to the latent source, checked against the optional --model's channels."""
    if opts.model:  # a local model's weights are hashed (for its identity) while it loads
        prefetch_weight_hashes(opts.model, opts.subfolder, cache_root(opts.cache_dir))
    if opts.latents:
        encoder = _load_encoder(opts, "cpu", "float32") if opts.model else None
        channels = encoder.info.latent_channels if encoder else None
        source = source_named("latents").open(opts.latents, context_for(opts, "latents", channels))
        _refuse_foreign_options(opts, source)
        model = _model_field(encoder, opts) if encoder else dict(NO_MODEL)
        return source, Posteriors(source.posterior, model, torch.device("cpu"), "float64", source.moments)
    encoder = _load_encoder(opts, distributed.device_for(opts.device, ctx.rank, ctx.world), opts.dtype)
    source = open_source(opts.data, functools.partial(context_for, opts), encoder.family.takes,
                         encoder.info.class_name)
    _refuse_foreign_options(opts, source)
    if not encoder.stochastic and opts.posterior not in (None, "mode"):  # said once, not by the float32 twin
        warnings.warn(f"{encoder.info.class_name} is deterministic: reporting the posterior mode", stacklevel=2)
    source.adapt(encoder)
    chunked = _chunked(encoder, opts)
    return source, Posteriors(chunked, _model_field(encoder, opts), encoder.device,
                              str(encoder.dtype).removeprefix("torch."), encoder.stochastic, chunked)


def _refuse_foreign_options(opts: Options, source: Source) -> None:
    """An option of another kind of data (e.g. --frames for images) would silently do nothing: refuse it."""
    if len(opts.sizes) > len(source.views()):
        raise InputError(f"--size {opts.size} lists several sizes, but {source.units} have no size to sweep")
    for kind, own in opts.sources.items():
        if kind == source.kind:
            continue
        for f in dataclasses.fields(own):
            if getattr(own, f.name) != f.default and f.name != "moments":
                raise InputError(f"--{f.name.replace('_', '-')} is an option of {source_named(kind).units}; "
                                 f"{opts.latents or opts.data} holds {source.units}")


def _model_field(encoder: Encoder, opts: Options) -> dict[str, Any]:
    """What the result says of the model, with its identity by content (weights hash or hub commit)."""
    info = encoder.info.to_dict()
    return {**info, "identity": model_identity(info, dict(encoder.vae.config), cache_root(opts.cache_dir))}


def _load_encoder(opts: Options, device: str, dtype: str) -> Encoder:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    encoder = load_model(opts.model or DEFAULT_MODEL, subfolder=opts.subfolder, revision=opts.revision,
                         variant=opts.variant, device=device, dtype=dtype)
    if opts.tiling:
        encoder.enable_tiling()
    return encoder


def _chunked(encoder: Encoder, opts: Options) -> ChunkedEncoder:
    def float32() -> Encoder:
        return _load_encoder(opts, str(encoder.device), "float32")

    auto = opts.chunk_size == "auto"
    return ChunkedEncoder(encoder, float32, opts.batch_size if auto else int(opts.chunk_size), auto,
                          count_flops=opts.crop, compile=opts.compile, cache_budget=chunk_budget(encoder.device))


def _fingerprint(posteriors: Posteriors, recipe: dict[str, Any], opts: Options, world: int) -> dict[str, Any]:
    """What must match for a checkpoint to continue: the model and data by content (not by how they
    were spelled), the recipe and the split."""
    model = {**(posteriors.model.get("identity") or {}), "variant": posteriors.model.get("variant")}
    return {"model": model, "recipe": {k: v for k, v in recipe.items() if k != "data"}, "shard": opts.shard,
            "world": world}


def _latent_cache(opts: Options, state: Run, ckpt: Checkpoint | None, posteriors: Posteriors,
                  recipe: dict[str, Any], ctx: RunContext) -> LatentWriter | None:
    """--save-latents: one writer per process (shard and rank), resumed with the checkpoint. It keeps what
    reproduces the run: mean ‖ logvar where the encoder has a posterior, each unit's noise key, the recipe."""
    if not opts.save_latents:
        return None
    if opts.sources["latents"].moments and not posteriors.stochastic:
        raise InputError("--moments needs a stochastic encoder (mean and logvar); this one is deterministic")
    moments = posteriors.stochastic  # mean ‖ logvar whenever there is a posterior: every estimate reproducible
    rank_of, ranks = ctx.writer, ctx.writers
    meta = {"model": posteriors.model, "recipe": recipe}
    cache = (LatentWriter.resume(opts.save_latents, state.cache, rank_of, ranks, moments, meta=meta)
             if state.cache else LatentWriter(opts.save_latents, rank_of, ranks, moments, meta=meta))
    if ckpt:
        def flush(saved: Run) -> None:
            cache.flush()
            saved.cache = cache.state()

        ckpt.before_save = flush
    return cache


def _finish(state: Run, ckpt: Checkpoint | None, cache: LatentWriter | None, posteriors: Posteriors,
            run_info: dict[str, Any], rel_tol: float | None, units: str) -> None:
    """Count the float32 retries, report the precision check, leave a last checkpoint and a complete
    latent folder."""
    if posteriors.chunked:
        state.upcast_chunks += posteriors.chunked.upcast_chunks
        run_info["chunk_size"] = posteriors.chunked.chunk_size
        run_info["precision_check"] = check = posteriors.chunked.precision
        if check and (warning := precision_warning(check, rel_tol, units)):
            warnings.warn(warning, stacklevel=2)
    if ckpt:
        ckpt.save(state)
    elif cache:
        cache.flush()


def _workers(opts: Options, units: int, device: torch.device) -> int:
    """Measured on 2 cores: a loader process beside the encoder's threads only slows it, so none there
    (scripts/bench.py, workers section). With workers on a CPU run, the encoder keeps the other cores."""
    if opts.workers is not None:
        return min(opts.workers, units)  # a worker beyond the units would only start and idle
    cores = os.cpu_count() or 1
    workers = min(8, cores - 1) if device.type == "cuda" else (0 if cores <= 2 else max(1, min(8, cores // 4)))
    workers = min(workers, units)
    if workers and device.type == "cpu":
        torch.set_num_threads(max(1, cores - workers))
    return workers


def _unmet(stats: PosteriorStats, opts: Options, stopped_early: bool) -> str | None:
    """Say so when --rel-tol was asked for and the data ran out first."""
    if opts.rel_tol is None or stopped_early:
        return None
    f, half = stats.interval(opts.posterior)
    return (f"not reached: ±{half / f:.3g} relative after all {stats.num_images} counted "
            f"(asked ±{opts.rel_tol:g}; needs more data)")


def _results(state: Run, posteriors: Posteriors, source: Source, recipe: dict[str, Any], opts: Options,
             run_info: dict[str, Any], ctx: RunContext) -> list[ResultDict]:
    """One result per view (--size), from the statistics of every rank merged in rank order."""
    return [_result(v, state, posteriors, source, {**recipe, **view}, opts, run_info, ctx)
            for v, view in enumerate(source.views()[:len(state.stats)])]


def _result(v: int, state: Run, posteriors: Posteriors, source: Source, recipe: dict[str, Any], opts: Options,
            run_info: dict[str, Any], ctx: RunContext) -> ResultDict:
    extra = {"skipped": [s for s in state.skipped if s.get("view", v) == v], "upcast_chunks": state.upcast_chunks,
             "latent_shape": state.latent_shapes[v], "frames": frames_to_dict(state.frames[v])}
    stats, parts = distributed.gather(state.stats[v], extra, ctx.rank, ctx.world)
    skipped = [{k: s[k] for k in ("path", "error")} for part in parts for s in part["skipped"]]
    if stats is None:
        raise InputError(f"no {source.unit} of {opts.latents or opts.data} could be used ({len(skipped)} skipped)")
    check_spread(stats, stats.key(opts.posterior), f"the {source.units} of {opts.latents or opts.data}")
    info = {**run_info, "upcast_chunks": sum(part["upcast_chunks"] for part in parts),
            "rel_tol_unmet": _unmet(stats, opts, run_info["stopped_early"]),
            "forecast": forecast(stats.num_images, *stats.interval(opts.posterior), run_info["seconds"],
                                 (opts.rel_tol,), population(recipe, skipped), opts.min_units),
            **speed(posteriors.chunked, stats.num_images, run_info["seconds"], cache_root(opts.cache_dir))}
    shape = next(part["latent_shape"] for part in parts if part["latent_shape"])
    result = build_result(stats, posteriors.model, recipe, skipped, posterior=stats.key(opts.posterior), run=info,
                          latent_shape=shape)
    result.update(source.describe(result))
    frames = merge_frames([frames_from_dict(part["frames"]) for part in parts])
    if frames:
        result["frames"] = frames_result(frames, result["recipe"]["posterior"])
    return result
