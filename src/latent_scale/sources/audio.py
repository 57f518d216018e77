"""Audio clips: files, folders, .txt lists and globs of audio files, and the audio track of video files.

A unit is one clip of --seconds at the model's sampling rate; --clips-per-file N takes N clips evenly
spaced over each file, the first at its first sample. PyAV decodes and resamples (FFmpeg's decoders
and resampler) to float32; channels become the model's as diffusers' StableAudioPipeline makes them
(mono duplicated to stereo, stereo averaged to mono); samples are clamped to [-1, 1]. A clip decodes
its file from the start to the clip's end, so every clip is the same samples however the run is split.
Ids are `path/relative/to/root.wav#clipJ`.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, one_line
from ..fields import option
from ..options import check_at_least, check_positive
from .base import Source, SourceContext, file_signature
from .files import check_regular, expand, glob_root, is_glob, matching, read_list, scan_folder

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..models import AudioModel

AUDIO_ONLY = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"}
EXTENSIONS = AUDIO_ONLY | {".mp4", ".webm", ".mov", ".mkv"}  # video files: their first audio track
RECIPE = "pyav-v1"
DEFAULT_SECONDS = 10.0
MAX_CLIPS_PER_FILE = 100_000  # listing a billion ids per file took minutes before the first clip


@dataclass
class AudioOptions:
    """The audio source's own options."""

    seconds: float | None = option(None, "Audio clip length in seconds", panel="Audio",
                                   shown="the model's pipeline's where it says, else 10")
    clips_per_file: int = option(1, "Audio clips per file, evenly spaced (the first at 0)", panel="Audio")

    def validate(self) -> None:
        check_at_least("clips_per_file", self.clips_per_file, 1)
        check_positive(self, ("seconds",))
        if self.seconds is not None and not math.isfinite(self.seconds):
            raise InputError(f"--seconds must be a finite number of seconds, got {self.seconds}")
        if self.clips_per_file > MAX_CLIPS_PER_FILE:
            raise InputError(f"--clips-per-file {self.clips_per_file:,} is more than {MAX_CLIPS_PER_FILE:,}; "
                             "clips that close together repeat the same samples")


@dataclass(frozen=True)
class AudioInfo:
    """What listing learns of one file from its header: sampling rate and channels, or why it is unusable."""

    rate: int = 0
    channels: int = 0
    error: str | None = None


def clip_samples(seconds: float, rate: int) -> int:
    """A clip's length in samples: seconds · rate, rounded half up (a whole number of samples)."""
    return max(1, math.floor(seconds * rate + 0.5))


def clip_starts(total: int, length: int, clips: int) -> list[int]:
    """Where `clips` clips of `length` samples start, evenly spaced over `total` samples (the first at 0,
    the last ending at the file's end); an error naming both lengths when the file is shorter than a clip."""
    last = total - length
    if last < 0:
        raise ValueError(f"the file holds {total} samples, fewer than a clip of {length} samples needs")
    return [0 if clips == 1 else math.floor(j * last / (clips - 1) + 0.5) for j in range(clips)]


def check_channels(have: int, want: int) -> None:
    """StableAudioPipeline's rule: the same count, mono to stereo or stereo to mono; anything else is
    refused (there is no one right downmix)."""
    if have != want and {have, want} != {1, 2}:
        raise ValueError(f"the file has {have} audio channels and the model takes {want}; only mono and stereo "
                         "files are converted (mono duplicated, stereo averaged), so downmix it first")


def to_channels(wave: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, S) -> (channels, S) as StableAudioPipeline converts its input audio: mono repeated to stereo,
    stereo averaged to mono."""
    check_channels(wave.shape[0], channels)
    if wave.shape[0] == channels:
        return wave
    return wave.repeat(2, 1) if channels == 2 else wave.mean(0, keepdim=True)


def probe(path: str) -> AudioInfo:
    """Sampling rate and channels from the file's header (never decodes)."""
    import av

    try:
        check_regular(path)
        with av.open(path) as container:
            if not container.streams.audio:
                raise ValueError("the file has no audio stream")
            ctx = container.streams.audio[0].codec_context
            if ctx is None:  # FFmpeg knows no decoder for it (a WAV of 0-bit samples, say)
                raise ValueError("FFmpeg has no decoder for the file's audio")
            rate, channels = ctx.sample_rate, ctx.layout.nb_channels
    except (OSError, ValueError, av.error.FFmpegError) as e:
        return AudioInfo(error=one_line(e))
    if not rate or not channels:
        return AudioInfo(error="the file records no sampling rate or channels")
    return AudioInfo(rate, channels)


def decoded(path: str, rate: int) -> Iterator[np.ndarray]:
    """The file's first audio track as float32 (channels, n) blocks at `rate` (FFmpeg's resampler;
    samples passed through unchanged when the file already has that rate)."""
    import av

    check_regular(path)
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise ValueError("the file has no audio stream")
            resampler = av.AudioResampler(format="fltp", rate=rate)
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    yield out.to_ndarray()
            for out in resampler.resample(None):
                yield out.to_ndarray()
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode the audio: {one_line(e)}") from e


