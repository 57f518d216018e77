"""The registry of autoencoder classes: how each supported class encodes, and why the others are refused.

Every class here is tested with a tiny model against the class's own encode() (tests/test_models.py).
Extend it with register_family(); a class already known is refused unless replace=True.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .families_audio import AUDIO_FAMILIES
from .families_video import VIDEO_FAMILIES
from .family import INPUT_KINDS, Family, config_value

if TYPE_CHECKING:
    import torch

KL = Family("latent_dist")


def rae_raw(vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """AutoencoderRAE normalises inside encode(): (z - latents_mean) / (latents_std + 1e-5) · scaling_factor.
    Undone here with the same broadcasting, so the statistics are of the encoder's own features, which
    its config's latents_mean/std describe."""
    mean, std = vae.get_buffer("_latents_mean").to(z), vae.get_buffer("_latents_std").to(z)
    factor = float(vae.config["scaling_factor"])
    return (z / factor if factor != 1.0 else z) * (std + 1e-5) + mean


# Image autoencoders. All take images in [-1, 1], as diffusers' pipelines feed them (AutoencoderTiny
# rescales to [0, 1] inside its encoder), except AutoencoderRAE, which resizes and normalises [0, 1]
# images itself inside encode() (ImageNet statistics for its vision encoder).
IMAGE_FAMILIES: dict[str, Family] = {
    "AutoencoderKL": KL,
    "AsymmetricAutoencoderKL": KL,
    "AutoencoderKLTemporalDecoder": KL,
    "ConsistencyDecoderVAE": KL,
    "AutoencoderKLFlux2": KL,
    "AutoencoderKLHunyuanImage": KL,
    "AutoencoderKLKVAE": Family("latent_dist", channels=config_value("z_channels")),
    "AutoencoderDC": Family("latent"),
    "AutoencoderTiny": Family("latents"),
    "VQModel": Family("latents"),  # before quantisation
    "AutoencoderRAE": Family("latent", pixel_range=(0.0, 1.0), tokens=True, raw=rae_raw,
                             channels=config_value("encoder_hidden_size")),
}

FAMILIES: dict[str, Family] = {**IMAGE_FAMILIES, **VIDEO_FAMILIES, **AUDIO_FAMILIES}

# Classes the tool refuses, each with the reason and what to do instead (one sentence each).
REFUSED: dict[str, str] = {
    "AutoencoderKLAllegro": (
        "AutoencoderKLAllegro encodes only through its tiled encoder, in whole tiles of 24 + 16·k frames at its "
        "sample_size (320 px), and leaves the latents outside whole tiles at zero, so clips of the 1 + k·t frames "
        "this tool cuts cannot be measured; encode with its pipeline and pass the latents with --latents"),
    "RFD4ProteinaAutoencoder": (
        "RFD4ProteinaAutoencoder encodes protein structures (atom coordinates), not images, clips or audio; "
        "measure the latents you stored with --latents"),
    "AceStepAudioTokenizer": (
        "AceStepAudioTokenizer quantises ACE-Step's acoustic latents into tokens and encodes no audio itself; "
        "measure the acoustic latents (from its AutoencoderOobleck) with --latents"),
    "AceStepAudioTokenDetokenizer": (
        "AceStepAudioTokenDetokenizer expands ACE-Step's tokens back into acoustic features and encodes nothing; "
        "measure the acoustic latents (from its AutoencoderOobleck) with --latents"),
}


def register_family(class_name: str, family: Family, *, replace: bool = False) -> None:
    """Teach the tool a new autoencoder class (a diffusers class name); a class already known is
    refused unless `replace`, so a plugin cannot silently change how a built-in class is measured."""
    if not (isinstance(class_name, str) and class_name.isidentifier()):
        raise TypeError(f"class_name must be a Python class name, got {class_name!r}")
    if not isinstance(family, Family):
        raise TypeError(f"family must be a latent_scale.models.Family, got {type(family).__name__}")
    if family.input not in INPUT_KINDS:
        raise TypeError(f"family.input must be one of {', '.join(INPUT_KINDS)}, not {family.input!r}")
    if class_name in FAMILIES and not replace:
        raise ValueError(f"{class_name} is already registered; pass replace=True to replace it")
    FAMILIES[class_name] = family
    REFUSED.pop(class_name, None)
