"""Tiny configs of every supported autoencoder class, shared by the model and video tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Case:
    """A tiny model of one class; `output` is the encode() field diffusers returns for it."""

    cls: str
    kwargs: dict[str, Any]
    output: str = "latent_dist"
    video: bool = False
    name: str = ""
    inner: Callable[[torch.nn.Module], torch.nn.Module] | None = field(default=None, compare=False)  # sees [0, 1]

    @property
    def id(self) -> str:
        return self.name or self.cls


KL2D = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, layers_per_block=1)
WAN = dict(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
           latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.0, 2.0, 0.5, 1.5])

CASES = [
    Case("AutoencoderKL", {**KL2D, "scaling_factor": 0.5}),
    Case("AutoencoderKL", {**KL2D, "latent_channels": 16, "scaling_factor": 1.5, "shift_factor": 0.1},
         name="AutoencoderKL-sd3"),
    Case("AsymmetricAutoencoderKL", dict(
        down_block_types=("DownEncoderBlock2D",) * 2, down_block_out_channels=(8, 16),
        up_block_types=("UpDecoderBlock2D",) * 2, up_block_out_channels=(8, 16), norm_num_groups=4)),
    Case("AutoencoderKLTemporalDecoder", dict(down_block_types=("DownEncoderBlock2D",) * 2,
                                              block_out_channels=(32, 32))),  # GroupNorm(32) is fixed
    Case("ConsistencyDecoderVAE", dict(
        encoder_block_out_channels=(8, 16), encoder_down_block_types=("DownEncoderBlock2D",) * 2,
        encoder_layers_per_block=1, encoder_norm_num_groups=4, decoder_block_out_channels=(8, 16),
        decoder_down_block_types=("ResnetDownsampleBlock2D",) * 2,
        decoder_up_block_types=("ResnetUpsampleBlock2D",) * 2, decoder_layers_per_block=1,
        decoder_norm_num_groups=4)),
    Case("AutoencoderKLFlux2", {**KL2D, "sample_size": 32}),
    Case("AutoencoderKLHunyuanImage", dict(in_channels=3, out_channels=3, latent_channels=8,
                                           block_out_channels=(32, 32), layers_per_block=1,
                                           spatial_compression_ratio=2, sample_size=32)),
    Case("AutoencoderKLWan", WAN, video=True),
    Case("AutoencoderKLWan", dict(WAN, z_dim=8, decoder_base_dim=8, dim_mult=[1, 1], in_channels=12, out_channels=12,
                                  is_residual=True, patch_size=2, latents_mean=[0.0] * 8, latents_std=[1.0] * 8),
         video=True, name="AutoencoderKLWan-2.2"),
    Case("AutoencoderKLQwenImage", WAN, video=True),
    Case("AutoencoderKLCogVideoX", dict(
        block_out_channels=(8, 16), down_block_types=("CogVideoXDownBlock3D",) * 2,
        up_block_types=("CogVideoXUpBlock3D",) * 2, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        sample_height=32, sample_width=32), video=True),
    Case("AutoencoderKLHunyuanVideo", dict(
        block_out_channels=(8, 16), down_block_types=("HunyuanVideoDownBlock3D",) * 2,
        up_block_types=("HunyuanVideoUpBlock3D",) * 2, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        spatial_compression_ratio=2, mid_block_add_attention=False), video=True),
    Case("AutoencoderKLLTXVideo", dict(
        latent_channels=8, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, False),
        decoder_spatio_temporal_scaling=(True, False), decoder_inject_noise=(False,) * 3,
        upsample_residual=(False, False), upsample_factor=(1, 1), down_block_types=("LTXVideoDownBlock3D",) * 2,
        downsample_type=("conv", "conv"), patch_size=1), video=True),
    Case("AutoencoderKLMochi", dict(
        encoder_block_out_channels=(32,) * 4, decoder_block_out_channels=(32,) * 4, latent_channels=4,
        layers_per_block=(1,) * 5, add_attention_block=(False,) * 5, latents_mean=(0.1, 0.0, -0.1, 0.2),
        latents_std=(1.0, 0.5, 2.0, 1.0)), video=True),
    Case("AutoencoderDC", dict(
        latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
        encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)), scaling_factor=0.41),
        output="latent"),
    # diffusers feeds AutoencoderTiny [-1, 1] like every VAE; its EncoderTiny maps that to TAESD's [0, 1].
    Case("AutoencoderTiny", dict(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                                 num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1)),
         output="latents", inner=lambda vae: vae.encoder.layers),
    Case("VQModel", {**KL2D, "num_vq_embeddings": 16}, output="latents"),
]