@functools.lru_cache(maxsize=256)
def total_samples(path: str, rate: int, stamp: tuple[int, int]) -> int:
    """The file's length in samples at `rate`, by decoding it (headers may not say, or say wrongly);
    cached per process by (path, rate, size and mtime)."""
    return sum(block.shape[1] for block in decoded(path, rate))


def read_window(path: str, rate: int, start: int, length: int) -> np.ndarray:
    """Samples [start, start + length) of the file at `rate` as float32 (channels, length); decoding stops
    at the window's end. Raises when the file ends first."""
    import numpy as np

    parts, seen = [], 0
    for block in decoded(path, rate):
        lo, hi = max(start - seen, 0), min(start + length - seen, block.shape[1])
        if lo < hi:
            parts.append(block[:, lo:hi])
        seen += block.shape[1]
        if seen >= start + length:
            return np.concatenate(parts, axis=1)
    raise ValueError(f"the file holds {seen} samples at {rate} Hz, fewer than a clip of {length} samples "
                     f"from sample {start} needs ({length / rate:g} s)")


def list_audio(spec: str) -> tuple[list[str], str]:
    """--data as (sorted audio and video paths, the root ids are relative to); empty when it names none."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return scan_folder(p, EXTENSIONS), str(p)
    if p.is_file():
        listed = read_list(p) if p.suffix.lower() == ".txt" else [str(p)]
        return [f for f in listed if Path(f).suffix.lower() in EXTENSIONS], str(p.parent)
    if is_glob(spec):
        return expand(matching(p), EXTENSIONS, tars=False)[0], str(glob_root(p))
    return [], ""


class AudioSource(Source):
    """Clips of audio files at the model's rate and channels; rate, channels and the default clip
    length are set by adapt() once the model is known."""

    kind = "audio"
    input = "waveform"
    unit, units = "audio clip", "audio clips"
    panel = "Audio"
    options = AudioOptions

    def __init__(self, paths: list[str], root: str, infos: list[AudioInfo], own: AudioOptions) -> None:
        own.validate()
        ids = [f"{os.path.relpath(p, root)}#clip{j}" for p in paths for j in range(own.clips_per_file)]
        super().__init__(ids, root)
        self.paths, self.infos = paths, infos
        self.seconds, self.clips_per_file = own.seconds, own.clips_per_file
        self.model: AudioModel | None = None

    @classmethod
    def accepts(cls, spec: str, ctx: SourceContext) -> bool:
        """Audio files, or folders, lists and globs holding any (video files count: their audio track)."""
        return bool(list_audio(spec)[0])

    @classmethod
    def open(cls, spec: str, ctx: SourceContext) -> AudioSource:
        paths, root = list_audio(spec)
        if not paths:
            raise InputError(f"--data {spec} holds no audio files (looked for {', '.join(sorted(EXTENSIONS))})")
        return cls(paths, root, [probe(p) for p in paths], ctx.own or AudioOptions())

    def adapt(self, encoder: Any) -> None:
        """The model's rate and channels, and its default clip length where --seconds is not given."""
        from ..models import audio_of

        self.model = audio_of(encoder)
        self.seconds = self.seconds or self.model.seconds or DEFAULT_SECONDS

    @property
    def settled(self) -> AudioModel:
        """The model's audio input, known once adapt() has run."""
        if self.model is None or self.seconds is None:
            raise RuntimeError("AudioSource.adapt must be called before loading clips")
        return self.model

    def load(self, index: int) -> torch.Tensor:
        """Audio clip `index` as float32 (channels, samples) in [-1, 1] at the model's rate."""
        import torch

        model, (file, clip) = self.settled, divmod(index, self.clips_per_file)
        path, info, length = self.paths[file], self.infos[file], clip_samples(self.seconds, model.rate)
        if info.error:
            raise ValueError(info.error)
        check_channels(info.channels, model.channels)  # before decoding
        start = 0
        if self.clips_per_file > 1:
            st = os.stat(path)
            total = total_samples(path, model.rate, (st.st_size, st.st_mtime_ns))
            starts = clip_starts(total, length, self.clips_per_file)
            if clip and starts[clip] == starts[clip - 1]:
                raise ValueError(f"clip {clip} would start at the same sample as clip {clip - 1}: the file holds "
                                 f"{total} samples, too few for {self.clips_per_file} clips of {length}")
            start = starts[clip]
        wave = torch.from_numpy(read_window(path, model.rate, start, length))
        return to_channels(wave, model.channels).clamp(-1.0, 1.0)

    def recipe(self) -> dict[str, Any]:
        """The decoding recipe, the model's rate and channels, the clip length, the mel recipe (None:
        waveforms), and what was converted: the other source rates resampled, the channel counts changed."""
        model, good = self.settled, [i for i in self.infos if not i.error]
        rates = sorted({i.rate for i in good} - {model.rate})
        return {"audio": RECIPE, "sampling_rate": model.rate, "channels": model.channels, "seconds": self.seconds,
                "clips_per_file": self.clips_per_file, "mel": model.mel, "resampled": bool(rates),
                "resampled_from": rates, "channels_from": sorted({i.channels for i in good if i.channels <= 2}
                                                                 - {model.channels})}

    def signature(self) -> str:
        """Sizes and modification times of the files (cheap; a re-encoded file changes it)."""
        return file_signature(self.paths)


SOURCE = AudioSource
