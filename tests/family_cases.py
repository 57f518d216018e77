"""Tiny configs of the autoencoder classes diffusers added after those in cases.py: image and video
classes (fed images, as one-frame clips where they are video classes, or clips), and audio classes
(fed waveforms). Kept apart from cases.CASES because test_video's clip tests run over that list.

Each case also says how the class's own pipeline prepares its input and reads its posterior, written
here apart from the tool, for the naive reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from latent_scale.models.mel import ltx2_mel

Read = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, torch.Tensor | None]]


def gaussian(_: torch.nn.Module, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    return out.latent_dist.mean, out.latent_dist.std


def mode(_: torch.nn.Module, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    return out.latent_dist.mode(), None


def latents(_: torch.nn.Module, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    return out.latents, None


@dataclass(frozen=True)
class Tiny:
    """A tiny model of one class. `feed`: what its pipeline does to the input before encode();
    `read`: the posterior (mean, std | None) from encode()'s output; `one_at_a_time`: the reference
    encodes unit by unit; `needs`: a module the class imports; `rate`/`inputs`: an audio class's
    sampling rate and input channels as its config says them, `seconds` its pipeline's clip length;
    `reference`: the model the reference encodes with, where it is not the model itself; `encode_kwargs`:
    what its pipeline passes to encode()."""

    cls: str
    kwargs: dict[str, Any]
    video: bool = True
    read: Read = gaussian
    feed: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda x: x, compare=False)
    one_at_a_time: bool = False
    needs: str | None = None
    name: str = ""
    rate: int = 0
    inputs: int = 0
    reference: Callable[[torch.nn.Module], torch.nn.Module] | None = field(default=None, compare=False)
    encode_kwargs: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None

    @property
    def id(self) -> str:
        return self.name or self.cls


def rgba(x: torch.Tensor) -> torch.Tensor:
    """QwenImage21Pipeline converts images to RGBA: an opaque alpha of 255, 1.0 in [-1, 1]."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


RAE = dict(encoder_type="dinov2", encoder_hidden_size=64, encoder_patch_size=8, encoder_num_hidden_layers=1,
           decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
           decoder_intermediate_size=32, patch_size=4, encoder_input_size=32, scaling_factor=0.5)
RAE_MEAN = [0.05 * (i % 7) - 0.1 for i in range(64)]
RAE_STD = [0.5 + 0.1 * (i % 5) for i in range(64)]


def rae_unnormalised(vae: torch.nn.Module) -> torch.nn.Module:
    """The same RAE with no latent normalisation (latents_mean/std unset, scaling_factor 1): its encode()
    gives the encoder's own features divided by 1 + 1e-5 (an unset latents_std is a buffer of ones, and
    encode() divides by latents_std + 1e-5), which `RawRAE` multiplies back."""
    twin = type(vae)(**{**dict(vae.config), "latents_mean": None, "latents_std": None, "scaling_factor": 1.0})
    twin.load_state_dict({k: v for k, v in vae.state_dict().items() if not k.startswith("_latents")}, strict=False)
    return RawRAE(twin.eval())


class RawRAE(torch.nn.Module):
    """An RAE whose encode() gives the raw features: (B, C, h, w), or tokens (B, N, C)."""

    def __init__(self, rae: torch.nn.Module) -> None:
        super().__init__()
        self.rae = rae

    def encode(self, x: torch.Tensor) -> Any:
        out = self.rae.encode(x)
        out.latent = out.latent * (1 + 1e-5)
        return out


