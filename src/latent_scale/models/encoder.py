"""A loaded autoencoder reduced to one thing: posterior(x) = (μ, logvar | None) of a batch of units.

Only the encoder half goes to the device; the decoder stays on the CPU, untouched, because measuring
a latent space never decodes. The input is laid out as the class's pipelines lay it out.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import InputError, one_line
from .family import Family

if TYPE_CHECKING:
    from .loading import ModelInfo

# Children of the registered classes that encode() never calls (decoders and their input projections,
# the VQ codebook, AutoencoderKLFlux2's latent BatchNorm, which only its pipelines use); they stay on the CPU.
DECODER_PARTS = {"decoder", "post_quant_conv", "decoder_unet", "quantize", "bn", "out_proj", "dec_in_proj"}
Posterior = tuple[torch.Tensor, torch.Tensor | None]
# What torch says when an input is shorter than a convolution's kernel or a padding: a unit too small
# for the model (a --seconds of a few samples), the user's to fix, not a bug.
TOO_SMALL = ("Kernel size can't be greater than actual input size", "Output size is too small",
             "Padding size should be less than the corresponding input dimension")


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation returns while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        sizes = [t.nbytes for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.nbytes = max([self.nbytes, *sizes])
        return out


@dataclass
class Encoder:
    """A loaded autoencoder, its device half, and what its config says about scaling."""

    vae: torch.nn.Module
    family: Family
    device: torch.device
    dtype: torch.dtype
    info: ModelInfo | None = None
    channels_last: bool = False  # the weights' layout (hardware.prefers_channels_last), for run.memory_format

    @property
    def stochastic(self) -> bool:
        return self.family.stochastic

    @property
    def name(self) -> str:
        return type(self.vae).__name__

    @torch.inference_mode()
    def posterior(self, x: torch.Tensor) -> Posterior:
        """Images (B, 3, H, W) or clips (B, 3, T, H, W) in [-1, 1], or waveforms (B, C, samples) -> the
        posterior mean and logvar exactly as diffusers holds them (its std is exp(0.5 · logvar), bit for
        bit, where the class keeps a logvar); a deterministic encoder gives (latent, None)."""
        x = self._layout(x)
        if not self.family.one_at_a_time or len(x) == 1:
            return self._encode(x)
        means, logvars = zip(*(self._encode(unit) for unit in x.split(1)), strict=True)
        return torch.cat(means), None if logvars[0] is None else torch.cat(logvars)

    def _encode(self, x: torch.Tensor) -> Posterior:
        try:
            return self.family.read(self.vae, self.vae.encode(x, **dict(self.family.encode_kwargs)))
        except RuntimeError as e:
            if not any(words in str(e) for words in TOO_SMALL):
                raise
            raise InputError(f"{self.name} cannot encode units of shape {tuple(x.shape[1:])}: they are smaller "
                             f"than its layers reach ({one_line(e, 120)}); use longer audio clips (--seconds), "
                             "more frames (--frames) or a larger --size") from e

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the class's pipelines give it, on the encoder's device and dtype."""
        x = self._pixels(x) if self.family.input == "pixels" else self._audio(x)
        return x.to(self.device, self.dtype, non_blocking=True)

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Video VAEs take an image as a one-frame clip; image VAEs take a one-frame clip as an image."""
        if x.dim() not in (4, 5):
            raise InputError(f"{self.name} encodes images or clips, not audio; pass images or videos with --data")
        if x.dim() == 4 and self.family.video:
            x = x.unsqueeze(2)
        elif x.dim() == 5 and not self.family.video:
            if x.shape[2] != 1:
                raise InputError(f"{self.name} is an image autoencoder and cannot encode clips of "
                                 f"{x.shape[2]} frames; use --frames 1 or a video autoencoder")
            x = x.squeeze(2)
        if self.family.video and not self.family.single_frame and x.shape[2] == 1:
            raise InputError(f"{self.name} encodes clips of several frames, not single images or one-frame "
                             "clips; pass videos with --data and --frames 1 + k·t (t its temporal compression)")
        if self.family.alpha and self.vae.config.get("in_channels") == x.shape[1] + 1:
            x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # opaque, as its pipeline's RGBA conversion
        low, high = self.family.pixel_range
        return x if (low, high) == (-1.0, 1.0) else (x + 1) * ((high - low) / 2) + low

    def _audio(self, x: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, C, samples); a mel class gets its mel, a flat class (B, samples)."""
        if x.dim() != 3:
            raise InputError(f"{self.name} encodes audio; pass audio files with --data")
        if self.family.input == "mel":
            from .mel import MEL

            return MEL[self.name][1](x, dict(self.vae.config))
        if self.family.audio is not None and self.family.audio.flat:
            if x.shape[1] != 1:
                raise InputError(f"{self.name} encodes mono audio, not {x.shape[1]} channels")
            return x.squeeze(1)
        return x

    def enable_tiling(self) -> None:
        """--tiling: the VAE's own tiled encode, so large frames fit in memory (tile seams change
        the latents slightly, so the recipe records it)."""
        if not callable(getattr(self.vae, "enable_tiling", None)):
            raise InputError(f"{self.name} has no tiled encode in diffusers; drop --tiling")
        self.vae.enable_tiling()

    def measured(self, x: torch.Tensor, flops: bool) -> tuple[float | None, int, Posterior]:
        """Encode x while watching every operation: (FLOPs per unit when asked, for TFLOP/s; the
        largest tensor any operation made, in bytes per unit, to size CPU chunks to the cache; the
        encoding)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) if flops else nullcontext() as counter, LargestTensor() as largest:
            out = self.posterior(x)
        return counter.get_total_flops() / len(x) if flops else None, -(-largest.nbytes // len(x)), out

    def compile(self) -> None:
        """torch.compile the encoder half in place (the decoder is never run, so never compiled)."""
        for name, child in self.vae.named_children():
            if name not in DECODER_PARTS:
                setattr(self.vae, name, torch.compile(child))

    def encode_parts(self) -> list[torch.nn.Module]:
        """The children encode() uses: all but DECODER_PARTS, so the decoder never costs device memory."""
        return [child for name, child in self.vae.named_children() if name not in DECODER_PARTS]

    def to_dtype(self, dtype: torch.dtype) -> None:
        """Cast the encoder half only; the decoder stays float32 on the CPU, never used."""
        for child in self.encode_parts():
            child.to(dtype)
        self.dtype = dtype

    def to_device(self, device: torch.device, channels_last: bool = False) -> None:
        """Move the encoder half; channels_last is chosen per weight rank because video VAEs mix
        2-D and 3-D convolutions, which Module.to(memory_format=...) cannot convert in one go."""
        for child in self.encode_parts():
            child.to(device)
            if channels_last:
                for p in child.parameters():
                    if p.dim() in (4, 5):
                        fmt = torch.channels_last if p.dim() == 4 else torch.channels_last_3d
                        p.data = p.data.contiguous(memory_format=fmt)
        self.device, self.channels_last = device, channels_last


def temporal_compression(encoder: Encoder) -> int:
    """t, the frames per latent frame after the causal first one: clips must have 1 + k·t frames."""
    rule = encoder.family.temporal
    if rule is None:
        raise InputError(f"{encoder.name} encodes single frames (its pipelines never encode clips); "
                         "pass --frames 1 to measure video frames as images")
    return rule(dict(encoder.vae.config))
