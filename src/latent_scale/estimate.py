"""The one loop: images -> encoder -> float64 statistics -> result.

Everything here is order-independent by construction: each image's noise comes
from a generator seeded by (seed, image index), statistics merge exactly, so the
answer does not depend on batch, chunk, worker, shard or rank count, nor on
where a run was interrupted and resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import signal
import sys
import threading
import time

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import distributed
from .data import RECIPE, list_images, loader, order
from .errors import InputError, Interrupted
from .identity import first_difference
from .io import read_json, write_json
from .models import Encoder, load_model
from .report import Result, build_result, histogram_edges_for
from .stats import PosteriorStats

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
POSTERIORS = ("sample", "mode", "expected_sample")


@dataclass
class Options:
    """Every option of `latent-scale estimate`; the CLI is a thin layer over these."""

    model: str = DEFAULT_MODEL
    data: str = "imagenette"
    size: int = 512
    crop: bool = True
    posterior: str = "sample"
    seed: int = 0
    batch_size: int = 12
    chunk_size: int | str = "auto"
    limit: int | None = None
    rel_tol: float | None = None
    min_images: int = 50
    device: str = "auto"
    dtype: str = "auto"
    workers: int | None = None
    compile: bool = False
    output: str | None = None
    checkpoint: str | None = None
    checkpoint_every: float = 60.0
    resume: bool = False
    shard: str | None = None
    strict: bool = False
    subfolder: str | None = None
    revision: str | None = None
    variant: str | None = None
    cache_dir: str | None = None
    progress: bool = True

    def validate(self) -> None:
        if self.size < 8:
            raise InputError(f"--size must be at least 8, got {self.size}")
        if self.posterior not in POSTERIORS:
            raise InputError(f"--posterior must be one of {', '.join(POSTERIORS)}, got {self.posterior!r}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.chunk_size != "auto" and (not str(self.chunk_size).isdigit() or int(self.chunk_size) < 1):
            raise InputError(f"--chunk-size must be auto or a positive integer, got {self.chunk_size!r}")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be at least 1, got {self.limit}")
        if self.rel_tol is not None and not 0 < self.rel_tol < 1:
            raise InputError(f"--rel-tol must be between 0 and 1, got {self.rel_tol}")
        if self.workers is not None and self.workers < 0:
            raise InputError(f"--workers must be 0 or more, got {self.workers}")
        if self.checkpoint_every <= 0:
            raise InputError(f"--checkpoint-every must be positive, got {self.checkpoint_every}")
        if self.resume and not self.checkpoint:
            raise InputError("--resume needs --checkpoint PATH")
        parse_shard(self.shard)

    def recipe(self, dtype: torch.dtype) -> dict[str, Any]:
        """What determines the numbers (compared by merge and resume), not how the work was split."""
        return {"data": self.data, "size": self.size, "crop": self.crop, "preprocess": RECIPE,
                "posterior": self.posterior,
                "seed": self.seed, "limit": self.limit, "dtype": str(dtype).removeprefix("torch.")}


def parse_shard(shard: str | None) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def make_options(config: str | None = None, **options: Any) -> Options:
    """Preset from a TOML file, overridden by explicit keywords."""
    preset: dict[str, Any] = {}
    if config:
        try:
            preset = tomllib.loads(Path(config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise InputError(f"could not read --config {config}: {e}") from e
        preset = {k.replace("-", "_"): v for k, v in preset.get("estimate", preset).items()}
    known = {f.name for f in dataclasses.fields(Options)}
    unknown = sorted(set(preset) - known - {"published", "notes", "name"}) + sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s): {', '.join(unknown)}")
    merged = {k: v for k, v in preset.items() if k in known}
    merged.update({k: v for k, v in options.items() if v is not None or k in ("limit", "rel_tol")})
    opts = Options(**merged)
    opts.validate()
    return opts


def noise(indices: torch.Tensor, shape: torch.Size, seed: int) -> torch.Tensor:
    """ε for each image from a generator seeded by (seed, image index): split-independent."""
    g = torch.Generator()
    out = torch.empty((len(indices), *shape))
    for k, i in enumerate(indices.tolist()):
        g.manual_seed((seed * 1_000_003 + i) % (2**63))
        out[k] = torch.randn(shape, generator=g)
    return out


def _is_oom(e: BaseException) -> bool:
    """CUDA and CPU allocation failures (torch raises either OutOfMemoryError or a RuntimeError)."""
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e))
    )


@dataclass
class Run:
    """The mutable state of one estimate; what a checkpoint holds."""

    stats: PosteriorStats | None = None
    done: int = 0  # how many of this process's positions have been consumed
    skipped: list[dict[str, str]] = field(default_factory=list)
    upcast_chunks: int = 0
    latent_shape: list[int] = field(default_factory=list)
    chunk: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.to_dict() if self.stats else None, "done": self.done,
                "skipped": self.skipped, "upcast_chunks": self.upcast_chunks, "latent_shape": self.latent_shape}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        stats = PosteriorStats.from_dict(d["stats"]) if d["stats"] else None
        return cls(stats, int(d["done"]), list(d["skipped"]), int(d["upcast_chunks"]), list(d["latent_shape"]))


class Estimator:
    """Encodes batches in chunks with OOM back-off and float32 retry of non-finite chunks."""

    def __init__(self, encoder: Encoder, opts: Options, run: Run, paths: list[str]) -> None:
        self.encoder, self.opts, self.run, self.paths = encoder, opts, run, paths
        self.run.chunk = run.chunk or (opts.batch_size if opts.chunk_size == "auto" else int(opts.chunk_size))
        self._float32: Encoder | None = None
        self.flops_per_image: float | None = None
        self.started = False

    def float32(self) -> Encoder:
        """The model loaded again in float32, on first need. Casting the low-precision encoder up
        would keep its rounded weights; the retry of a non-finite chunk must be a true float32 encode."""
        if self._float32 is None:
            o = self.opts
            self._float32 = load_model(o.model, subfolder=o.subfolder, revision=o.revision, variant=o.variant,
                                       device=str(self.encoder.device), dtype="float32")
        return self._float32

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One chunk; non-finite output in a low-precision dtype is re-encoded in float32.

        The first chunk runs eagerly to count FLOPs (compiled kernels are invisible to the
        counter; uncropped images differ in size, so they are not counted); --compile takes
        effect from the second."""
        if not self.started and self.opts.crop:
            self.flops_per_image, (mu, sigma) = self.encoder.counted(x)
        else:
            mu, sigma = self.encoder(x)
        if not self.started and self.opts.compile:
            self.encoder.compile()
        self.started = True
        finite = torch.isfinite(mu).all() and (sigma is None or torch.isfinite(sigma).all())
        if not finite and self.encoder.dtype != torch.float32:
            mu, sigma = self.float32()(x)
            self.run.upcast_chunks += 1
        return mu.double(), None if sigma is None else sigma.double()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The whole batch in chunks; on out-of-memory halve the chunk and retry the same images."""
        mus, sigmas, start = [], [], 0
        while start < len(x):
            part = x[start:start + self.run.chunk]
            try:
                mu, sigma = self._encode(part)
            except Exception as e:
                if not _is_oom(e):
                    raise
                if self.opts.chunk_size != "auto":
                    raise InputError(
                        f"out of memory encoding {len(part)} {self.opts.size}px images at once on "
                        f"{self.encoder.device}; use a smaller --chunk-size, or --chunk-size auto") from e
                if self.run.chunk == 1:
                    raise InputError(
                        f"out of memory encoding a single {self.opts.size}px image on {self.encoder.device}; "
                        "use a smaller --size or a device with more memory") from e
                self.run.chunk = max(1, self.run.chunk // 2)
                if self.encoder.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            mus.append(mu)
            sigmas.append(sigma)
            start += len(part)
        return torch.cat(mus), None if sigmas[0] is None else torch.cat(sigmas)

    def skip(self, index: int, reason: str) -> None:
        path = self.paths[index]
        if self.opts.strict:
            raise InputError(f"cannot use image {path}: {reason} (drop --strict to skip such files)")
        warnings.warn(f"skipping {path}: {reason}", stacklevel=2)
        self.run.skipped.append({"path": path, "error": reason})

    def step(self, batch: dict[str, Any]) -> None:
        for index, reason in batch["errors"]:
            self.skip(index, reason)
        if batch["images"] is not None:
            index = batch["index"]
            mu, sigma = self.encode(batch["images"])
            bad = ~torch.isfinite(mu.flatten(1)).all(1)
            if sigma is not None:
                bad |= ~torch.isfinite(sigma.flatten(1)).all(1)
            for i in index[bad].tolist():
                self.skip(i, "non-finite latent even in float32")
            keep = ~bad
            if keep.any():
                mu, index = mu[keep], index[keep]
                sigma = None if sigma is None else sigma[keep]
                if self.run.stats is None:
                    self.run.stats = PosteriorStats(mu.shape[1], self.encoder.stochastic,
                                                    histogram_edges_for(self.encoder.info))
                    self.run.latent_shape = list(mu.shape[1:]) if self.opts.crop else [mu.shape[1]]
                eps = noise(index, mu.shape[1:], self.opts.seed).to(mu.device) if sigma is not None else None
                self.run.stats.update(mu, sigma, eps)
        self.run.done += len(batch["index"]) + len(batch["errors"])


# Dense bfloat16/float16 tensor-core peaks (TFLOP/s) by device name, for the fraction of peak achieved.
PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0,
               "RTX 4090": 165.2}


def speed(encoder: Encoder, flops_per_image: float | None, images: int, seconds: float) -> dict[str, Any]:
    """Images/s and achieved encoder TFLOP/s, against the device's peak where we know it."""
    rate = images / seconds if seconds > 0 else None
    tflops = flops_per_image * rate / 1e12 if flops_per_image and rate else None
    peak = None
    if encoder.device.type == "cuda" and encoder.dtype in (torch.bfloat16, torch.float16):
        name = torch.cuda.get_device_name(encoder.device)
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return {"images_per_s": rate, "encoder_gflop_per_image": flops_per_image / 1e9 if flops_per_image else None,
            "achieved_tflops": tflops, "device_peak_tflops": peak,
            "fraction_of_peak": tflops / peak if tflops and peak else None}