def rae_tokens(vae: torch.nn.Module, out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tokens (B, N, C): the channels are the last dimension."""
    return out.latent.transpose(1, 2), None


LTX2_VIDEO = dict(
    latent_channels=8, block_out_channels=(8, 8), decoder_block_out_channels=(8,), layers_per_block=(1, 1, 1),
    decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True, False), decoder_spatio_temporal_scaling=(True,),
    decoder_inject_noise=(False, False), downsample_type=("spatiotemporal", "spatial"),
    upsample_type=("spatiotemporal",), upsample_residual=(False,), upsample_factor=(1,),
    down_block_types=("LTX2VideoDownBlock3D",) * 2, patch_size=1)
HUNYUAN15 = dict(latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, spatial_compression_ratio=2,
                 temporal_compression_ratio=2)
QWEN21 = dict(base_dim=8, decoder_base_dim=8, z_dim=4, dim_mult=[1, 1], num_res_blocks=1, temperal_downsample=[False],
              latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.0, 2.0, 0.5, 1.5], scale_factor_temporal=1,
              scale_factor_spatial=2)

# Image and video classes measured on images.
PIXEL_CASES = [
    Tiny("AutoencoderKLKVAE", dict(channels=32, num_enc_blocks=1, num_dec_blocks=1, z_channels=4, ch_mult=(1, 1),
                                   sample_size=32), video=False),  # GroupNorm(32) is fixed
    Tiny("AutoencoderKLHunyuanVideo15", HUNYUAN15, one_at_a_time=True),
    Tiny("AutoencoderKLHunyuanImageRefiner", HUNYUAN15),
    Tiny("AutoencoderKLLTX2Video", LTX2_VIDEO),
    Tiny("AutoencoderKLKVAEVideo", dict(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=4,
                                        temporal_compress_times=2), read=mode),
    Tiny("AutoencoderKLMagvit", dict(
        latent_channels=4, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
        down_block_types=("SpatialDownBlock3D", "SpatialTemporalDownBlock3D"),
        up_block_types=("SpatialUpBlock3D", "SpatialTemporalUpBlock3D"))),
    Tiny("AutoencoderKLCosmos", dict(
        latent_channels=4, encoder_block_out_channels=(8, 8, 8), decode_block_out_channels=(8, 8, 8),
        attention_resolutions=(), resolution=32, num_layers=1, patch_size=1, spatial_compression_ratio=2,
        temporal_compression_ratio=2, latents_mean=None, latents_std=None), read=mode),
    Tiny("AutoencoderKLMiniMaxH3", dict(
        latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, spatial_downsample_factors=(2, 1),
        temporal_downsample_factors=(2, 1), norm_num_groups=4, decoder_num_layers=1, decoder_num_attention_heads=2,
        decoder_attention_head_dim=8, decoder_num_register_tokens=1, clip_length=5, token_drop=0,
        latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4)),
    Tiny("Kandinsky6SRVAE", dict(latent_channels=4, encoder_block_out_channels=(8, 8),
                                 decoder_block_out_channels=(8, 8), layers_per_block=1, temporal_compression_ratio=2,
                                 temporal_compression_start_level=0)),
    Tiny("AutoencoderKLQwenImage21", QWEN21, feed=rgba),
    # RAE resizes and normalises [0, 1] images itself; its latents_mean/std are (C, 1, 1) for (B, C, h, w).
    Tiny("AutoencoderRAE", {**RAE, "latents_mean": [[[m]] for m in RAE_MEAN], "latents_std": [[[s]] for s in RAE_STD]},
         video=False, read=lambda _, out: (out.latent, None), feed=lambda x: (x + 1) / 2, needs="transformers",
         reference=rae_unnormalised),
    Tiny("AutoencoderRAE", {**RAE, "reshape_to_2d": False, "latents_mean": RAE_MEAN, "latents_std": RAE_STD},
         video=False, read=rae_tokens, feed=lambda x: (x + 1) / 2, needs="transformers", name="AutoencoderRAE-tokens",
         reference=rae_unnormalised),
]

# Classes that encode clips of several frames only.
CLIP_CASES = [Tiny("AutoencoderVidTok", dict(ch=8, ch_mult=(1, 2), z_channels=4, num_res_blocks=1, tempo_ds=[0]))]

# Audio classes, fed waveforms (B, channels, samples) in [-1, 1].
AUDIO_CASES = [
    Tiny("AutoencoderOobleck", dict(encoder_hidden_size=4, downsampling_ratios=[2, 2], channel_multiples=[1, 2],
                                    decoder_channels=4, decoder_input_channels=2, audio_channels=2,
                                    sampling_rate=16000), rate=16000, inputs=2,
         seconds=1024 * 4 / 16000),  # StableAudioPipeline's window: 1024 latent frames of 2·2 samples
    Tiny("AutoencoderSAME", dict(audio_channels=2, patch_size=16, encoder_channels=16, encoder_c_mults=(1,),
                                 encoder_strides=(2,), encoder_transformer_depths=(1,), latent_dim=8, dim_heads=8,
                                 ff_mult=1, sampling_rate=22050), read=latents, rate=22050, inputs=2),
    Tiny("AutoencoderKLKVAEAudio", dict(encoder_dim=4, encoder_rates=[2, 2], latent_dim=16, codebook_dim=4,
                                        decoder_dim=8, decoder_rates=[2, 2], sample_rate=16000, attn_num_heads=2),
         rate=16000, inputs=1),
    Tiny("AutoencoderKLMiniMaxH3Audio", dict(
        encoder_dim=4, encoder_rates=(2, 2), latent_dim=16, latent_channels=4, num_attention_heads=2, decoder_dim=8,
        decoder_rates=(2, 2), decoder_kernel_sizes=(4, 4), resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1,),),
        sampling_rate=16000), rate=16000, inputs=1),
    Tiny("Cosmos3AVAEAudioTokenizer", dict(
        sampling_rate=16000, vocoder_input_dim=2, dec_dim=4, dec_c_mults=(1, 2), dec_strides=(2, 2), enc_dim=8,
        enc_intermediate_dim=16, enc_num_layers=1, enc_num_blocks=1, enc_n_fft=16, enc_hop_length=4, enc_latent_dim=4,
        enc_c_mults=(1, 2), enc_strides=(2, 2)), one_at_a_time=True, rate=16000, inputs=2),
    Tiny("MMAudioVAE", dict(mel_bins=16, latent_channels=4, hidden_channels=8, channel_multipliers=(1, 2),
                            layers_per_block=1, sample_rate=16000, n_fft=64, hop_length=16),
         feed=lambda x: x[:, 0], rate=16000, inputs=1),
    Tiny("AutoencoderKLLTX2Audio", dict(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", mid_block_add_attention=False,
        sample_rate=16000, mel_hop_length=160, mel_bins=8), rate=16000, inputs=2,
        feed=lambda x: ltx2_mel(x, {"sample_rate": 16000, "mel_hop_length": 160, "mel_bins": 8})),
    Tiny("LongCatAudioDiTVae", dict(in_channels=1, channels=4, c_mults=[1, 2], strides=[2, 2], latent_dim=4,
                                    encoder_latent_dim=8, downsampling_ratio=4, sample_rate=24000),
         read=latents, rate=24000, inputs=1, encode_kwargs={"sample_posterior": False}),
]
