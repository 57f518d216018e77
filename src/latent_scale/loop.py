"""The loop: batches of units -> posteriors -> float64 statistics, until the data ends or a stop rule fires.

Everything here is order-independent by construction: each unit's noise comes from a generator
seeded by (seed, the unit's noise key), and statistics merge exactly, so the answer does not
depend on batch, chunk, worker, shard or rank count, nor on where a run was resumed.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from .checkpoint import Checkpoint, ForceQuit, StopSignals
from .encode import Posterior
from .errors import InputError, Interrupted
from .forecast import forecast, postfix
from .saved_latents import LatentWriter
from .sources.base import Source
from .sources.batches import Batch
from .state import FRAME_PARTS, Run
from .stats import PosteriorStats, noise


def in_float32_range(x: torch.Tensor) -> torch.Tensor:
    """Per unit: every value finite as a float32. Beyond that range float64's fourth moments could
    overflow (a float64 cache holding 1e200); within it they cannot. A float64 sum is finite exactly
    when every summed value is (NaN and ±inf propagate; float32 values cannot overflow it), and costs
    a sixth of isfinite().all()."""
    rows = x.flatten(1)
    return torch.isfinite((rows.float() if rows.dtype == torch.float64 else rows).sum(1, dtype=torch.float64))


class Accumulate:
    """One batch: failed units skipped and listed, the rest turned into posteriors (mean, logvar | None)
    and accumulated as μ and σ = exp(logvar / 2) in float64; with --save-latents also written out."""

    def __init__(self, run: Run, source: Source, posterior: Callable[[torch.Tensor], Posterior], *, seed: int,
                 strict: bool, edges: torch.Tensor | None, stochastic: bool, cache: LatentWriter | None = None) -> None:
        self.run, self.source, self.posterior, self.cache = run, source, posterior, cache
        self.seed, self.strict, self.edges, self.stochastic = seed, strict, edges, stochastic

    def skip(self, index: int, reason: str, view: int | None = None) -> None:
        unit = self.source.ids[index]
        if self.strict:
            raise InputError(f"cannot use {unit}: {reason} (drop --strict to skip such units)")
        warnings.warn(f"skipping {unit}: {reason}", stacklevel=2)
        self.run.skipped.append({"path": unit, "error": reason, **({} if view is None else {"view": view})})

    def __call__(self, batch: Batch) -> None:
        for index, reason in batch.errors:
            self.skip(index, reason)
        for index, views in batch.groups:
            for v, x in enumerate(views):
                self._view(v, index, x, len(views))
        self.run.done += batch.size

    def _view(self, v: int, index: torch.Tensor, x: torch.Tensor, views: int) -> None:
        mean, logvar = self.posterior(x)
        keep = self._finite(mean, logvar, index, v if views > 1 else None)
        if not keep.any():
            return
        mean, index = mean[keep], index[keep]
        logvar = None if logvar is None else logvar[keep]
        keys = [self.source.noise_key(i) for i in index.tolist()]
        if self.cache is not None:
            self._save(keys, index, mean, logvar)
        mu, sigma = mean, None if logvar is None else torch.exp(0.5 * logvar).double()  # diffusers' std
        if self.run.stats[v] is None:
            self.run.stats[v] = PosteriorStats(mu.shape[1], self.stochastic, self.edges)
            self.run.latent_shapes[v] = list(mu.shape[1:])
        elif self.run.latent_shapes[v] != list(mu.shape[1:]):
            self.run.latent_shapes[v] = [mu.shape[1]]  # the latents counted differ in size: channels alone
        eps = noise(keys, mu.shape[1:], self.seed).to(mu.device) if sigma is not None else None
        self.run.stats[v].update(mu, sigma, eps)
        if mu.ndim == 5 and mu.shape[2] > 1:
            self._frames(v, mu, sigma, eps)

    def _finite(self, mean: torch.Tensor, logvar: torch.Tensor | None, index: torch.Tensor,
                view: int | None) -> torch.Tensor:
        """Which units have a posterior within float32's range; the others are skipped and listed."""
        bad = ~in_float32_range(mean)
        if logvar is not None:
            bad |= ~in_float32_range(logvar)
        reason = ("non-finite latent even in float32" if self.source.input != "latents"
                  else "holds NaN, ±inf or values beyond float32's range (±3.4e38)")
        for i in index[bad].tolist():
            self.skip(i, reason, view)
        return ~bad

    def _save(self, keys: list[int], index: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor | None) -> None:
        for k, (key, i) in enumerate(zip(keys, index.tolist(), strict=True)):
            self.cache.add(key, self.source.ids[i], mean[k], None if logvar is None else logvar[k])

    def _frames(self, v: int, mu: torch.Tensor, sigma: torch.Tensor | None, eps: torch.Tensor | None) -> None:
        """The causal first latent frame and the later ones, each with the clip's own noise."""
        if self.run.frames[v] is None:
            self.run.frames[v] = {k: PosteriorStats(mu.shape[1], self.stochastic, self.edges) for k in FRAME_PARTS}
        for name, part in FRAME_PARTS.items():
            self.run.frames[v][name].update(mu[:, :, part], None if sigma is None else sigma[:, :, part],
                                            None if eps is None else eps[:, :, part])


