"""The audio autoencoder families: waveforms (B, C, samples) at the rate and channel count their
configs (or pipelines) name; AutoencoderKLLTX2Audio encodes a log-mel spectrogram computed from the
waveform (models/mel.py), MMAudioVAE computes its mel inside encode().
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .family import Audio, Config, Family, config_value

if TYPE_CHECKING:
    from .encoder import Encoder


def cosmos3_channels(cfg: Config) -> int:
    """Cosmos3's sound tokenizer reads input_channels per side, doubled when stereo."""
    return int(cfg.get("input_channels", 1)) * (2 if cfg.get("stereo", True) else 1)


def cosmos3_refuse(cfg: Config) -> str | None:
    if cfg.get("encoder_enabled", True) is False:
        return ("this Cosmos3AVAEAudioTokenizer holds decoder-only weights and cannot encode audio; "
                "pass a checkpoint converted with its encoder")
    return None


def stable_audio_window(cfg: Config) -> float:
    """StableAudioPipeline encodes transformer.sample_size latent frames (1024 in Stable Audio Open) of
    prod(downsampling_ratios) samples each: 47.55 s at 44.1 kHz with the default ratios."""
    return 1024 * math.prod(cfg.get("downsampling_ratios") or (2, 4, 4, 8, 8)) / (cfg.get("sampling_rate") or 44100)


def audio(rate: tuple[str, int], inputs: str | int, output: str = "latent_dist", **flags: Any) -> Family:
    """An audio family: the config key holding the rate (and the pipeline's default where it has none)
    and the input channel count (a key, or a number fixed by the class)."""
    count = (lambda cfg: inputs) if isinstance(inputs, int) else config_value(inputs)
    return Family(output, input=flags.pop("input", "waveform"),
                  audio=Audio(config_value(rate[0], default=rate[1]), count, flags.pop("seconds", None),
                              flat=flags.pop("flat", False)), **flags)


AUDIO_FAMILIES: dict[str, Family] = {
    "AutoencoderOobleck": audio(("sampling_rate", 44100), "audio_channels", seconds=stable_audio_window,
                                channels=config_value("decoder_input_channels")),  # Stable Audio
    "AutoencoderSAME": audio(("sampling_rate", 44100), "audio_channels", "latents",  # Stable Audio 3
                             channels=config_value("latent_dim")),
    "AutoencoderKLKVAEAudio": audio(("sample_rate", 48000), "num_channels", channels=config_value("codebook_dim")),
    "AutoencoderKLMiniMaxH3Audio": audio(("sampling_rate", 32000), 1),  # its encode() asserts mono
    # Its encode() scales the batch by the loudest sample of the whole batch: one clip per call.
    "Cosmos3AVAEAudioTokenizer": Family("latent_dist", input="waveform", one_at_a_time=True, refuse=cosmos3_refuse,
                                        audio=Audio(config_value("sampling_rate", default=48000), cosmos3_channels),
                                        channels=config_value("vocoder_input_dim")),
    "MMAudioVAE": audio(("sample_rate", 44100), 1, flat=True),  # Kandinsky 6: (B, samples), mel inside
    "AutoencoderKLLTX2Audio": audio(("sample_rate", 16000), "in_channels", input="mel"),
    # encode() samples unless asked for the mean; its std stays inside, so a run reports the mode.
    "LongCatAudioDiTVae": audio(("sample_rate", 24000), "in_channels", "latents", deterministic=True,
                                encode_kwargs=(("sample_posterior", False),), channels=config_value("latent_dim")),
}


@dataclass(frozen=True)
class AudioModel:
    """What the audio source needs of a loaded audio autoencoder: its rate, its channels, a default
    clip length (None where neither config nor pipeline says), and the mel recipe's name (or None)."""

    rate: int
    channels: int
    seconds: float | None
    mel: str | None


def audio_of(encoder: Encoder) -> AudioModel:
    """The audio input of `encoder`'s class, from its config; an image autoencoder is refused in one sentence."""
    from ..errors import InputError
    from .mel import MEL

    spec, name = encoder.family.audio, type(encoder.vae).__name__
    if spec is None:
        raise InputError(f"{name} encodes images or clips, not audio; pass images or videos with --data")
    cfg = dict(encoder.vae.config)
    mel = MEL[name][0] if encoder.family.input == "mel" else None
    seconds = spec.seconds(cfg) if spec.seconds else None
    return AudioModel(int(spec.rate(cfg)), int(spec.channels(cfg)), seconds, mel)
