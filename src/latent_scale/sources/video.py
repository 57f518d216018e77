"""Video clips: files, folders, .txt lists and globs of .mp4 .webm .mov .mkv .avi (and animated .gif).

A unit is one clip: `frames` frames of one video, `clips_per_video` clips evenly spaced over each
video (one clip starts at frame 0). Frames are chosen by timestamp: frame k of a clip is the
source frame nearest to start + k/F, F being --fps or the file's own average rate (so without
--fps a constant-rate file gives consecutive frames). Listing reads only container metadata
(or counts packets where the container does not say), and a clip decodes only from the keyframe
before its start to its last frame. Each frame is preprocessed exactly like an image in the
classic recipe. Ids are `path/relative/to/root.mp4#clipJ`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import InputError, one_line
from ..fields import option
from ..options import check_at_least, check_positive
from .base import Source, SourceContext, file_signature
from .files import check_regular, expand, glob_root, is_glob, matching, read_list, scan_folder
from .images import Resized

if TYPE_CHECKING:
    import av
    import torch
    from PIL import Image

VIDEO_ONLY = {".mp4", ".webm", ".mov", ".mkv", ".avi"}
VIDEO_EXTENSIONS = VIDEO_ONLY | {".gif"}  # a GIF is a clip only when --frames asks for clips
RECIPE = "classic-v1-frames"
Frame = TypeVar("Frame")


class SeekedPast(ValueError):
    """The demuxer's seek landed after the clip's start; decoding from the start fixes it."""


def default_frames(t: int) -> int:
    """The model's short natural clip, 1 + 4·t frames: five latent frames (the causal first and four
    more) for every temporal compression t (17 for t = 4, 25 for Mochi's 6, 33 for LTX-Video's 8)."""
    return 1 + 4 * t


def check_frames(frames: int, t: int) -> None:
    """A causal video VAE encodes 1 + k·t frames (the first alone, then groups of t)."""
    if frames < 1 or (frames - 1) % t:
        below = 1 + max(0, (frames - 1) // t) * t
        raise InputError(f"--frames {frames} cannot be encoded by this model (clips of 1 + k·{t} frames); "
                         f"use --frames {below} or {below + t}")


@dataclass(frozen=True)
class VideoInfo:
    """What listing learns of one video: its frame count and average frame rate, or why it is unusable."""

    frames: int = 0
    fps: float = 0.0
    origin: float = 0.0  # the stream's start time, seconds
    error: str | None = None


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ValueError("no video stream (audio-only or not a video)")
    return container.streams.video[0]


def probe(path: str) -> VideoInfo:
    """Frame count and rate from container metadata; counts packets (never decodes) where the
    container does not record the count (WebM, Matroska)."""
    import av  # here: the CLI lists this source's options at once

    try:
        check_regular(path)
        with av.open(path) as container:
            stream = video_stream(container)
            frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            rate = stream.average_rate or stream.guessed_rate
            width, height = stream.codec_context.width, stream.codec_context.height
            origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    except (OSError, ValueError, av.error.FFmpegError) as e:
        return VideoInfo(error=one_line(e))
    if not frames:
        return VideoInfo(error="the video has no frames")
    if not rate:
        return VideoInfo(error="the video records no frame rate")
    return VideoInfo(frames, float(rate), origin, too_many_pixels(width, height))


def too_many_pixels(width: int, height: int) -> str | None:
    """Frames beyond the pixel limit images have (PIL's MAX_IMAGE_PIXELS, a decompression-bomb guard:
    one 12000x12000 frame takes gigabytes to decode) are refused as images are."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return (f"its frames have {width}x{height} = {width * height:,} pixels, more than the {limit:,} an image "
                "may have (PIL's MAX_IMAGE_PIXELS)")
    return None


def clip_starts(info: VideoInfo, frames: int, fps: float | None, clips: int) -> list[int]:
    """Source frame indices where `clips` evenly spaced clips start (the first at frame 0); an
    error naming the frame count when the video is shorter than one clip."""
    span = (frames - 1) * info.fps / (fps or info.fps)  # source frames from a clip's first to its last
    last = math.floor(info.frames - 1 - span + 1e-6)
    if last < 0:
        rate = f" at {fps:g} fps (the file has {info.fps:g})" if fps else ""
        raise ValueError(f"the video has {info.frames} frames, fewer than a clip of {frames} frames{rate} needs")
    return [0 if clips == 1 else math.floor(j * last / (clips - 1) + 0.5) for j in range(clips)]


