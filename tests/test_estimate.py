"""End to end: the streaming estimate equals the naive keep-every-latent float64 script."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

import latent_scale
from latent_scale import models

SIZE = 48


def naive_latents(vae_dir: Path, x: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The throw-away script: encode one by one, keep everything.

    `x` holds the preprocessed images in sorted-path order. Noise follows the documented rule:
    image i draws ε from torch.Generator().manual_seed(seed * 1_000_003 + i).
    """
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    mus, sigmas, samples = [], [], []
    with torch.no_grad():
        for i in range(len(x)):
            dist = vae.encode(x[i:i + 1]).latent_dist
            eps = torch.randn(dist.mean.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
            mus.append(dist.mean.double())
            sigmas.append(dist.std.double())
            samples.append(dist.mean.double() + dist.std.double() * eps.double())
    return {"mode": torch.cat(mus), "sigma": torch.cat(sigmas), "sample": torch.cat(samples)}


@pytest.fixture(scope="module")
def reference(vae_dir: Path, photo_dir: Path, classic_pixels: Callable[..., torch.Tensor]) -> dict[str, torch.Tensor]:
    return naive_latents(vae_dir, classic_pixels(sorted(photo_dir.rglob("*.png")), SIZE))


Run = Callable[..., latent_scale.Result]


@pytest.fixture
def run(measure: Run) -> Run:
    """This file's runs: 48 px."""
    return functools.partial(measure, size=SIZE)


def test_matches_naive_float64_reference(vae_dir: Path, photo_dir: Path, reference: dict, run: Run) -> None:
    r = run(vae_dir, photo_dir, batch_size=5)
    mode, sample = reference["mode"], reference["sample"]
    assert r.num_images == len(mode) == 24
    assert r.latent_shape == list(mode.shape[1:])
    assert r.num_elements == mode.numel()
    assert r.scale_factor == pytest.approx(1 / sample.std().item(), rel=1e-6)
    assert r.mean == pytest.approx(sample.mean().item(), rel=1e-6)
    assert r.estimates["mode"]["scale_factor"] == pytest.approx(1 / mode.std().item(), rel=1e-6)
    assert r.estimates["mode"]["mean"] == pytest.approx(mode.mean().item(), rel=1e-6)
    per = sample.transpose(0, 1).reshape(sample.shape[1], -1)
    np.testing.assert_allclose(r.per_channel["std"], per.std(1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(r.per_channel["mean"], per.mean(1).numpy(), rtol=1e-6)
    expected_var = mode.var().item() + reference["sigma"].pow(2).mean().item()
    assert r.estimates["expected_sample"]["std"] == pytest.approx(expected_var**0.5, rel=1e-6)
    lo, hi = r.scale_factor_ci95
    assert lo < r.scale_factor < hi
    assert r.recipe["preprocess"] == "classic-v1" and r.recipe["size"] == SIZE
    assert r.model["config_scaling_factor"] == 0.5 and r.model["class"] == "AutoencoderKL"


@pytest.mark.parametrize("kw", [{"batch_size": 1}, {"batch_size": 7, "chunk_size": "3"},
                                {"batch_size": 7, "workers": 2}])
def test_invariant_to_batch_chunk_and_workers(vae_dir: Path, photo_dir: Path, reference: dict, kw: dict,
                                              run: Run) -> None:
    r = run(vae_dir, photo_dir, **kw)
    assert r.num_images == 24
    assert r.estimates["sample"]["scale_factor"] == pytest.approx(1 / reference["sample"].std().item(), rel=1e-6)
    assert r.estimates["mode"]["scale_factor"] == pytest.approx(1 / reference["mode"].std().item(), rel=1e-6)


def test_limit_takes_a_seeded_random_prefix(vae_dir: Path, photo_dir: Path, reference: dict, run: Run) -> None:
    """--limit N uses the first N of torch.randperm(len, seed): different seeds, different samples."""
    n = len(reference["mode"])
    results = {}
    for seed in (0, 1):
        chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:9]
        r = run(vae_dir, photo_dir, limit=9, seed=seed, posterior="mode")
        assert r.num_images == 9
        assert r.scale_factor == pytest.approx(1 / reference["mode"][chosen].std().item(), rel=1e-6)
        results[seed] = r.scale_factor
    assert results[0] != results[1]


def test_posterior_choice_sets_the_headline(vae_dir: Path, photo_dir: Path, reference: dict, run: Run) -> None:
    r = run(vae_dir, photo_dir, posterior="expected_sample", limit=8)
    assert r.scale_factor == r.estimates["expected_sample"]["scale_factor"]
    assert r.recipe["posterior"] == "expected_sample"


def test_txt_list_and_config_preset(vae_dir: Path, photo_dir: Path, reference: dict, tmp_path: Path) -> None:
    paths = sorted(photo_dir.rglob("*.png"))
    listing = tmp_path / "list.txt"
    listing.write_text("# photos\n" + "\n".join(str(p) for p in paths[:10]) + "\n")
    preset = tmp_path / "preset.toml"
    preset.write_text(f'model = "{vae_dir}"\nsize = 16\nposterior = "mode"\n')
    r = latent_scale.estimate(data=str(listing), config=str(preset), size=SIZE, workers=0, progress=False)
    assert r.num_images == 10
    assert r.recipe["size"] == SIZE  # the keyword overrides the preset
    assert r.scale_factor == pytest.approx(1 / reference["mode"][:10].std().item(), rel=1e-6)


def test_output_json_is_written_and_complete(vae_dir: Path, photo_dir: Path, tmp_path: Path, run: Run) -> None:
    import json

    out = tmp_path / "res" / "r.json"
    r = run(vae_dir, photo_dir, limit=4, output=str(out))
    saved = json.loads(out.read_text())
    assert saved["schema"] == 1 and saved["scale_factor"] == r.scale_factor
    for key in ("scale_factor_ci95", "std", "mean", "rms", "shift_factor", "num_images", "num_elements",
                "per_channel", "estimates", "skipped", "model", "recipe", "references", "versions", "state"):
        assert key in saved
    assert saved["references"] == {"sd1": 0.18215, "sdxl": 0.13025}
    assert not list(out.parent.glob("*.tmp"))


def test_no_crop_keeps_the_aspect_ratio(vae_dir: Path, tmp_path: Path, run: Run) -> None:
    """--no-crop: resize the shorter side, trim each side to a multiple of 32, pool unequal images."""
    from skimage import data
    from torchvision.transforms import functional as F

    sources = {"wide.png": data.astronaut()[:180], "tall.png": data.coffee()[:, :200], "square.png": data.rocket()}
    for name, arr in sources.items():
        Image.fromarray(arr).save(tmp_path / name)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    rows = []
    with torch.no_grad():
        for name in sorted(sources):
            img = F.resize(Image.open(tmp_path / name).convert("RGB"), SIZE, antialias=True)
            w, h = img.size
            x = F.normalize(F.to_tensor(F.center_crop(img, [h // 32 * 32, w // 32 * 32])), [0.5] * 3, [0.5] * 3)
            mu = vae.encode(x[None]).latent_dist.mean.double()
            rows.append(mu[0].reshape(mu.shape[1], -1))
    ref = torch.cat(rows, dim=1)
    r = run(vae_dir, tmp_path, crop=False, posterior="mode", batch_size=4)
    assert r.num_images == 3 and r.num_elements == ref.numel()
    assert len({row.shape[1] for row in rows}) == 3  # really three different latent sizes
    assert r.scale_factor == pytest.approx(1 / ref.std().item(), rel=1e-6)
    assert r.mean == pytest.approx(ref.mean().item(), rel=1e-6)
    np.testing.assert_allclose(r.per_channel["std"], ref.std(1).numpy(), rtol=1e-6)
    assert r.recipe["crop"] is False and r.latent_shape == [ref.shape[0]]


def test_speed_is_reported_from_counted_flops(vae_dir: Path, photo_dir: Path, run: Run) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.encode(torch.zeros(1, 3, SIZE, SIZE))
    r = run(vae_dir, photo_dir, limit=6)
    assert r.run["encoder_gflop_per_image"] == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-9)
    assert r.run["achieved_tflops"] == pytest.approx(
        r.run["encoder_gflop_per_image"] * r.run["images_per_s"] / 1e3, rel=1e-9)
    assert r.run["fraction_of_peak"] == pytest.approx(r.run["achieved_tflops"] / 1.0, rel=1e-12)  # conftest's peak


def test_a_sweep_counts_the_encoders_work_at_every_size(vae_dir: Path, photo_dir: Path, run: Run) -> None:
    """Each unit is encoded at 32 and 48 px: the run's GFLOP per image is the sum of both sizes' (every
    result of the sweep said the first size's alone)."""
    from torch.utils.flop_counter import FlopCounterMode

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    flops = 0
    for side in (32, 48):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            vae.encode(torch.zeros(1, 3, side, side))
        flops += counter.get_total_flops()
    for r in run(vae_dir, photo_dir, limit=6, size="32,48"):
        assert r.run["encoder_gflop_per_image"] == pytest.approx(flops / 1e9, rel=1e-9)


def test_each_size_of_a_sweep_gets_its_own_cpu_chunk(vae_dir: Path, largest_tensor: Callable[[int], int]) -> None:
    """Chunks sized to a cache of 3 images' largest tensors at 32 px: 3 images at 32 px, 1 at 48 px
    (1.36 of them); each shape's first image is encoded alone, then its chunk."""
    from latent_scale.encode import ChunkedEncoder

    encoder = models.load_model(str(vae_dir), device="cpu", dtype="float32")
    chunked = ChunkedEncoder(encoder, lambda: encoder, 8, auto=True, count_flops=False, compile=False,
                             cache_budget=3 * largest_tensor(32))
    for side in (32, 48):
        x = torch.rand(7, 3, side, side) * 2 - 1
        mean, _ = chunked(x)
        torch.testing.assert_close(mean, torch.cat([encoder.posterior(u)[0] for u in x.split(1)]))
    assert chunked.chunks == {(3, 32, 32): 3, (3, 48, 48): 1} and chunked.chunk_size == 3


def test_one_unit_batches_of_varying_shapes_are_not_watched(vae_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images of varying sizes come one per batch: no chunk to size, so no unit pays for the watching
    dispatch mode (about 10 % of a small image's encode); a batch of several units is watched once."""
    from latent_scale.encode import ChunkedEncoder
    from latent_scale.models import Encoder

    watched = []
    real = Encoder.measured
    monkeypatch.setattr(Encoder, "measured", lambda self, x, flops: watched.append(len(x)) or real(self, x, flops))
    encoder = models.load_model(str(vae_dir), device="cpu", dtype="float32")
    chunked = ChunkedEncoder(encoder, lambda: encoder, 8, auto=True, count_flops=False, compile=False,
                             cache_budget=1 << 24)
    for side in (32, 40, 48):
        chunked(torch.zeros(1, 3, side, side))
    assert watched == []
    chunked(torch.zeros(4, 3, 56, 56))
    assert watched == [1] and chunked.chunks[(3, 56, 56)] == 8  # the cache holds more than the default chunk


@pytest.mark.slow
def test_compile_gives_the_eager_result(vae_dir: Path, photo_dir: Path, reference: dict, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
    """--compile (inductor's C++ backend on CPU, about 20 s): same numbers, first chunk eager for FLOPs."""
    import tempfile

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # inductor's precompiled headers go there
    r = run(vae_dir, photo_dir, compile=True, posterior="mode", batch_size=8)
    assert r.run["compile"] and r.run["encoder_gflop_per_image"] > 0
    assert r.scale_factor == pytest.approx(1 / reference["mode"].std().item(), rel=1e-6)