def _posterior_key(opts: Options, stats: PosteriorStats | None) -> str:
    if stats is not None and not stats.stochastic:
        return "mode"
    return opts.posterior


def interval(run: Run, opts: Options) -> tuple[float, float]:
    """Running factor and 95 % half-width of the chosen posterior (nan until defined)."""
    if run.stats is None or run.stats.num_images < 2:
        return math.nan, math.nan
    key = _posterior_key(opts, run.stats)
    return getattr(run.stats, "mode" if key in ("mode", "expected_sample") else "sample").factor_interval()


class _StopSignals:
    """Ctrl-C and SIGTERM ask the loop to stop after the current batch, so the saved
    state is always whole; a second signal stops at once (the last save stands)."""

    def __init__(self) -> None:
        self.requested = False
        self.old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise _ForceQuit
        self.requested = True

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


class _ForceQuit(KeyboardInterrupt):
    """A second Ctrl-C: leave now without saving a half-updated state."""


def _checkpoint_path(opts: Options, rank: int, world: int) -> Path | None:
    if not opts.checkpoint:
        return None
    p = Path(opts.checkpoint)
    return p if world == 1 else p.with_name(f"{p.name}.rank{rank}-of-{world}")


def _fingerprint(info: dict[str, Any], recipe: dict[str, Any], shard: str | None, world: int,
                 paths: list[str]) -> dict[str, Any]:
    """What must match for a checkpoint to continue: model, recipe, split, and the image list itself
    (a folder that gained or lost files would silently shift every later image)."""
    model = {k: info[k] for k in ("source", "subfolder", "revision", "variant", "class")}
    images = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
    return {"model": model, "recipe": recipe, "shard": shard, "world": world, "images": images}