def pick_nearest(frames: Iterable[tuple[float, Frame]], targets: Sequence[float], tol: float) -> list[Frame]:
    """For each target time, the frame nearest to it (frames come in time order); stops reading
    after the last target is settled. A target up to `tol` after the last frame takes that frame."""
    out: list[Frame] = []
    prev: tuple[float, Frame] | None = None
    for time, frame in frames:
        if prev is None and time > targets[0] + tol:
            raise SeekedPast(f"the first frame decoded is at {time:.3f} s, after the clip's start "
                             f"at {targets[0]:.3f} s")
        while len(out) < len(targets) and time >= targets[len(out)]:
            target = targets[len(out)]
            out.append(prev[1] if prev is not None and target - prev[0] <= time - target else frame)
        if len(out) == len(targets):
            return out
        prev = time, frame
    while prev is not None and len(out) < len(targets) and targets[len(out)] <= prev[0] + tol:
        out.append(prev[1])
    if len(out) < len(targets):
        raise ValueError(f"the video ends before the clip's frame {len(out)} at {targets[len(out)]:.3f} s (truncated?)")
    return out


def timed_frames(container: av.container.InputContainer, stream: Any, start: float) -> Iterator[tuple[float, Any]]:
    """Decoded frames with their times, from the keyframe at or before `start` seconds."""
    if start > 0:
        container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        if frame.time is None:
            raise ValueError("the video's frames carry no timestamps")
        yield frame.time, frame


def read_clip(path: str, targets: Sequence[float], tol: float) -> list[Image.Image]:
    """The frames nearest to `targets` (seconds), as RGB images, decoding only what they need."""
    import av

    check_regular(path)
    try:
        with av.open(path) as container:
            stream = video_stream(container)
            try:
                picked = pick_nearest(timed_frames(container, stream, targets[0] - tol), targets, tol)
            except SeekedPast:
                container.seek(0)
                picked = pick_nearest(timed_frames(container, stream, 0.0), targets, tol)
            for frame in picked:
                if too_many_pixels(frame.width, frame.height):
                    raise ValueError(too_many_pixels(frame.width, frame.height))
            return [frame.to_image().convert("RGB") for frame in picked]
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode the video: {one_line(e)}") from e


def list_videos(spec: str, extensions: set[str] = VIDEO_EXTENSIONS) -> tuple[list[str], str]:
    """--data as (sorted video paths, the root ids are relative to); empty when it names no videos."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return scan_folder(p, extensions), str(p)
    if p.is_file() and p.suffix.lower() == ".txt":
        return [f for f in read_list(p) if Path(f).suffix.lower() in extensions], str(p.parent)
    if p.is_file():
        return ([str(p)] if p.suffix.lower() in extensions else []), str(p.parent)
    if is_glob(spec):
        return expand(matching(p), extensions, tars=False)[0], str(glob_root(p))
    return [], ""


@dataclass
class VideoOptions:
    """The video source's own options."""

    frames: int | None = option(None, "Frames per clip: 1 + k·t for the VAE's temporal compression t", panel="Video",
                                shown="1 + 4t: 17 Wan/HunyuanVideo/CogVideoX, 25 Mochi, 33 LTX-Video")
    fps: float | None = option(None, "Resample videos to this frame rate", shown="each file's own", panel="Video")
    clips_per_video: int = option(1, "Clips per video, evenly spaced (the first at frame 0)", panel="Video")

    def validate(self) -> None:
        check_at_least("clips_per_video", self.clips_per_video, 1)
        if self.frames is not None:
            check_at_least("frames", self.frames, 1)
        check_positive(self, ("fps",))
        if self.fps is not None and not math.isfinite(self.fps):
            raise InputError(f"--fps must be a finite number, got {self.fps}")


