"""`latent_scale.Accumulator`: the tool's exact statistics over the latents a training loop already encodes.

Many training scripts set the scale factor from one batch (LDM's `scale_by_std`); this keeps the
float64 statistics of every batch instead, on the latents' own device, at no extra encoder cost, and
gives the same result as `latent-scale estimate` on the same latents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from . import distributed
from .errors import InputError
from .options import MAX_SEED, POSTERIORS
from .schema import build_result
from .schema.build import check_spread
from .stats import PosteriorStats, histogram_edges_for, noise


class Accumulator:
    """Exact streaming statistics of latents (B, C, ...) of any trailing shape, mergeable across
    processes; `result()` is the result the command line writes.

    posterior: "mode" (μ), "sample" (μ + σε, ε seeded by (seed, unit index) exactly as the command
    line draws it) or "expected_sample" (exact in expectation over ε); the last two need `sigma`.
    config: the autoencoder's config (`vae.config`), whose scaling factor and latents_mean/std set the
    histogram's bins and the result's `config_normalised`, as they do on the command line.
    unit: the word for one item of z ("image", "clip", "audio clip"), used where results are shown.
    """

    def __init__(self, posterior: str = "mode", *, seed: int = 0, config: Mapping[str, Any] | None = None,
                 unit: str = "image") -> None:
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {', '.join(POSTERIORS)}, not {posterior!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer from 0 to 2^63 - 1 (a torch generator's seed), not {seed!r}")
        self.posterior, self.seed, self.unit = posterior, seed, unit
        self.model = model_field(config or {})
        self.stats: PosteriorStats | None = None
        self.shapes: set[tuple[int, ...]] = set()
        self.seen = 0  # units given to update() without an index: where the default indices go on
        self.reduced = False

    def update(self, z: torch.Tensor, sigma: torch.Tensor | None = None, *,
               index: Iterable[int] | None = None) -> None:
        """Add a batch of latents z (the posterior mean μ, or a deterministic encoder's latents) and,
        for a stochastic encoder, its std σ (`latent_dist.std`): the three estimates are then kept.

        `index` gives each unit's index in the data set, which seeds its noise; by default units count
        from 0 across updates (on rank r of W under torch.distributed: r, r + W, r + 2W, ..., as a
        DistributedSampler without shuffling hands them out), so each unit gets noise of its own.
        """
        if self.reduced:
            raise RuntimeError("this Accumulator was all-reduced already; updates after it would be counted "
                               "on one rank only")
        self._check(z, sigma)
        if self.stats is None:
            self.stats = PosteriorStats(z.shape[1], sigma is not None, histogram_edges_for(self.model))
        keys = self._keys(z.shape[0], index)
        eps = None if sigma is None else noise(keys, z.shape[1:], self.seed).to(z.device)
        self.stats.update(z.detach(), None if sigma is None else sigma.detach(), eps)
        self.shapes.add(tuple(z.shape[1:]))

    def _check(self, z: torch.Tensor, sigma: torch.Tensor | None) -> None:
        if z.ndim < 2 or not z.is_floating_point() or 0 in z.shape[:2]:
            raise ValueError(f"z must be floating-point latents (B, C, ...) with at least one unit and one "
                             f"channel, got {z.dtype} {tuple(z.shape)}")
        if sigma is None and self.posterior != "mode":
            raise ValueError(f"posterior {self.posterior!r} needs sigma, the posterior's std "
                             "(latent_dist.std); pass it, or use posterior='mode'")
        if sigma is not None and sigma.shape != z.shape:
            raise ValueError(f"sigma has shape {tuple(sigma.shape)}, z has {tuple(z.shape)}; they must match")
        if self.stats is not None and self.stats.stochastic != (sigma is not None):
            raise ValueError("pass sigma with every update or with none: the estimates differ in kind")
        if not torch.isfinite(z).all() or (sigma is not None and not torch.isfinite(sigma).all()):
            raise ValueError("z or sigma holds NaN or infinite values: the encoder overflowed (in float16, "
                             "encode in bfloat16 or float32) or its weights are broken; nothing was added")
        if sigma is not None and bool((sigma < 0).any()):
            raise ValueError("sigma holds negative values; pass the posterior's std (latent_dist.std), not its "
                             "logvar or mean")

    def _keys(self, count: int, index: Iterable[int] | None) -> list[int]:
        """Each unit's noise key: its index in the data set."""
        if index is not None:
            keys = [int(i) for i in index]
            if len(keys) != count:
                raise ValueError(f"index names {len(keys)} units, the batch holds {count}")
            return keys
        rank, world = _rank_and_world()
        keys = [(self.seen + j) * world + rank for j in range(count)]
        self.seen += count
        return keys

    def merge(self, other: Accumulator) -> None:
        """Add another accumulator's latents, exactly (as `latent-scale merge` adds shard results)."""
        if other is self:
            raise ValueError("cannot merge an accumulator with itself: its latents would count twice")
        if (other.posterior, other.seed) != (self.posterior, self.seed):
            raise ValueError("cannot merge accumulators of different posteriors or seeds")
        if other.stats is None:
            return
        if self.stats is None:
            self.stats = PosteriorStats.from_dict(other.stats.to_dict())
        else:
            self.stats.merge(other.stats)
        self.shapes |= other.shapes

    def all_reduce(self) -> None:
        """Under torch.distributed, every rank's statistics merged in rank order, so each rank then holds
        the same (all ranks must call it, once, after their last update). Does nothing in one process."""
        rank, world = _rank_and_world()
        if world == 1:
            return
        if self.reduced:
            raise RuntimeError("this Accumulator was all-reduced already; a second time would count every "
                               "other rank's latents twice")
        self.stats, parts = distributed.gather(self.stats, {"shapes": sorted(self.shapes)}, rank, world)
        self.shapes = {tuple(s) for part in parts for s in part["shapes"]}
        self.reduced = True

    @property
    def num_units(self) -> int:
        return self.stats.num_images if self.stats else 0

    def result(self) -> Any:
        """The result of the latents so far, with the command line's fields (`res.scale_factor`,
        `res.scale_factor_ci95`, `res.std`, `res.per_channel`, `res.estimates`, ...)."""
        if self.stats is None:
            raise ValueError("no latents yet: call update() first")
        try:
            check_spread(self.stats, self.stats.key(self.posterior), f"the {self.unit}s given")
        except InputError as e:
            raise ValueError(str(e)) from None
        shape = list(next(iter(self.shapes))) if len(self.shapes) == 1 else [self.stats.channels]
        return build_result(self.stats, self.model, {"unit": self.unit, "seed": self.seed}, [], self.posterior,
                            {"world_size": _rank_and_world()[1]}, shape)


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size under torch.distributed; (0, 1) without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def model_field(config: Mapping[str, Any]) -> dict[str, Any]:
    """The result's `model` from an autoencoder's config: what it says about normalising latents."""
    def number(key: str) -> float | None:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"config {key} must be a number or None, not {value!r}")
        return value

    def floats(key: str) -> list[float] | None:
        value = config.get(key)
        try:
            return None if value is None else [float(x) for x in value]
        except (TypeError, ValueError):
            raise ValueError(f"config {key} must be a list of numbers or None, not {value!r}") from None

    return {"source": None, "class": config.get("_class_name"),
            "config_scaling_factor": number("scaling_factor"), "config_shift_factor": number("shift_factor"),
            "config_latents_mean": floats("latents_mean"), "config_latents_std": floats("latents_std")}
