"""Video clips: the source decodes exactly the frames a naive full decode would pick, every video
class's posterior equals diffusers' own, and broken files fail with one-line reasons.

Videos are written here with PyAV: pans and zooms over real photographs from skimage.data. The
reference decodes every frame with PyAV, converts each to PIL and preprocesses it with the
conftest's classic transforms; the tiny models are cases.CASES.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import diffusers
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import latent_scale.sources.video as video_module
from cases import CASES, Case
from latent_scale.errors import InputError
from latent_scale.models import FAMILIES, Encoder, temporal_compression
from latent_scale.options import Options
from latent_scale.sources.batches import UnitDataset
from latent_scale.sources.video import VIDEO_EXTENSIONS, VideoSource, check_frames, default_frames, pick_nearest

SIZE = 32
VIDEO_CASES = [c for c in CASES if c.video]
CONTAINERS = {"mp4": "libx264", "avi": "mpeg4", "webm": "libvpx-vp9", "mkv": "libx264", "mov": "mpeg4"}


def pan_zoom(photo: str, count: int, zoom: bool = False, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    """A camera panning across (or zooming into) a photograph, one 4:3 window per frame."""
    img = Image.fromarray(getattr(skimage.data, photo)()).convert("RGB")
    width, height = img.size
    frames = []
    for i in range(count):
        scale = 1 - 0.5 * i / count if zoom else 0.6
        w, h = int(width * scale), int(width * scale * 3 / 4)
        h = min(h, height)
        x = (width - w) // 2 if zoom else (width - w) * i // max(1, count - 1)
        y = (height - h) // 2
        frames.append(img.crop((x, y, x + w, y + h)).resize(size, Image.BILINEAR))
    return frames


def write_video(path: Path, frames: list[Image.Image], fps: int = 24, keyint: int | None = None) -> Path:
    """Encode frames with the codec CONTAINERS names for the suffix (a keyframe every `keyint`
    frames when given); GIFs through PIL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
        return path
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CONTAINERS[path.suffix[1:]], rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        if keyint:
            stream.codec_context.gop_size = keyint
            stream.options = {"min-keyint": str(keyint), "scenecut": "0"}
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(img)))
        container.mux(stream.encode())
    return path


def naive_frames(path: Path) -> list[Image.Image]:
    """Every frame of the video, decoded from the start, as RGB images."""
    with av.open(str(path)) as container:
        return [frame.to_image().convert("RGB") for frame in container.decode(video=0)]


def reference_clip(path: Path, indices: list[int], classic_pixels: Callable[..., torch.Tensor]) -> torch.Tensor:
    """The chosen frames of a full decode, preprocessed like images: (3, T, H, W)."""
    frames = naive_frames(path)
    return classic_pixels([frames[i] for i in indices], SIZE).permute(1, 0, 2, 3)


@pytest.fixture
def opts(options: Callable[..., Options]) -> Callable[..., Options]:
    """The source's options: clips of 9 frames at 32 px unless a test says otherwise."""
    return functools.partial(options, frames=9)