def consume(batches: Iterable[Batch], step: Callable[[Batch], None],
            after_batch: Callable[[int], str | None]) -> str | None:
    """Feed every batch to `step`; after each, `after_batch(units in it)` may return a reason to stop."""
    for batch in batches:
        step(batch)
        reason = after_batch(batch.size)
        if reason:
            return reason
    return None


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


@dataclass(frozen=True)
class StopRule:
    """--rel-tol: stop once the chosen posterior's 95 % interval is within ±rel_tol, never before
    min_units units."""

    posterior: str
    rel_tol: float | None = None
    min_units: int = 50


def drive(batches: Any, step: Accumulate, state: Run, opts: StopRule, ckpt: Checkpoint | None, *,
          total: int, show: bool) -> str | None:
    """The loop with a progress bar, periodic checkpoints, Ctrl-C/SIGTERM and --rel-tol; returns why it
    stopped early (None when the data ran out)."""
    unit, units = step.source.unit, step.source.units
    bar = tqdm(total=total, initial=state.done, unit=unit, file=sys.stderr, disable=not show, dynamic_ncols=True,
               postfix=running(state.num_units, *interval(state, opts.posterior), 0.0, opts, unit, units))
    signals = StopSignals()
    start, seen_before = time.monotonic(), state.num_units

    def after_batch(count: int) -> str | None:
        f = half = math.nan
        if show or opts.rel_tol is not None:  # nobody else reads the running interval: latent caches feel its cost
            f, half = interval(state, opts.posterior)
            seconds = (time.monotonic() - start) * state.num_units / max(state.num_units - seen_before, 1)
            bar.set_postfix_str(running(state.num_units, f, half, seconds, opts, unit, units), refresh=False)
        bar.update(count)  # draws the bar with this batch's postfix
        if signals.requested:
            raise KeyboardInterrupt
        if ckpt and ckpt.due():
            ckpt.save(state)
        if opts.rel_tol is not None and state.num_units >= opts.min_units and half < opts.rel_tol * f:
            return f"95% interval within ±{opts.rel_tol:g} after {state.num_units} {units}"
        return None

    try:
        with signals, warnings_above(bar):
            return consume(batches, step, after_batch)
    except (KeyboardInterrupt, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not signals.requested:
            raise  # a real error, not a worker killed by the same Ctrl-C
        raise interrupted(state, ckpt, isinstance(e, ForceQuit), units) from None
    finally:
        bar.close()


def running(n: int, f: float, half: float, seconds: float, opts: StopRule, unit: str, units: str) -> str:
    """The bar's words after n units counted: the running factor f ± its 95 % half-width and the forecast;
    until two units are counted (or while every unit so far was skipped) it says so, not "nan ± nan"."""
    if n == 0:
        return f"no {unit} counted yet"
    if not (math.isfinite(f) and math.isfinite(half)):
        return f"{n} {unit if n == 1 else units} counted, no interval yet"
    hint = postfix(forecast(n, f, half, seconds, (opts.rel_tol,), floor=opts.min_units), units)
    return f"factor {f:.5f} ± {half:.5f}" + (f", {hint}" if hint else "")


@contextlib.contextmanager
def warnings_above(bar: tqdm) -> Iterator[None]:
    """Warnings said while the bar runs ("skipping X: ...") go through tqdm's own writer: the bar is
    cleared, the warning gets its own line above it, and the bar is drawn again below. A disabled bar
    draws nothing, so warnings are left as they are."""
    if bar.disable:
        yield
        return
    shown = warnings.showwarning

    def show(*args: Any, **kwargs: Any) -> None:
        with bar.external_write_mode(file=bar.fp):
            shown(*args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def interrupted(state: Run, ckpt: Checkpoint | None, force: bool, units: str) -> Interrupted:
    if ckpt and not force:
        ckpt.save(state)
        return Interrupted(f"interrupted after {state.done} {units}; state saved to {ckpt.path}, "
                           "continue with --resume")
    return Interrupted(f"interrupted after {state.done} {units}; nothing new saved")
