"""Mel spectrograms for the autoencoders whose encoder takes one, computed as their diffusers pipeline does.

AutoencoderKLLTX2Audio encodes a log-mel spectrogram (B, C, frames, mel_bins). The diffusers code that
encodes audio with it (the Echo modular pipeline, `modular_pipelines/echo/encoders.py: _encode_audio`)
takes torchaudio's `MelSpectrogram(n_fft=1024, win_length=1024, hop_length=config.mel_hop_length,
f_min=0, f_max=rate/2, n_mels=config.mel_bins, hann window, center=True, reflect padding, power=1,
slaney mel scale and norm)` of each channel, then log(clamp(·, 1e-5)), in float32. torchaudio is not a
dependency (each of its wheels pins one torch release), so the same float32 arithmetic is written here
with torch.stft and torchaudio's filterbank formulas. MMAudioVAE computes its mel inside encode() from
the waveform, so it needs nothing here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

LTX2_N_FFT = 1024  # the Echo pipeline's n_fft and window length
LOG_FLOOR = 1e-5
_F_SP = 200.0 / 3  # slaney: Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(freq: float) -> float:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (torchaudio/librosa's formula, in Python floats)."""
    if freq >= _MIN_LOG_HZ:
        return _MIN_LOG_HZ / _F_SP + math.log(freq / _MIN_LOG_HZ) / _LOGSTEP
    return freq / _F_SP


def _mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mels - _MIN_LOG_HZ / _F_SP))
    return torch.where(mels >= _MIN_LOG_HZ / _F_SP, log_part, _F_SP * mels)


@functools.lru_cache(maxsize=8)
def slaney_filterbank(n_freqs: int, f_max: float, n_mels: int, rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) triangular filters from 0 Hz to f_max on the slaney scale with slaney area
    normalisation, in float32, as torchaudio's melscale_fbanks(norm="slaney", mel_scale="slaney") builds it."""
    all_freqs = torch.linspace(0, rate // 2, n_freqs)
    f_pts = _mel_to_hz(torch.linspace(_hz_to_mel(0.0), _hz_to_mel(f_max), n_mels + 2))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down, up))
    return fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)


def ltx2_mel(wave: torch.Tensor, config: Mapping[str, Any]) -> torch.Tensor:
    """Waveforms (B, C, S) at config.sample_rate -> the log-mel (B, C, frames, mel_bins) in float32 that
    AutoencoderKLLTX2Audio encodes (clips shorter than n_fft are zero-padded to it, as the pipeline does)."""
    rate, hop, bins = int(config["sample_rate"]), int(config["mel_hop_length"]), int(config["mel_bins"])
    wave = wave.float()
    if wave.shape[-1] < LTX2_N_FFT:
        wave = F.pad(wave, (0, LTX2_N_FFT - wave.shape[-1]))
    flat = wave.reshape(-1, wave.shape[-1])
    window = torch.hann_window(LTX2_N_FFT, device=wave.device)
    spec = torch.stft(flat, LTX2_N_FFT, hop_length=hop, win_length=LTX2_N_FFT, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True).abs()
    fb = slaney_filterbank(LTX2_N_FFT // 2 + 1, rate / 2.0, bins, rate).to(wave.device)
    mel = torch.matmul(spec.transpose(-1, -2), fb)  # (B·C, frames, bins)
    return torch.log(torch.clamp(mel, min=LOG_FLOOR)).reshape(*wave.shape[:-1], *mel.shape[-2:])


# The mel recipes, by class: (recipe name recorded in the result, the function).
MEL: dict[str, tuple[str, Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]]] = {
    "AutoencoderKLLTX2Audio": ("ltx2-echo-mel-v1", ltx2_mel),
}
