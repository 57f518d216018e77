"""Shared fixtures: tiny autoencoders built from configs, real photographs from skimage, the command
line run in-process, source options, the loop over a source, and the naive reference every estimate
is checked against.

Nothing here touches the network or writes outside tmp_path. Test files use the fixtures (tests/cases.py
holds the tiny configs of every autoencoder class, a plain list the model and video tests parametrize by).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import settings
from PIL import Image

# CI runs the fuzz tests on hypothesis' fixed examples, so a run that passed passes again; locally they roam.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "brick", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry"]
SIZE = 32  # the tests' image size, unless a test says otherwise


def _go_offline(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No hub, and every cache (Hugging Face, latent-scale's weight hashes) under `home`.

    The environment is for subprocesses; huggingface_hub read it at import, so patch its constants too.
    """
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg-cache"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(home / "hf-home" / "hub"))


def _fixed_peak(dtype: torch.dtype, repeats: int = 0) -> dict[str, float]:
    """The CPU peak probe's answer in tests (each test's cache is empty; the bench runs the real one): 1 TFLOP/s."""
    return {"matmul": 1.0, "conv3x3": 0.5}


@pytest.fixture(scope="session", autouse=True)
def _session_defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The defaults every test runs under, set for the session because session and module fixtures
    (result_json, a module's runs) are built before any function-scoped fixture.

    Offline, caches in a temporary home. One torch thread, here and in subprocesses: tiny convolutions
    gain nothing from more, OpenMP spin-waits crawl on a shared CPU, and float32 encodes then agree bit
    for bit with torchrun's ranks. --dtype auto picks bfloat16 on CPUs with native bf16 units (this one
    has them); the references are float32 to 1e-6, so in-process runs see a CPU without them unless a
    test says otherwise.
    """
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        _go_offline(patch, tmp_path_factory.mktemp("home"))
        patch.setenv("OMP_NUM_THREADS", "1")
        patch.setattr("latent_scale.hardware.CPUINFO", "/nonexistent/cpuinfo")
        patch.setattr("latent_scale.hardware.probe_tflops", _fixed_peak)  # each test's cache is empty: no 1 s probe
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with empty caches of its own: nothing one test downloads or hashes leaks into another."""
    _go_offline(monkeypatch, tmp_path)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main() may install its own warning printer: the original comes back after each test."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)


def _tiny_kl(latent_channels: int = 4, seed: int = 0) -> torch.nn.Module:
    """A two-level AutoencoderKL (downsamples by 2) small enough for CPU tests."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=latent_channels,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
        scaling_factor=0.5,
    )


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`tiny_vae(latent_channels=4, seed=0)`: the folder of a saved _tiny_kl, built once per session."""
    @functools.cache
    def get(latent_channels: int = 4, seed: int = 0) -> Path:
        folder = tmp_path_factory.mktemp(f"vae-{latent_channels}ch-seed{seed}")
        _tiny_kl(latent_channels, seed).save_pretrained(folder)
        return folder

    return get


@pytest.fixture(scope="session")
def vae_dir(tiny_vae: Callable[..., Path]) -> Path:
    return tiny_vae()


@pytest.fixture(scope="session")
def largest_tensor() -> Callable[[int], int]:
    """Bytes of the largest tensor vae_dir's encoder makes for one float32 image of `side` px: the
    zero-padded input of its downsampling, 8 channels of (side + 1)² (diffusers' Downsample2D pads the
    right and bottom edges by one before its convolution)."""
    return lambda side: 8 * (side + 1) ** 2 * 4