def reasons(source: VideoSource) -> list[str | None]:
    """What the pipeline records for each unit: None, or the one-line reason it is skipped."""
    data = UnitDataset(source, range(len(source)))
    return [data[i][2] for i in range(len(source))]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 frames at 24 fps in each container (pans), a zoom in a subfolder, and an animated GIF."""
    root = tmp_path_factory.mktemp("videos")
    for i, ext in enumerate(CONTAINERS):
        write_video(root / f"pan.{ext}", pan_zoom(["astronaut", "chelsea", "coffee", "rocket", "brick"][i], 24))
    write_video(root / "sub" / "zoom.mp4", pan_zoom("astronaut", 24, zoom=True))
    write_video(root / "anim.gif", pan_zoom("coffee", 12), fps=10)
    return root


@pytest.mark.parametrize("name", [f"pan.{ext}" for ext in CONTAINERS] + ["sub/zoom.mp4", "anim.gif"])
def test_clip_equals_full_decode_and_image_transforms(videos: Path, name: str, classic_pixels: Callable,
                                                      opts: Callable[..., Options]) -> None:
    source = VideoSource.open(str(videos / name), opts())
    assert source.ids == [f"{Path(name).name}#clip0"]
    (clip,) = source.load(0)
    assert clip.shape == (3, 9, SIZE, SIZE) and clip.dtype == torch.float32
    assert torch.equal(clip, reference_clip(videos / name, list(range(9)), classic_pixels))


@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_clips_per_video_and_fps_pick_the_nearest_frames(videos: Path, ext: str, classic_pixels: Callable,
                                                         opts: Callable[..., Options]) -> None:
    """24 frames at 24 fps: 3 clips of 5 start at 0, 10, 19; at 10 fps frame k is source frame
    round(2.4 k), and 2 clips start at 0 and floor(23 - 9.6) = 13."""
    path = videos / f"pan.{ext}"
    source = VideoSource.open(str(path), opts(frames=5, clips_per_video=3))
    assert source.ids == [f"pan.{ext}#clip{j}" for j in range(3)]
    for j, start in enumerate([0, 10, 19]):
        assert torch.equal(source.load(j)[0], reference_clip(path, list(range(start, start + 5)), classic_pixels))
    resampled = VideoSource.open(str(path), opts(frames=5, fps=10.0, clips_per_video=2))
    for j, start in enumerate([0, 13]):
        expected = reference_clip(path, [start + i for i in (0, 2, 5, 7, 10)], classic_pixels)
        assert torch.equal(resampled.load(j)[0], expected)
    assert resampled.recipe() == {"preprocess": "classic-v1-frames", "crop": True, "frames": 5, "fps": 10.0,
                                  "clips_per_video": 2}


def test_a_clip_decodes_from_the_keyframe_before_it(tmp_path: Path, classic_pixels: Callable,
                                                   opts: Callable[..., Options],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyframes every 4 frames, 40 frames: the middle clip of 3 starts at floor(35/2 + 1/2) = 18, so
    decoding starts at keyframe 16 and stops at the clip's last frame, 22."""
    path = write_video(tmp_path / "gop.mp4", pan_zoom("coffee", 40), keyint=4)
    decoded: list[float] = []
    timed = video_module.timed_frames

    def spy(*args: Any) -> Any:
        for time, frame in timed(*args):
            decoded.append(round(time * 24))
            yield time, frame

    monkeypatch.setattr(video_module, "timed_frames", spy)
    (clip,) = VideoSource.open(str(path), opts(frames=5, clips_per_video=3)).load(1)
    assert decoded == list(range(16, 23))
    assert torch.equal(clip, reference_clip(path, list(range(18, 23)), classic_pixels))


def test_pick_nearest_settles_ties_and_the_end_by_hand() -> None:
    frames = [(i / 4, i) for i in range(6)]  # 4 fps, frames 0..5
    assert pick_nearest(iter(frames), [0.0, 0.3, 0.37, 1.25], tol=0.125) == [0, 1, 1, 5]
    assert pick_nearest(iter(frames), [1.3], tol=0.125) == [5]  # just after the last frame
    with pytest.raises(ValueError, match="ends before"):
        pick_nearest(iter(frames), [0.0, 1.5], tol=0.125)


