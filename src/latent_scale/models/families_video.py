"""The video autoencoder families: clips (B, C, T, H, W), and the temporal compression each pipeline reads.

Every one also encodes an image as a one-frame clip, except VidTok, whose temporal convolutions need
several frames. A class whose pipelines only ever encode single frames has no `temporal` rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .family import Config, Family, config_value, product_of


def wan_temporal(cfg: Config) -> int:
    """pipeline_wan: config.scale_factor_temporal (its encoder also reads frames in groups of 4);
    configs older than that key: 2 ** sum(temperal_downsample), as the Wan VACE pipeline computes it."""
    return int(cfg.get("scale_factor_temporal") or 2 ** sum(cfg["temperal_downsample"]))


def ratio_temporal(cfg: Config) -> int:
    """CogVideoX, HunyuanVideo (1 and 1.5), Cosmos, Kandinsky 6: config.temporal_compression_ratio."""
    return int(cfg["temporal_compression_ratio"])


def ltx_temporal(cfg: Config) -> int:
    """LTX-Video: config.temporal_compression_ratio, else patch_size_t · 2 ** (temporal scaling blocks),
    as AutoencoderKLLTXVideo computes it."""
    return int(cfg.get("temporal_compression_ratio") or cfg["patch_size_t"] * 2 ** sum(cfg["spatio_temporal_scaling"]))


def ltx2_temporal(cfg: Config) -> int:
    """LTX-2: config.temporal_compression_ratio, else patch_size_t · 2 ** (stages that downsample time):
    what its encoder does (17 frames -> 3 latent frames with the default stages; diffusers' own fallback
    formula counts the spatial-only stage too)."""
    stages = zip(cfg["spatio_temporal_scaling"], cfg["downsample_type"], strict=False)
    return int(cfg.get("temporal_compression_ratio")
               or cfg["patch_size_t"] * 2 ** sum(bool(on) and "temporal" in kind for on, kind in stages))


def mochi_temporal(cfg: Config) -> int:
    """Mochi: the product of config.temporal_expansions (6 for (1, 2, 3); its pipeline hard-codes 6)."""
    return math.prod(cfg["temporal_expansions"])


def magvit_temporal(cfg: Config) -> int:
    """EasyAnimate's AutoencoderKLMagvit: 2 ** (stages - 2), its temporal_compression_ratio."""
    return 2 ** (len(cfg["block_out_channels"]) - 2)


def vidtok_temporal(cfg: Config) -> int:
    """AutoencoderVidTok: 2 ** len(tempo_ds); its default tempo_ds names two stages."""
    return 2 ** len(cfg.get("tempo_ds") or (0, 0))


def vidtok_refuse(cfg: Config) -> str | None:
    """The FSQ variant returns quantised codes, not a latent distribution."""
    if cfg.get("regularizer", "kl") != "kl":
        return (f"this AutoencoderVidTok quantises its latents (regularizer={cfg.get('regularizer')!r}); only its KL "
                "variant has a latent distribution to measure: encode with it and pass the latents with --latents")
    return None


def kl_video(temporal: Callable[[Config], int] | None, **flags: Any) -> Family:
    """A stochastic video VAE; `temporal` None where its pipelines only encode single frames."""
    return Family("latent_dist", video=True, temporal=temporal, **flags)


# The published configs' t: Wan 4, CogVideoX 4, HunyuanVideo 4, LTX-Video 8, Mochi 6, HunyuanVideo 1.5 4,
# LTX-2 8, KVAE video 4, Magvit 4, VidTok 4, Cosmos 8, MiniMax-H3 4, Kandinsky 6 SR 4.
VIDEO_FAMILIES: dict[str, Family] = {
    "AutoencoderKLWan": kl_video(wan_temporal),
    "AutoencoderKLCogVideoX": kl_video(ratio_temporal),
    "AutoencoderKLHunyuanVideo": kl_video(ratio_temporal),
    "AutoencoderKLLTXVideo": kl_video(ltx_temporal),
    "AutoencoderKLMochi": kl_video(mochi_temporal),
    # diffusers' attention in its mid block fails for a batch of more than one clip.
    "AutoencoderKLHunyuanVideo15": kl_video(ratio_temporal, one_at_a_time=True),
    "AutoencoderKLLTX2Video": kl_video(ltx2_temporal),
    # Its cached encoder keeps the mean half of its output and pads a zero logvar: no posterior spread.
    "AutoencoderKLKVAEVideo": kl_video(config_value("temporal_compress_times"), deterministic=True,
                                       channels=config_value("z_channels")),
    "AutoencoderKLMagvit": kl_video(magvit_temporal),
    "AutoencoderVidTok": kl_video(vidtok_temporal, single_frame=False, refuse=vidtok_refuse,
                                  channels=config_value("z_channels")),
    "AutoencoderKLCosmos": kl_video(ratio_temporal, deterministic=True),  # an IdentityDistribution
    "AutoencoderKLMiniMaxH3": kl_video(product_of("temporal_downsample_factors")),
    "Kandinsky6SRVAE": kl_video(ratio_temporal),
    # Image VAEs built on video architectures: their pipelines encode one-frame clips only.
    "AutoencoderKLQwenImage": kl_video(None),
    "AutoencoderKLQwenImage21": kl_video(None, alpha=True),  # RGBA: an opaque alpha channel is added
    "AutoencoderKLHunyuanImageRefiner": kl_video(None),
}
