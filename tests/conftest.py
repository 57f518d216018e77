"""Shared fixtures: tiny autoencoders built from configs, real photographs from skimage.

Nothing here touches the network or writes outside tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "brick", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never reach the hub and never write into the user's caches.

    The environment is for subprocesses; huggingface_hub read it at import, so patch its constants too.
    """
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))


def tiny_kl(latent_channels: int = 4, seed: int = 0):
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
def vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vae")
    tiny_kl().save_pretrained(path)
    return path


def write_photos(folder: Path, count: int, size: int = 96, seed: int = 0) -> list[Path]:
    """`count` real photographs (random crops of skimage's data), in class sub-folders."""
    from skimage import data

    rng = np.random.default_rng(seed)
    images = [getattr(data, name)() for name in PHOTOS]
    out = []
    for k in range(count):
        img = images[k % len(images)]
        h, w = img.shape[:2]
        s = int(rng.integers(size, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = Image.fromarray(img[y:y + s, x:x + s]).convert("RGB").resize((size, size), Image.BILINEAR)
        path = folder / f"class{k % 3}" / f"img{k:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path)
        out.append(path)
    return out


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 real photographs, 96 px, in three class folders."""
    path = tmp_path_factory.mktemp("photos")
    write_photos(path, 24)
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run the command line in-process: (exit code, stdout, stderr)."""
    from latent_scale.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture(scope="session")
def result_json(vae_dir: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A result file of the tiny VAE on the photographs (32 px)."""
    import latent_scale

    path = tmp_path_factory.mktemp("result") / "r.json"
    latent_scale.estimate(str(vae_dir), str(photo_dir), size=32, workers=0, progress=False, output=str(path))
    return path