class VideoSource(Resized, Source):
    """Clips of video files; one view per --size (frames decoded once, resized per size).

    `frames` may be set after the model is known (the default clip length depends on it)."""

    kind = "video"
    input = "frames"
    unit, units = "clip", "clips"
    panel = "Video"
    options = VideoOptions

    def __init__(self, paths: list[str], root: str, infos: list[VideoInfo], *, frames: int | None,
                 fps: float | None, clips_per_video: int, sizes: Sequence[int], crop: bool = True) -> None:
        ids = [f"{os.path.relpath(p, root)}#clip{j}" for p in paths for j in range(clips_per_video)]
        Source.__init__(self, ids, root)
        Resized.__init__(self, sizes, crop)
        self.paths, self.infos = paths, infos
        self.frames, self.fps, self.clips_per_video = frames, fps, clips_per_video

    @classmethod
    def accepts(cls, spec: str, ctx: SourceContext) -> bool:
        """Video files, or folders, lists and globs holding any; GIFs only when --frames is given."""
        return bool(list_videos(spec, VIDEO_EXTENSIONS if ctx.own.frames else VIDEO_ONLY)[0])

    @classmethod
    def open(cls, spec: str, ctx: SourceContext) -> VideoSource:
        own = ctx.own
        paths, root = list_videos(spec, VIDEO_EXTENSIONS if own.frames else VIDEO_ONLY)
        if not paths:
            raise InputError(f"--data {spec} holds no videos (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
        infos = [probe(p) for p in paths]
        longest = max((i.frames for i in infos), default=0)
        if own.clips_per_video > max(longest, 1):
            raise InputError(f"--clips-per-video {own.clips_per_video} is more than the {longest} frames of the "
                             f"longest video, so clips would repeat frames; use at most {max(longest, 1)}")
        return cls(paths, root, infos, frames=own.frames, fps=own.fps,
                   clips_per_video=own.clips_per_video, sizes=ctx.sizes, crop=ctx.crop)

    def adapt(self, encoder: Any) -> None:
        """The clip length needs the model: its default, and the 1 + k·t rule (--frames 1: any VAE)."""
        from ..models import temporal_compression

        t = None if self.frames == 1 else temporal_compression(encoder)
        self.frames = self.frames or default_frames(t)
        if t:
            check_frames(self.frames, t)
        self._warn_repeats()

    def _warn_repeats(self) -> None:
        """Videos too short for --clips-per-video distinct clips: their repeated clips are skipped (counting
        one clip twice would narrow the interval), said once here."""
        short = [p for p, info in zip(self.paths, self.infos, strict=True)
                 if not info.error and info.frames and len(set(self._starts(info))) < self.clips_per_video]
        if short:
            warnings.warn(f"--clips-per-video {self.clips_per_video}: {len(short)} of {len(self.paths)} videos hold "
                          f"fewer distinct clips of {self.frames} frames (e.g. {short[0]}); their repeated clips "
                          "are skipped", stacklevel=2)

    def _starts(self, info: VideoInfo) -> list[int]:
        try:
            return clip_starts(info, self.frames, self.fps, self.clips_per_video)
        except ValueError:  # shorter than one clip: skipped with that reason when loaded
            return [0] * self.clips_per_video

    def targets(self, index: int) -> tuple[str, list[float], float]:
        """Clip `index`: its file, the times of its frames (seconds) and half a source frame."""
        if self.frames is None:
            raise RuntimeError("VideoSource.frames must be set before loading clips")
        video, clip = divmod(index, self.clips_per_video)
        info = self.infos[video]
        if info.error:
            raise ValueError(info.error)
        starts = clip_starts(info, self.frames, self.fps, self.clips_per_video)
        if clip and starts[clip] == starts[clip - 1]:
            raise ValueError(f"repeats clip {clip - 1}: the video holds {len(set(starts))} distinct clips of "
                             f"{self.frames} frames")
        start = starts[clip]
        t0, rate = info.origin + start / info.fps, self.fps or info.fps
        return self.paths[video], [t0 + k / rate for k in range(self.frames)], 0.5 / info.fps

    def load(self, index: int) -> tuple[torch.Tensor, ...]:
        import torch

        images = read_clip(*self.targets(index))
        return tuple(torch.stack([t(img) for img in images], dim=1) for t in self.transforms)

    def recipe(self) -> dict[str, Any]:
        return {"preprocess": RECIPE, "crop": self.crop, "frames": self.frames, "fps": self.fps,
                "clips_per_video": self.clips_per_video}

    def signature(self) -> str:
        """Sizes and modification times of the files (cheap; a re-encoded file changes it)."""
        return file_signature(self.paths)


SOURCE = VideoSource
