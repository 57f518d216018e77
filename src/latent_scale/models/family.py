"""What the tool must know of one diffusers autoencoder class to measure it: the Family.

A family says which kind of input the class encodes (pixels, clips of frames, waveforms, mel
spectrograms computed from waveforms), how its pipelines feed it (pixel range, an opaque alpha
channel, one unit per encode call), and how to read the posterior from what `encode()` returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

Config = Mapping[str, Any]
INPUT_KINDS = ("pixels", "waveform", "mel")  # what encode() takes; a mel is computed from a waveform


@dataclass(frozen=True)
class Audio:
    """An audio autoencoder's input as its pipelines make it, read from its config: the sampling
    rate, the channel count, a default clip length (None: the audio source's default), and `flat`
    for a class whose encode() takes (B, samples) with no channel axis (mono only)."""

    rate: Callable[[Config], int]
    channels: Callable[[Config], int]
    seconds: Callable[[Config], float | None] | None = None
    flat: bool = False


@dataclass(frozen=True)
class Family:
    """How one diffusers class encodes, and how its pipelines feed it."""

    output: str  # the attribute of encode()'s output holding the latent ("latent_dist": a posterior)
    video: bool = False  # takes clips (B, C, T, H, W); an image is a one-frame clip
    temporal: Callable[[Config], int] | None = None  # t of its 1 + k·t clips; None: pipelines encode single frames
    single_frame: bool = True  # False: cannot encode a one-frame clip (an image)
    input: str = "pixels"  # one of INPUT_KINDS
    deterministic: bool = False  # a latent_dist whose spread is no posterior (an identity, a padded zero logvar)
    one_at_a_time: bool = False  # encode() handles one unit per call
    pixel_range: tuple[float, float] = (-1.0, 1.0)  # what its pipelines feed
    alpha: bool = False  # an opaque alpha channel is added where the config takes 4 channels (RGBA)
    tokens: bool = False  # latents may come as (B, N, C), channels last: transposed to (B, C, N)
    # Undoes a normalisation encode() applies itself, so the statistics are of the raw latents that its
    # config's latents_mean/std describe.
    raw: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None
    encode_kwargs: tuple[tuple[str, Any], ...] = ()  # passed to encode(), e.g. to ask for the mean, not a sample
    audio: Audio | None = None  # the audio input, for waveform and mel classes
    channels: Callable[[Config], int] | None = None  # latent channels, where the key is not latent_channels/z_dim
    refuse: Callable[[Config], str | None] | None = None  # why a config of the class cannot be measured, or None

    @property
    def stochastic(self) -> bool:
        return self.output == "latent_dist" and not self.deterministic

    @property
    def takes(self) -> frozenset[str]:
        """The kinds of source input this class encodes: images and clips (a one-frame clip is an
        image), clips of several frames only, or audio waveforms (mel classes get their mel from one)."""
        if self.input != "pixels":
            return frozenset({"waveform"})
        return frozenset({"pixels", "frames"} if self.single_frame else {"frames"})

    @property
    def posterior_kind(self) -> str:
        """In words, for the table of classes: which posteriors a run of this class can report."""
        return "sample, mode" if self.stochastic else "mode only"

    def read(self, vae: torch.nn.Module, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """encode()'s output -> (mean, logvar) of a posterior, or (latent, None); channels on dim 1."""
        value = getattr(out, self.output)
        if self.output == "latent_dist":
            if self.stochastic:
                return value.mean, _logvar(value)
            value = value.mode()
        if self.raw is not None:
            value = self.raw(vae, value)
        if self.tokens and value.dim() == 3:  # (B, N, C) -> (B, C, N): statistics pool all but dim 1
            value = value.transpose(1, 2)
        return value, None


def _logvar(dist: Any) -> torch.Tensor:
    """The posterior's log-variance as the class holds it (bit for bit where it keeps one), else from its std."""
    import torch

    logvar = getattr(dist, "logvar", None)
    return logvar if logvar is not None else 2 * torch.log(dist.std)


def config_value(*keys: str, default: Any = None) -> Callable[[Config], Any]:
    """A rule reading the first of `keys` a config sets, else `default` (the pipeline's value)."""
    def rule(cfg: Config) -> Any:
        found = next((cfg[k] for k in keys if cfg.get(k) is not None), default)
        if found is None:
            raise KeyError(f"the config sets none of {', '.join(keys)}")
        return found

    return rule


def product_of(key: str) -> Callable[[Config], int]:
    """A rule multiplying a config list (e.g. per-stage temporal downsampling factors)."""
    return lambda cfg: math.prod(cfg[key])
