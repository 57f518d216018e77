"""Pixels -> posterior (mean, logvar | None), in chunks that survive out-of-memory and low-precision overflow."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from . import hardware
from .errors import InputError
from .models import Encoder
from .precision import precision_check

Posterior = tuple[torch.Tensor, torch.Tensor | None]
PRECISION_UNITS = 4  # at most this many of the first units encoded again in float32 (each costs a float32 encode)


def is_oom(e: BaseException) -> bool:
    """CUDA and CPU allocation failures (torch raises either OutOfMemoryError or a RuntimeError)."""
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e))
    )


class ChunkedEncoder:
    """Encodes a batch in chunks: on out-of-memory halves the chunk and retries the same units; a
    non-finite chunk in a low-precision dtype is encoded again by a true float32 twin of the model.

    The first units of each unit shape (each --size of a sweep) run eagerly and watched: their FLOPs,
    summed over the shapes (a sweep encodes every unit at every size), and, with --chunk-size auto on
    a CPU, the largest tensor one unit makes, from which that shape's chunk holds the number of units
    whose largest tensor comes closest to the cache budget, so the steps between convolutions read
    from the cache.

    A low-precision run always needs the twin (its precision check), so the twin starts loading in a
    background thread at once, while the run hashes the weights, lists the data and decodes the first
    batch."""

    def __init__(self, encoder: Encoder, float32: Callable[[], Encoder], chunk: int, auto: bool,
                 count_flops: bool, compile: bool, cache_budget: int | None = None) -> None:
        self.encoder, self._load_float32 = encoder, float32
        self._float32: Encoder | None = None
        self._twin: Future[Encoder] | None = None
        if encoder.dtype != torch.float32:
            pool = ThreadPoolExecutor(1, thread_name_prefix="latent-scale-float32-twin")
            self._twin = pool.submit(float32)
            pool.shutdown(wait=False)  # the load still runs; the thread ends with it
        self.chunk, self.auto = chunk, auto  # chunk: for a unit shape not seen yet
        self.cache_budget = cache_budget if auto else None
        self.count_flops, self.compile, self.compiled = count_flops, compile, False
        self.chunks: dict[tuple[int, ...], int] = {}  # each unit shape's chunk, in the order first seen
        self.flops_per_unit: float | None = None
        self.precision: dict[str, Any] | None = None
        self.upcast_chunks = 0

    @property
    def chunk_size(self) -> int:
        """What the result records: the chunk of the first unit shape (the first --size)."""
        return next(iter(self.chunks.values()), self.chunk)

    def _chunk_for(self, x: torch.Tensor) -> int:
        """Units per call for x's unit shape (the default chunk until that shape is measured)."""
        return self.chunks.get(_shape(x), self.chunk)

    def float32(self) -> Encoder:
        """The model loaded again in float32, on first need: casting the low-precision encoder up
        would keep its rounded weights."""
        if self._float32 is None:
            twin, self._twin = self._twin, None
            self._float32 = twin.result() if twin else self._load_float32()
        return self._float32

    def _first(self, x: torch.Tensor, sized: bool) -> Posterior:
        """The first units of a new shape, watched (compiled kernels are invisible to the FLOP counter,
        so --compile takes effect after the first shape, and a later shape leaves the FLOPs unknown);
        `sized`: x is one unit of a larger batch, whose largest tensor sets the shape's chunk."""
        count = self.count_flops and not self.compiled
        largest = None
        if count or sized:
            flops, largest, out = self.encoder.measured(x, count)
        else:
            flops, out = None, self.encoder.posterior(x)
        if count:
            self.flops_per_unit = (self.flops_per_unit or 0.0) + flops
        elif self.compiled:
            self.flops_per_unit = None  # a shape first seen compiled: its FLOPs cannot be counted
        chunk = hardware.units_per_chunk(self.cache_budget, largest, self.chunk) if sized else self.chunk
        self.chunks[_shape(x)] = chunk
        if self.compile and not self.compiled:
            self.encoder.compile()
            self.compiled = True
        return out

    def _precision(self, x: torch.Tensor, mean: torch.Tensor) -> dict[str, Any]:
        """A low-precision run measures its own error: its first units (as many as a chunk holds, at
        most PRECISION_UNITS) encoded again in true float32."""
        n = min(PRECISION_UNITS, self.chunk_size, len(x))
        return precision_check(mean[:n], self.float32().posterior(x[:n])[0], self.encoder.dtype)

    def _encode(self, x: torch.Tensor) -> Posterior:
        if _shape(x) in self.chunks:
            mean, logvar = self.encoder.posterior(x)
        else:  # a batch of one unit per shape (images of varying sizes) has no chunk to size
            sized = bool(self.cache_budget) and len(x) > 1
            x = x[:1] if sized else x
            mean, logvar = self._first(x, sized)
        finite = torch.isfinite(mean).all() and (logvar is None or torch.isfinite(logvar).all())
        if not finite and self.encoder.dtype != torch.float32:
            mean, logvar = self.float32().posterior(x)
            self.upcast_chunks += 1
        return mean, logvar

    def _shrink(self, part: torch.Tensor, e: BaseException) -> None:
        """Halve the chunk of this unit shape (of shapes not seen yet while it is measured)."""
        key, chunk = _shape(part), self._chunk_for(part)
        shape = f"of shape {key} on {self.encoder.device}"
        if not self.auto:
            raise InputError(f"out of memory encoding {len(part)} units {shape} at once; use a smaller "
                             "--chunk-size, or --chunk-size auto") from e
        if chunk == 1:
            raise InputError(f"out of memory encoding a single unit {shape}; use a smaller --size or a device "
                             "with more memory") from e
        if key in self.chunks:
            self.chunks[key] = chunk // 2
        else:
            self.chunk = chunk // 2
        if self.encoder.device.type == "cuda":
            torch.cuda.empty_cache()

    def __call__(self, x: torch.Tensor) -> Posterior:
        """(mean, logvar | None) as the encoder gives them (its dtype; float32 where a chunk was upcast)."""
        first, means, logvars, start = not self.chunks, [], [], 0
        while start < len(x):
            part = x[start:start + self._chunk_for(x)]
            try:
                mean, logvar = self._encode(part)
            except Exception as e:
                if not is_oom(e):
                    raise
                self._shrink(part, e)
                continue
            means.append(mean)
            logvars.append(logvar)
            start += len(mean)
        mean = _cat(means)
        if first and self.encoder.dtype != torch.float32:
            self.precision = self._precision(x, mean)
        return mean, None if logvars[0] is None else _cat(logvars)


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    """A batch's unit shape: what chunks and FLOPs are measured per."""
    return tuple(x.shape[1:])


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """One tensor (no copy for a single chunk); chunks upcast to float32 make the whole batch float32."""
    if len(parts) == 1:
        return parts[0]
    dtype = parts[0].dtype if len({p.dtype for p in parts}) == 1 else torch.float32
    return torch.cat([p.to(dtype) for p in parts])


def speed(chunked: ChunkedEncoder | None, units: int, seconds: float, cache_dir: Path) -> dict[str, Any]:
    """Units/s; for an encoder also its TFLOP/s against the device's practical peak, and the memory
    layout it ran in."""
    if chunked is None:  # stored latents: no encoder, no FLOPs
        return hardware.speed(None, units, seconds, torch.device("cpu"), torch.float64, cache_dir)
    enc = chunked.encoder
    return {**hardware.speed(chunked.flops_per_unit, units, seconds, enc.device, enc.dtype, cache_dir),
            "memory_format": hardware.memory_format_name(enc.channels_last)}