def _write_photos(folder: Path, count: int, size: int = 96, seed: int = 0) -> None:
    """`count` real photographs (random crops of skimage's data), in class sub-folders, named img0000.png on."""
    from skimage import data

    rng = np.random.default_rng(seed)
    images = [getattr(data, name)() for name in PHOTOS]
    for k in range(count):
        img = images[k % len(images)]
        h, w = img.shape[:2]
        s = int(rng.integers(size, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = Image.fromarray(img[y:y + s, x:x + s]).convert("RGB").resize((size, size), Image.BILINEAR)
        path = folder / f"class{k % 3}" / f"img{k:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path)


@pytest.fixture(scope="session")
def photo_set(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`photo_set(count, size=96, seed=0)`: a folder of _write_photos' photographs, written once per session."""
    @functools.cache
    def get(count: int, size: int = 96, seed: int = 0) -> Path:
        folder = tmp_path_factory.mktemp(f"photos{count}-{size}px-seed{seed}")
        _write_photos(folder, count, size, seed)
        return folder

    return get


@pytest.fixture(scope="session")
def photo_dir(photo_set: Callable[..., Path]) -> Path:
    """24 real photographs, 96 px, in three class folders."""
    return photo_set(24)


def _run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run the command line in-process: (exit code, stdout, stderr)."""
    from latent_scale.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


class Cli:
    """The command line, in-process or as a subprocess, and the shape every user error must have."""

    def __init__(self, capsys: pytest.CaptureFixture) -> None:
        self.capsys = capsys

    def __call__(self, *args: str | Path | float) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `latent-scale *args`, run in this process."""
        return _run_cli([str(a) for a in args], self.capsys)

    def fails(self, *args: str | Path | float, says: Iterable[str] = ()) -> str:
        """Run, and assert a user error that says each of `says`; its stderr."""
        code, _, err = self(*args)
        return self.one_line_error(code, err, says)

    @staticmethod
    def one_line_error(code: int, err: str, says: Iterable[str] = (), exit_code: int = 2) -> str:
        """Exit `exit_code` and one sentence on stderr, no traceback: how every refusal looks."""
        assert code == exit_code, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        for needle in says:
            assert needle in err, err
        return err

    @staticmethod
    def argv(*args: str | Path | float) -> list[str]:
        """The command for a subprocess: `python -m latent_scale *args`."""
        return [sys.executable, "-m", "latent_scale", *map(str, args)]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Cli:
    return Cli(capsys)


def _measure(model: str | Path | None = None, data: str | Path | None = None, **options: Any) -> Any:
    """latent_scale.estimate with the tests' defaults: 32 px, no worker processes, no progress bar."""
    import latent_scale

    given = {key: str(value) for key, value in (("model", model), ("data", data)) if value is not None}
    return latent_scale.estimate(**given, **{"size": SIZE, "workers": 0, "progress": False, **options})


@pytest.fixture(scope="session")
def measure() -> Callable[..., Any]:
    """`measure(model, data, **options)`: a Result (a list of them for several sizes); a run of
    cached latents is `measure(latents=folder, ...)`."""
    return _measure


@pytest.fixture(scope="session")
def options() -> Callable[..., Any]:
    """`options(**fields)`: the context a source is opened with, at the tests' 32 px (`kind`: whose own
    options it carries; by default the source owning the fields given, else images)."""
    from latent_scale.options import make_options
    from latent_scale.sources import context_for

    def make(kind: str | None = None, channels: int | None = None, **fields: Any) -> Any:
        opts = make_options(**{"size": SIZE, **fields})
        owner = kind or next((k for k, own in opts.sources.items() if set(fields) & set(vars(own))), "images")
        return context_for(opts, owner, channels)

    return make


def _accumulate(source: Any, seed: int = 0, batch_size: int = 4) -> Any:
    """The loop as the pipeline runs it over `source`, with the source's own posterior in the encoder's
    place (a latent source), and without the model, the checkpoint or the result around it."""
    from latent_scale.loop import Accumulate
    from latent_scale.sources.base import order
    from latent_scale.sources.batches import loader
    from latent_scale.state import Run

    run = Run.empty(1)
    step = Accumulate(run, source, source.posterior, seed=seed, strict=False, edges=None, stochastic=source.moments)
    for batch in loader(source, order(len(source), seed), batch_size, 0, False):
        step(batch)
    return run


@pytest.fixture(scope="session")
def accumulate() -> Callable[..., Any]:
    """`accumulate(source, seed=0, batch_size=4)`: the Run (statistics, skipped units) of the loop over it."""
    return _accumulate


def _classic_pixels(images: Sequence[str | Path | Image.Image], size: int = SIZE) -> torch.Tensor:
    """The throw-away script's preprocessing, written apart from the tool's: resize the shorter side
    (bilinear, antialiased), centre crop, scale to [-1, 1]. Paths are opened as 8-bit RGB."""
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    opened = [im if isinstance(im, Image.Image) else Image.open(im).convert("RGB") for im in images]
    return torch.stack([tf(im) for im in opened])


@pytest.fixture(scope="session")
def classic_pixels() -> Callable[..., torch.Tensor]:
    """`classic_pixels(images, size=32)`: the naive reference's input batch (N, 3, size, size)."""
    return _classic_pixels


@pytest.fixture(scope="session")
def result_json(vae_dir: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                measure: Callable[..., Any]) -> Path:
    """A result file of the tiny VAE on the photographs (32 px)."""
    path = tmp_path_factory.mktemp("result") / "r.json"
    measure(vae_dir, photo_dir, output=str(path))
    return path


def _finishes(run: Callable[[], Any], timeout: float = 60) -> Any:
    done: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: done.update(r=run()), daemon=True)
    worker.start()
    worker.join(timeout=timeout)
    assert not worker.is_alive(), "the call blocked (a FIFO opened for reading?)"
    return done["r"]


@pytest.fixture(scope="session")
def finishes() -> Callable[..., Any]:
    """`finishes(fn)`: fn()'s answer, computed in a thread; fails instead of hanging when fn blocks."""
    return _finishes


def _write_wav(path: Path, rate: int, channels: int = 1, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A 16-bit WAV of a deterministic signal (three seeded tones plus seeded noise, about half of full
    scale) written with Python's `wave`; returns the samples written, (samples, channels) int16."""
    import wave

    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    freqs, phases = rng.uniform(50, rate / 8, 3), rng.uniform(0, 6, 3)
    tones = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(freqs, phases, strict=True))
    signal = tones[:, None] / 6 + 0.1 * rng.standard_normal((len(t), channels))
    samples = np.round(np.clip(signal, -1, 1) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return samples


@pytest.fixture(scope="session")
def write_wav() -> Callable[..., np.ndarray]:
    """`write_wav(path, rate, channels=1, seconds=1.0, seed=0)`: writes a WAV, returns its int16 samples."""
    return _write_wav