def _resume(path: Path, fingerprint: dict[str, Any]) -> Run:
    saved = read_json(path)
    if saved.get("kind") != "latent-scale-checkpoint":
        raise InputError(f"{path} is not a latent-scale checkpoint")
    diff = first_difference(saved["fingerprint"], fingerprint)
    if diff:
        raise InputError(f"cannot resume from {path}: {diff}; use another --checkpoint or the original options")
    return Run.from_dict(saved["run"])


def _save(path: Path, fingerprint: dict[str, Any], run: Run) -> None:
    write_json(path, {"kind": "latent-scale-checkpoint", "fingerprint": fingerprint, "run": run.to_dict()})


def estimate(model: str | None = None, data: str | None = None, *, config: str | None = None,
             **options: Any) -> Result:
    """Measure the latent scale factor of `model` on `data`; see Options for every keyword.

    Returns a Result (a dict with attribute access) with the fields of the result JSON.
    """
    opts = make_options(config, model=model, data=data, **options)
    rank, world = distributed.init()
    if opts.rel_tol is not None and world > 1:
        raise InputError("--rel-tol needs a single process; with torchrun use --limit")
    encoder = load_model(opts.model, subfolder=opts.subfolder, revision=opts.revision, variant=opts.variant,
                         device=distributed.device_for(opts.device, rank, world), dtype=opts.dtype)
    if not encoder.stochastic and opts.posterior != "mode":
        warnings.warn(f"{encoder.info['class']} is deterministic: reporting the posterior mode", stacklevel=2)
    paths = list_images(opts.data, opts.cache_dir)
    shard_i, shard_n = parse_shard(opts.shard)
    positions = order(len(paths), opts.seed, opts.limit)[shard_i::shard_n][rank::world]
    recipe = {**opts.recipe(encoder.dtype), "dataset_size": len(paths)}
    fingerprint = _fingerprint(encoder.info, recipe, opts.shard, world, paths)
    ckpt = _checkpoint_path(opts, rank, world)
    run = Run()
    if opts.resume and ckpt and ckpt.exists():
        run = _resume(ckpt, fingerprint)
    elif opts.resume:
        warnings.warn(f"no checkpoint at {ckpt} yet: starting from the first image", stacklevel=2)
    est = Estimator(encoder, opts, run, paths)
    workers = opts.workers if opts.workers is not None else min(8, os.cpu_count() or 1, len(positions))
    batches = loader(paths, positions[run.done:], opts.size, opts.batch_size, workers,
                     pin_memory=encoder.device.type == "cuda", crop=opts.crop)
    stop_reason = None
    start = last_save = time.monotonic()
    bar = tqdm(total=len(positions), initial=run.done, unit="img", file=sys.stderr,
               disable=not opts.progress or rank != 0, dynamic_ncols=True)
    stops = _StopSignals()
    try:
        with stops:
            for batch in batches:
                n_before = run.done
                est.step(batch)
                bar.update(run.done - n_before)
                f, half = interval(run, opts)
                bar.set_postfix_str(f"factor {f:.5f} ± {half:.5f}", refresh=False)
                if stops.requested:
                    raise KeyboardInterrupt
                if ckpt and time.monotonic() - last_save > opts.checkpoint_every:
                    _save(ckpt, fingerprint, run)
                    last_save = time.monotonic()
                if (opts.rel_tol is not None and run.stats is not None
                        and run.stats.num_images >= opts.min_images and half < opts.rel_tol * f):
                    stop_reason = f"95% interval within ±{opts.rel_tol:g} after {run.stats.num_images} images"
                    break
    except (KeyboardInterrupt, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not stops.requested:
            raise  # a real error, not a worker killed by the same Ctrl-C
        if ckpt and not isinstance(e, _ForceQuit):
            _save(ckpt, fingerprint, run)
            raise Interrupted(f"interrupted after {run.done} images; state saved to {ckpt}, "
                              "continue with --resume") from None
        raise Interrupted(f"interrupted after {run.done} images; nothing new saved") from None
    finally:
        bar.close()
    if ckpt:
        _save(ckpt, fingerprint, run)
    stats, parts = distributed.gather(
        run.stats, {"skipped": run.skipped, "upcast_chunks": run.upcast_chunks, "latent_shape": run.latent_shape},
        rank, world)
    skipped = [s for part in parts for s in part["skipped"]]
    if stats is None:
        raise InputError(f"no image of --data {opts.data} could be encoded ({len(skipped)} skipped)")
    elapsed = time.monotonic() - start
    result = build_result(
        stats, encoder.info, recipe, skipped,
        posterior=_posterior_key(opts, stats),
        run={"seconds": elapsed, "device": str(encoder.device), "world_size": world, "shard": opts.shard,
             "batch_size": opts.batch_size, "chunk_size": run.chunk, "workers": workers,
             "upcast_chunks": sum(part["upcast_chunks"] for part in parts), "stopped_early": stop_reason is not None,
             "stop_reason": stop_reason, "compile": opts.compile,
             **speed(encoder, est.flops_per_image, stats.num_images, elapsed)},
        latent_shape=next(part["latent_shape"] for part in parts if part["latent_shape"]),
    )
    if opts.output and rank == 0:
        write_json(Path(opts.output), result)
    return result
