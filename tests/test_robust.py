"""Files nobody checked, precision and memory failures, and untrusted model files: nothing bad
enters the statistics, nothing good is lost, and every refusal is one sentence with exit code 2."""

from __future__ import annotations

import functools
import io
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

import latent_scale
from latent_scale.errors import InputError
from latent_scale.models import Encoder
from latent_scale.sources.images import list_images, open_rgb

if TYPE_CHECKING:
    from conftest import Cli

SIZE = 32
Run = Callable[..., latent_scale.Result]


def photo(seed: int, size: int = 64) -> np.ndarray:
    """A real photograph crop (uint8 RGB) from skimage's astronaut."""
    from skimage import data

    img = data.astronaut()
    y, x = np.random.default_rng(seed).integers(0, img.shape[0] - size, 2)
    return np.ascontiguousarray(img[y:y + size, x:x + size])


def png(path: Path, width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> None:
    """Write PNG chunks by hand: for 48-bit RGB (PIL cannot write it) and for a lying header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def encoded(fmt: str, arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def odd_files(folder: Path) -> dict[str, tuple[np.ndarray, float]]:
    """Valid but unusual files -> (the RGB pixels they must decode to, allowed mean abs error)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb, gray = photo(1), photo(2)[..., 1]
    gray3 = np.repeat(gray[..., None], 3, axis=2)
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")  # mode I;16
    png(folder / "rgb16.png", 64, 64, 16, 2,
        b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb.astype(np.uint16) * 257))
    rgba = np.dstack([rgb, np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(gray).save(folder / "gray.png")
    Image.fromarray(rgb).save(folder / "lossless.webp", lossless=True)
    Image.fromarray(rgb).save(folder / "photo.bmp")
    Image.fromarray(rgb).save(folder / "photo.tiff")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.gif")
    (folder / "photo.jpg").write_bytes(encoded("JPEG", rgb, quality=95))
    exact = {"gray16.png": gray3, "rgb16.png": rgb, "rgba.png": rgb, "gray.png": gray3, "lossless.webp": rgb,
             "photo.bmp": rgb, "photo.tiff": rgb}
    return {**{k: (v, 0.0) for k, v in exact.items()},
            **{k: (rgb, 6.0) for k in ("cmyk.jpg", "palette.gif", "photo.jpg")}}


def broken_files(folder: Path) -> dict[str, str]:
    """Unreadable files -> a word their skip reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg, png_bytes = encoded("JPEG", photo(3)), encoded("PNG", photo(4))
    (folder / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    (folder / "truncated.png").write_bytes(png_bytes[:len(png_bytes) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image\n")
    png(folder / "bomb.png", 30_000, 30_000, 8, 2, b"\0" * 97)  # claims 900 Mpx, holds one row
    return {"truncated.jpg": "truncated", "truncated.png": "truncated", "empty.jpg": "cannot identify",
            "notes.jpg": "cannot identify", "bomb.png": "DecompressionBomb"}


@pytest.fixture
def mode_latents(vae_dir: Path, classic_pixels: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`mode_latents(images, dtype=float32)`: the naive reference, one encode per image, every μ in float64.

    channels_last as the tool uses it: in bfloat16 the memory layout changes the rounding."""
    def encode(images: list[Image.Image], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        vae = AutoencoderKL.from_pretrained(vae_dir).eval().to(dtype).to(memory_format=torch.channels_last)
        x = classic_pixels(images, SIZE).to(dtype)
        with torch.no_grad():
            return torch.cat([vae.encode(x[i:i + 1]).latent_dist.mean.double() for i in range(len(x))])

    return encode


@pytest.fixture
def run(measure: Run) -> Run:
    """This file's runs: batches of 4."""
    return functools.partial(measure, batch_size=4)


def test_odd_but_valid_files_decode_to_the_right_pixels(tmp_path: Path) -> None:
    for name, (expected, tol) in odd_files(tmp_path).items():
        got = np.asarray(open_rgb(tmp_path / name), dtype=np.float64)
        assert got.shape == expected.shape, name
        assert np.abs(got - expected).mean() <= tol, name  # 16-bit: v*257 -> v exactly, so nothing clipped


def test_folder_of_broken_and_odd_files_exact_counts(vae_dir: Path, tmp_path: Path, run: Run,
                                                     mode_latents: Callable[..., torch.Tensor]) -> None:
    odd_dir = tmp_path / "data" / "odd"
    odd = odd_files(odd_dir)
    broken = broken_files(tmp_path / "data" / "broken")
    with pytest.warns(UserWarning, match="skipping") as caught:
        r = run(vae_dir, tmp_path / "data", workers=1)
    assert r.num_images == len(odd) == 10
    assert len(r.skipped) == len(broken) == 5
    assert sum("skipping" in str(w.message) for w in caught) == 5  # one warning per file
    reasons = {Path(s["path"]).name: s["error"] for s in r.skipped}
    assert reasons.keys() == broken.keys()
    for name, word in broken.items():
        assert word.lower() in reasons[name].lower(), (name, reasons[name])
    # lossless files by their known pixels; lossy ones (checked within tolerance above) as decoded
    mu = mode_latents([Image.fromarray(px) if tol == 0 else open_rgb(odd_dir / name)
                                for name, (px, tol) in odd.items()])
    assert r.estimates["mode"]["std"] == pytest.approx(mu.std().item(), rel=1e-6)
    assert r.estimates["mode"]["mean"] == pytest.approx(mu.mean().item(), rel=1e-6)


def test_strict_stops_at_the_first_bad_file_naming_it(vae_dir: Path, tmp_path: Path, cli: Cli) -> None:
    odd_files(tmp_path)
    (tmp_path / "zzz-broken.png").write_bytes(encoded("PNG", photo(5))[:300])
    cli.fails("estimate", "--model", vae_dir, "--data", tmp_path, "--size", SIZE, "--workers", 0, "--no-progress",
              "--strict", says=["zzz-broken.png"])


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_tar_shards_equal_the_same_photos_in_a_folder(vae_dir: Path, photo_dir: Path, tmp_path: Path,
                                                      run: Run) -> None:
    files = list_images(str(photo_dir))[0]
    shards = tmp_path / "shards"
    shards.mkdir()
    for k, part in enumerate((files[:10], files[10:])):  # shard order, then member order = folder order
        with tarfile.open(shards / f"train-{k:06d}.tar", "w") as tf:
            for i, f in enumerate(part):
                key = f"{k:02d}{i:04d}"
                add(tf, f"{key}.cls", b"3")  # WebDataset siblings of an image are ignored
                add(tf, f"{key}.png", Path(f).read_bytes())
    ids = list_images(str(shards / "*.tar"))[0]
    assert len(ids) == 24 and ids[0].endswith("train-000000.tar::000000.png")
    for kw in ({}, {"shard": "1/2"}):
        from_tar, from_folder = run(vae_dir, shards / "*.tar", **kw), run(vae_dir, photo_dir, **kw)
        assert from_tar.num_images == from_folder.num_images == 24 // (2 if kw else 1)
        for post in ("sample", "mode", "expected_sample"):  # same order, so the same noise per image
            assert from_tar.estimates[post]["std"] == pytest.approx(from_folder.estimates[post]["std"], rel=1e-12)
            assert from_tar.estimates[post]["mean"] == pytest.approx(from_folder.estimates[post]["mean"], rel=1e-12)


def test_broken_tar_members_are_skipped(vae_dir: Path, tmp_path: Path, cli: Cli, run: Run,
                                        mode_latents: Callable[..., torch.Tensor]) -> None:
    good = [encoded("PNG", photo(s)) for s in range(6)]
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "a.tar", "w") as tf:
        add(tf, "0.png", good[0])
        add(tf, "1.jpg", encoded("JPEG", photo(9))[:400])  # a truncated member
        add(tf, "2.png", good[1])
        add(tf, "3.png", good[2])  # its header is overwritten below: 3.png and 4.png are lost
        add(tf, "4.png", good[3])
    raw = bytearray((shards / "a.tar").read_bytes())
    at = raw.index(b"3.png")
    raw[at:at + 100] = b"\xff" * 100
    (shards / "a.tar").write_bytes(bytes(raw))
    with tarfile.open(shards / "b.tar", "w") as tf:
        add(tf, "5.png", good[4])
        add(tf, "6.png", good[5])  # the file ends in the middle of this member
    raw = (shards / "b.tar").read_bytes()
    (shards / "b.tar").write_bytes(raw[:raw.index(good[5]) + 100])

    with pytest.warns(UserWarning, match="skipping"):
        r = run(vae_dir, shards / "*.tar", posterior="mode")
    assert r.num_images == 3
    reasons = {s["path"].split("::")[1]: s["error"] for s in r.skipped}
    assert reasons.keys() == {"1.jpg", f"@{at}", "6.png"}
    assert "corrupt tar header" in reasons[f"@{at}"] and "truncated" in reasons["6.png"]
    mu = mode_latents([Image.open(io.BytesIO(g)).convert("RGB") for g in (good[0], good[1], good[4])])
    assert r.std == pytest.approx(mu.std().item(), rel=1e-6)

    (tmp_path / "c.tar").write_bytes(zlib.compress(good[0]))  # not a plain tar
    cli.fails("estimate", "--model", vae_dir, "--data", tmp_path / "c.tar", says=["uncompressed tar"])
    cli.fails("estimate", "--model", vae_dir, "--data", tmp_path / "none-*.tar", says=["holds no images"])


def solid(rgb: tuple[int, int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Which rows of a preprocessed batch are the solid colour `rgb`."""
    target = torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1
    return lambda x: (x.float() - target[None, :, None, None].to(x.device)).abs().amax(dim=(1, 2, 3)) < 1e-2


def test_non_finite_latents_are_upcast_then_skipped(vae_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    run: Run, mode_latents: Callable[..., torch.Tensor]) -> None:
    """Red overflows only in low precision (float32 rescues it); green overflows always."""
    photos = [photo(s) for s in range(6)]
    for i, px in enumerate(photos):
        Image.fromarray(px).save(tmp_path / f"p{i}.png")
    Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "red.png")
    Image.new("RGB", (64, 64), (0, 255, 0)).save(tmp_path / "green.png")
    is_red, is_green = solid((255, 0, 0)), solid((0, 255, 0))
    real = Encoder.posterior

    def overflowing(self: Encoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mu, logvar = real(self, x)
        hit = is_green(x) | (is_red(x) & (self.dtype != torch.float32))
        return torch.where(hit[:, None, None, None].to(mu.device), torch.inf, mu), logvar

    monkeypatch.setattr(Encoder, "posterior", overflowing)
    with pytest.warns(UserWarning, match="green.png: non-finite latent even in float32"):
        r = run(vae_dir, tmp_path, dtype="bfloat16", chunk_size="1", batch_size=3)
    assert r.run["upcast_chunks"] == 2  # red and green were retried in float32
    assert [Path(s["path"]).name for s in r.skipped] == ["green.png"]
    assert r.num_images == 7 and np.isfinite(r.std)
    low = mode_latents([Image.fromarray(px) for px in photos], torch.bfloat16)
    red = mode_latents([Image.open(tmp_path / "red.png").convert("RGB")])
    mu = torch.cat([low, red])
    assert r.estimates["mode"]["std"] == pytest.approx(mu.std().item(), rel=1e-9)
    assert r.estimates["mode"]["mean"] == pytest.approx(mu.mean().item(), rel=1e-9)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                                                "allocate 1073741824 bytes. Error code 12")])
def test_out_of_memory_halves_the_chunk_and_retries(vae_dir: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                    cli: Cli, run: Run, error: Exception) -> None:
    reference = run(vae_dir, photo_dir, batch_size=8, chunk_size="1")
    real = Encoder.posterior
    fits = {"n": 3}

    def small_memory(self: Encoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if len(x) > fits["n"]:
            raise error
        return real(self, x)

    monkeypatch.setattr(Encoder, "posterior", small_memory)
    r = run(vae_dir, photo_dir, batch_size=8)
    assert r.run["chunk_size"] == 2 and r.num_images == 24  # 8 -> 4 -> 2, the same images retried
    for post in ("sample", "mode"):
        assert r.estimates[post]["std"] == pytest.approx(reference.estimates[post]["std"], rel=1e-6)
        assert r.estimates[post]["mean"] == pytest.approx(reference.estimates[post]["mean"], rel=1e-6)

    fits["n"] = 0
    base = ("estimate", "--model", vae_dir, "--data", photo_dir, "--size", SIZE, "--workers", 0, "--no-progress")
    cli.fails(*base, says=["out of memory encoding a single"])
    cli.fails(*base, "--chunk-size", 4, says=["smaller --chunk-size"])


class Payload:
    """A pickle that creates a file when loaded: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return open, (self.marker, "w")


def test_pickle_with_a_payload_is_refused_and_never_runs(vae_dir: Path, tmp_path: Path, cli: Cli) -> None:
    marker = tmp_path / "payload-ran"
    weights = {"encoder.conv_in.weight": torch.zeros(1), "hook": Payload(marker)}
    torch.save(weights, tmp_path / "vae.ckpt")  # zip format
    with open(tmp_path / "vae.pt", "wb") as f:
        pickle.dump(weights, f, protocol=2)  # a bare pickle
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text((vae_dir / "config.json").read_text())
    torch.save(weights, folder / "diffusion_pytorch_model.bin")  # a diffusers folder without safetensors
    for model, says in [(tmp_path / "vae.ckpt", "refusing"), (tmp_path / "vae.pt", "refusing"),
                        (folder, "could not load")]:
        cli.fails("estimate", "--model", model, "--data", "samples", "--no-progress", says=[says])
        assert not marker.exists()
    with pytest.raises(InputError, match=r"Unsupported global: GLOBAL (io|builtins)\.open"):
        latent_scale.estimate(model=str(tmp_path / "vae.ckpt"), data="samples")
    with open(tmp_path / "vae.pt", "rb") as f:
        pickle.load(f)  # the payload is real: an unrestricted load runs it
    assert marker.exists()


def test_float16_honours_force_upcast(vae_dir: Path, photo_dir: Path, tmp_path: Path, run: Run) -> None:
    """diffusers' AutoencoderKL defaults to force_upcast=True: float16 is then refused for float32."""
    with pytest.warns(UserWarning, match="force_upcast"):
        r = run(vae_dir, photo_dir, dtype="float16", limit=4)
    assert r.recipe["dtype"] == "float32"
    assert r.std == pytest.approx(run(vae_dir, photo_dir, dtype="float32", limit=4).std, rel=1e-12)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    vae.register_to_config(force_upcast=False)
    vae.save_pretrained(tmp_path / "fp16-safe")
    r = run(tmp_path / "fp16-safe", photo_dir, dtype="float16", limit=4)
    assert r.recipe["dtype"] == "float16" and np.isfinite(r.std)


def test_double_star_never_enters_a_linked_folder_for_images(tmp_path: Path, finishes: Callable[..., object]) -> None:
    """`**` with a link back to the folder: 4 images were counted 164 times; two links never ended."""
    for k in range(4):
        (tmp_path / f"d/sub{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(k)).save(tmp_path / f"d/sub{k % 2}/{k}.png")
    (tmp_path / "d/again").symlink_to(".")
    (tmp_path / "d/sub1/back").symlink_to("..")
    ids = finishes(lambda: list_images(str(tmp_path / "d/**/*.png"))[0])
    assert sorted(Path(i).relative_to(tmp_path / "d").as_posix() for i in ids) == \
        ["sub0/0.png", "sub0/2.png", "sub1/1.png", "sub1/3.png"]


@pytest.fixture
def short_videos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two 20-frame videos of a real photograph, for a model of temporal compression 4."""
    from test_video import pan_zoom, write_video

    monkeypatch.setattr("latent_scale.models.temporal_compression", lambda encoder: 4)
    for name in ("a", "b"):
        write_video(tmp_path / f"v/{name}.mp4", pan_zoom("astronaut", 20))
    return tmp_path / "v"


def test_clips_per_video_beyond_the_frames_is_refused_or_capped(short_videos: Path, options: Callable[..., object],
                                                               finishes: Callable[..., object]) -> None:
    """--clips-per-video 1000000000 never finished listing; 50 on 20-frame videos counted ~12 copies of each clip
    as independent units."""
    from latent_scale.sources.batches import UnitDataset
    from latent_scale.sources.video import VideoSource

    def refusal() -> str:
        try:
            VideoSource.open(str(short_videos), options("video", frames=17, clips_per_video=10**9))
        except InputError as e:
            return str(e)
        return "opened"

    assert "--clips-per-video 1000000000 is more than the 20 frames of the longest video" in finishes(refusal)
    source = VideoSource.open(str(short_videos), options("video", frames=17, clips_per_video=6))
    with pytest.warns(UserWarning, match="2 of 2 videos hold fewer distinct clips of 17 frames"):
        source.adapt(None)
    data = UnitDataset(source, range(6))
    reasons = [data[i][2] for i in range(6)]
    assert [r is None for r in reasons] == [True, True, False, True, False, True]  # starts 0, 1, 1, 2, 2, 3
    assert "repeats clip 1: the video holds 4 distinct clips of 17 frames" in reasons[2]


def test_video_frames_have_the_pixel_limit_of_images(short_videos: Path, options: Callable[..., object],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12000x12000 frame needs gigabytes to decode; images had a limit, frames had none."""
    from latent_scale.sources.batches import UnitDataset
    from latent_scale.sources.video import VideoSource

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 48 - 1)  # the test videos are 64x48
    source = VideoSource.open(str(short_videos), options("video", frames=9))
    source.adapt(None)
    reason = UnitDataset(source, [0])[0][2]
    assert "its frames have 64x48 = 3,072 pixels, more than the 3,071 an image may have" in reason