def test_listing_folders_lists_and_globs(videos: Path, tmp_path: Path, opts: Callable[..., Options]) -> None:
    """Recursive, sorted, ids relative to the root; GIFs are clips only when --frames is given."""
    names = sorted(f"pan.{ext}" for ext in CONTAINERS)
    assert VideoSource.open(str(videos), opts()).ids == [f"{n}#clip0" for n in ["anim.gif", *names, "sub/zoom.mp4"]]
    assert VideoSource.accepts(str(videos / "anim.gif"), opts())
    assert not VideoSource.accepts(str(videos / "anim.gif"), opts(frames=None))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{videos / 'sub' / 'zoom.mp4'}\n# a comment\n{videos / 'pan.avi'}\n")
    up = os.path.relpath(videos, tmp_path)  # ids are relative to the list's folder, in the list's order
    assert VideoSource.open(str(listing), opts()).ids == [f"{up}/sub/zoom.mp4#clip0", f"{up}/pan.avi#clip0"]
    assert VideoSource.open(str(videos / "**" / "*.mp4"), opts()).ids == ["pan.mp4#clip0", "sub/zoom.mp4#clip0"]
    assert not VideoSource.accepts(str(tmp_path), opts())


def test_broken_videos_fail_with_one_line_reasons(tmp_path: Path, videos: Path, opts: Callable[..., Options]) -> None:
    write_video(tmp_path / "short.mp4", pan_zoom("rocket", 10))
    (tmp_path / "empty.mp4").write_bytes(b"")
    whole = (videos / "pan.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    whole = (videos / "pan.avi").read_bytes()
    (tmp_path / "truncated.avi").write_bytes(whole[: len(whole) // 2])
    write_audio(tmp_path / "audio.mp4")
    source = VideoSource.open(str(tmp_path), opts(frames=17))
    why = dict(zip(source.ids, reasons(source), strict=True))
    assert why["short.mp4#clip0"] == "ValueError: the video has 10 frames, fewer than a clip of 17 frames needs"
    assert why["audio.mp4#clip0"] == "ValueError: no video stream (audio-only or not a video)"
    for name in ("empty.mp4", "truncated.mp4", "truncated.avi"):
        assert why[f"{name}#clip0"] and "\n" not in why[f"{name}#clip0"], name
    resampled = VideoSource.open(str(tmp_path / "short.mp4"), opts(frames=5, fps=4.0))
    assert reasons(resampled) == ["ValueError: the video has 10 frames, fewer than a clip of 5 frames at 4 fps "
                                  "(the file has 24) needs"]


def write_audio(path: Path) -> None:
    """An audio-only MP4: a quarter second of silence."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, i * 1024, Fraction(1, 16000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_no_videos_is_an_input_error(tmp_path: Path, opts: Callable[..., Options]) -> None:
    (tmp_path / "a.mp3").write_bytes(b"x")
    with pytest.raises(InputError, match="holds no videos"):
        VideoSource.open(str(tmp_path), opts())


@pytest.mark.parametrize(("frames", "t", "says"), [(16, 4, "use --frames 13 or 17"), (8, 8, "use --frames 1 or 9"),
                                                   (20, 6, "use --frames 19 or 25"), (2, 4, "use --frames 1 or 5")])
def test_check_frames_names_the_nearest_valid_values(frames: int, t: int, says: str) -> None:
    with pytest.raises(InputError, match=f"clips of 1 \\+ k·{t} frames\\); {says}$"):
        check_frames(frames, t)


def test_default_frames_are_five_latent_frames() -> None:
    assert [default_frames(t) for t in (4, 6, 8)] == [17, 25, 33]
    for t in (4, 6, 8):
        check_frames(default_frames(t), t)
        check_frames(1, t)


def default_config(cls: str) -> dict[str, Any]:
    """The config a class gets with no arguments (what the published checkpoints mostly keep)."""
    init = getattr(diffusers, cls).__init__
    return {k: p.default for k, p in inspect.signature(init).parameters.items() if k != "self"}


@pytest.mark.parametrize(("cls", "t"), [("AutoencoderKLWan", 4), ("AutoencoderKLCogVideoX", 4),
                                        ("AutoencoderKLHunyuanVideo", 4), ("AutoencoderKLLTXVideo", 8),
                                        ("AutoencoderKLMochi", 6)])
def test_temporal_compression_of_the_published_defaults(cls: str, t: int) -> None:
    assert FAMILIES[cls].temporal(default_config(cls)) == t


def encoder_of(vae: torch.nn.Module, cls: str) -> Encoder:
    return Encoder(vae, FAMILIES[cls], torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def tiny() -> Callable[[Case], torch.nn.Module]:
    """Each case's model, built once (no files: the posterior is compared in memory)."""
    cache: dict[str, torch.nn.Module] = {}

    def get(case: Case) -> torch.nn.Module:
        if case.id not in cache:
            torch.manual_seed(0)
            cache[case.id] = getattr(diffusers, case.cls)(**case.kwargs).eval()
        return cache[case.id]

    return get


def clip_pixels(frames: int) -> torch.Tensor:
    """Two clips of real photographs (a pan and a zoom) in [-1, 1]: (2, 3, T, 32, 32)."""
    size = (SIZE, SIZE)
    clips = [pan_zoom("astronaut", frames, size=size), pan_zoom("chelsea", frames, zoom=True, size=size)]
    arr = np.stack([np.stack([np.asarray(f) for f in c]) for c in clips])  # (2, T, H, W, 3)
    return torch.from_numpy(arr).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


@pytest.mark.parametrize("case", VIDEO_CASES, ids=lambda c: c.id)
def test_posterior_of_a_clip_is_diffusers_latent_dist(case: Case, tiny: Callable) -> None:
    vae = tiny(case)
    x = clip_pixels(7 if case.cls == "AutoencoderKLMochi" else 5)
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
    mean, logvar = encoder_of(vae, case.cls).posterior(x)
    assert torch.equal(mean, dist.mean) and torch.equal(logvar, dist.logvar)
    assert torch.equal(torch.exp(0.5 * logvar), dist.std)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_posterior_of_images_keeps_the_image_contract(case: Case, tiny: Callable) -> None:
    """Images: video VAEs get one-frame clips; std = exp(0.5·logvar) bit for bit; deterministic: None."""
    vae = tiny(case)
    x = clip_pixels(1)[:, :, 0]
    with torch.no_grad():
        out = getattr(vae.encode(x.unsqueeze(2) if case.video else x), case.output)
    mean, logvar = encoder_of(vae, case.cls).posterior(x)
    if case.output != "latent_dist":
        assert torch.equal(mean, out) and logvar is None
        return
    assert torch.equal(mean, out.mean) and torch.equal(torch.exp(0.5 * logvar), out.std)
    if not case.video:
        assert torch.equal(encoder_of(vae, case.cls).posterior(x.unsqueeze(2))[0], mean)  # --frames 1


def test_image_autoencoders_refuse_clips(tiny: Callable) -> None:
    encoder = encoder_of(tiny(CASES[0]), CASES[0].cls)
    with pytest.raises(InputError, match="AutoencoderKL is an image autoencoder .* clips of 5 frames"):
        encoder.posterior(clip_pixels(5))
    with pytest.raises(InputError, match="AutoencoderKL encodes single frames.*--frames 1"):
        temporal_compression(encoder)
    qwen = next(c for c in CASES if c.cls == "AutoencoderKLQwenImage")
    with pytest.raises(InputError, match="AutoencoderKLQwenImage encodes single frames"):
        temporal_compression(encoder_of(tiny(qwen), qwen.cls))


@pytest.mark.parametrize("cls", ["AutoencoderKLLTXVideo", "AutoencoderKLMochi"])
def test_latent_frames_follow_the_temporal_compression(cls: str, tiny: Callable) -> None:
    """1 + k·t frames give 1 + k latent frames (the tiny LTX compresses by 2, Mochi by 6)."""
    case = next(c for c in VIDEO_CASES if c.cls == cls)
    encoder = encoder_of(tiny(case), cls)
    t = temporal_compression(encoder)
    assert t == (2 if cls == "AutoencoderKLLTXVideo" else 6) == encoder.vae.temporal_compression_ratio
    assert encoder.posterior(clip_pixels(1 + 2 * t))[0].shape[2] == 3


@pytest.mark.parametrize("case", VIDEO_CASES, ids=lambda c: c.id)
def test_first_latent_frame_is_the_causal_first_frame(case: Case, tiny: Callable) -> None:
    """z[:, :, :1] encodes frame 0: alone in Wan, Qwen-Image, LTX-Video and Mochi; CogVideoX and
    HunyuanVideo normalise over the whole clip (GroupNorm across time), so later frames move it."""
    encoder = encoder_of(tiny(case), case.cls)
    x = clip_pixels(7 if case.cls == "AutoencoderKLMochi" else 5)
    first = encoder.posterior(x)[0][:, :, :1]
    alone = encoder.posterior(x[:, :, :1])[0]
    mixes = case.cls in ("AutoencoderKLCogVideoX", "AutoencoderKLHunyuanVideo")
    assert torch.allclose(first, alone, atol=1e-5) != mixes


def test_enable_tiling(tiny: Callable) -> None:
    wan = next(c for c in VIDEO_CASES if c.cls == "AutoencoderKLWan")
    encoder = encoder_of(tiny(wan), wan.cls)
    encoder.enable_tiling()
    assert encoder.vae.use_tiling
    with pytest.raises(InputError, match="Identity has no tiled encode"):
        Encoder(torch.nn.Identity(), FAMILIES["AutoencoderKL"], torch.device("cpu"), torch.float32).enable_tiling()


def naive_clip_stds(vae: torch.nn.Module, clips: torch.Tensor) -> tuple[float, float, float]:
    """The throw-away script: every clip in one encode call, the mode, float64 std over all latent
    frames, the first one, and the later ones."""
    with torch.no_grad():
        z = vae.encode(clips).latent_dist.mean.double()
    return z.std().item(), z[:, :, :1].std().item(), z[:, :, 1:].std().item()



@pytest.mark.parametrize("case", [c for c in VIDEO_CASES if c.cls != "AutoencoderKLQwenImage"], ids=lambda c: c.id)
def test_estimate_on_clips_equals_naive_reference(case: Case, videos: Path, tmp_path: Path, measure: Callable,
                                                  classic_pixels: Callable) -> None:
    vae = getattr(diffusers, case.cls)(**case.kwargs).eval()
    vae.save_pretrained(tmp_path / "vae")
    frames = 7 if case.cls == "AutoencoderKLMochi" else 5
    paths = [p for p in videos.rglob("*") if p.suffix in VIDEO_EXTENSIONS]
    clips = torch.stack([reference_clip(p, list(range(frames)), classic_pixels) for p in paths])
    result = measure(tmp_path / "vae", videos, frames=frames, posterior="mode", dtype="float32")
    every, first, later = naive_clip_stds(vae, clips)
    assert math.isclose(result.std, every, rel_tol=1e-6)
    assert math.isclose(result["frames"]["first"]["std"], first, rel_tol=1e-6)
    assert math.isclose(result["frames"]["later"]["std"], later, rel_tol=1e-6)



def test_one_frame_clips_equal_the_image_path_on_first_frames(videos: Path, tmp_path: Path, measure: Callable) -> None:
    wan = next(c for c in VIDEO_CASES if c.cls == "AutoencoderKLWan")
    vae = getattr(diffusers, wan.cls)(**wan.kwargs).eval()
    vae.save_pretrained(tmp_path / "vae")
    stills = tmp_path / "stills"
    stills.mkdir()
    for p in sorted(p for p in videos.rglob("*.mp4")):
        naive_frames(p)[0].save(stills / f"{p.stem}.png")
    clips = measure(tmp_path / "vae", videos / "**" / "*.mp4", frames=1, posterior="mode", dtype="float32")
    images = measure(tmp_path / "vae", stills, posterior="mode", dtype="float32")
    assert math.isclose(clips.std, images.std, rel_tol=1e-6)
