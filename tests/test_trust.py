"""Numbers a user can trust, where only the whole pipeline shows them: the seeded subset of --limit and
its intervals, early stopping, histograms of shards, and the normalisations a result prints.

References are independent: numpy float64 on the raw latents, never the code's own output. That the
intervals cover ~95 % needs hundreds of subsets of a large population, which an encoder on CPU cannot
afford in a unit test: test_stats checks it on the statistics, and this file checks the plumbing
(seeded subsets, the interval in the result, the finite-population correction from the data set's size).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

import latent_scale
from latent_scale.conventions import config_normalisation
from latent_scale.schema import build_result
from latent_scale.sources.base import order
from latent_scale.stats import PosteriorStats, histogram_edges

Z95 = 1.959963984540054
SIZE = 32
Run = Callable[..., latent_scale.Result]


@pytest.fixture(scope="module")
def photos80(photo_set: Callable[..., Path]) -> Path:
    return photo_set(80, size=SIZE, seed=7)


@pytest.fixture
def run(measure: Run) -> Run:
    """This file's runs: the mode posterior, one full-data value per data set."""
    return functools.partial(measure, posterior="mode")


def test_limit_measures_a_seeded_subset_with_both_intervals(vae_dir: Path, photos80: Path, run: Run,
                                                            classic_pixels: Callable[..., torch.Tensor]) -> None:
    """--limit 40 of 80 photographs under two seeds: each result is the numpy delta method on the latents of
    its seeded subset, and its interval for the full-data value carries the finite-population correction
    from the data set's size. (That such intervals cover ~95 % is tested on the statistics, in test_stats.)"""
    latents = naive_mode_latents(vae_dir, classic_pixels(sorted(photos80.rglob("*.png")), SIZE))
    factors = []
    for seed in (0, 1):
        r = run(vae_dir, photos80, limit=40, seed=seed)
        assert r.num_images == 40 and r.recipe["dataset_size"] == 80
        f, half = numpy_half_width(latents[order(80, seed)[:40]])
        assert r.scale_factor == pytest.approx(f, rel=1e-6)
        assert np.diff(r.scale_factor_ci95)[0] / 2 == pytest.approx(half, rel=1e-6)
        assert np.diff(r.scale_factor_ci95_dataset)[0] / 2 == pytest.approx(half * math.sqrt(40 / 79), rel=1e-6)
        factors.append(r.scale_factor)
    assert factors[0] != factors[1]  # the seed picks another subset


# --- --rel-tol --------------------------------------------------------------------------------------

def naive_mode_latents(vae_dir: Path, x: torch.Tensor) -> np.ndarray:
    """Every image's posterior mean by a plain script, all in one encode (float64 copy)."""
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    with torch.no_grad():
        return vae.encode(x).latent_dist.mean.double().numpy()


def numpy_half_width(z: np.ndarray) -> tuple[float, float]:
    """(factor, 95 % half-width) by the delta method on per-image moments, written independently."""
    a = z.reshape(len(z), -1).mean(1)
    c = (z.reshape(len(z), -1) ** 2).mean(1)
    var = c.mean() - a.mean() ** 2
    grad = np.array([a.mean() * var**-1.5, -0.5 * var**-1.5])
    sd = math.sqrt(grad @ np.cov(np.stack([a, c]), ddof=1) @ grad / len(z))
    return 1 / z.std(ddof=1), Z95 * sd


@pytest.fixture(scope="module")
def photos160(photo_set: Callable[..., Path]) -> Path:
    return photo_set(160, size=SIZE, seed=11)


def test_rel_tol_stops_at_the_first_batch_that_meets_it(vae_dir: Path, photos160: Path, run: Run,
                                                        classic_pixels: Callable[..., torch.Tensor]) -> None:
    latents = naive_mode_latents(vae_dir, classic_pixels(sorted(photos160.rglob("*.png")), SIZE))
    n_all = len(latents)
    full = run(vae_dir, photos160)
    f_all, half_all = numpy_half_width(latents)
    assert full.scale_factor == pytest.approx(f_all, rel=1e-6)
    # a tolerance this data meets a little before the end (half-width ~ 1/sqrt(n)), well past 50
    tol = 1.1 * half_all / f_all
    batch = 8
    r = run(vae_dir, photos160, rel_tol=tol, batch_size=batch)
    k = r.num_images
    assert r.run["stopped_early"] and f"after {k} images" in r.run["stop_reason"]
    assert 50 <= k < n_all and k % batch == 0
    used = latents[order(n_all, 0)[:k]]
    f_k, half_k = numpy_half_width(used)
    assert r.scale_factor == pytest.approx(f_k, rel=1e-6)
    assert half_k < tol * f_k  # the stopping point satisfies the criterion ...
    assert k - batch >= 50  # ... and the batch before it, past the minimum, did not
    f_prev, half_prev = numpy_half_width(latents[order(n_all, 0)[:k - batch]])
    assert half_prev >= tol * f_prev
    lo, hi = r.scale_factor_ci95
    assert lo <= full.scale_factor <= hi
    assert (hi - lo) / 2 == pytest.approx(half_k, rel=1e-6)


def test_rel_tol_never_stops_before_min_images(vae_dir: Path, photos160: Path, run: Run) -> None:
    r = run(vae_dir, photos160, rel_tol=0.5, batch_size=8)
    assert r.run["stopped_early"] and r.num_images == 56  # the first batch boundary at or past 50
    r = run(vae_dir, photos160, rel_tol=0.5, batch_size=8, min_images=100)
    assert r.num_images == 104
    assert not run(vae_dir, photos160, limit=20, rel_tol=0.5).run["stopped_early"]


# --- distribution: moments, histogram, tails --------------------------------------------------------

def test_histogram_of_merged_shards_equals_one_run(vae_dir: Path, photos80: Path, run: Run) -> None:
    """Edges come from the model config, so shards bin identically and merge to the one-run counts
    (each image encoded alone, so that every split gives the same latents bit for bit)."""
    kw = {"posterior": "sample", "limit": 30, "batch_size": 4, "chunk_size": "1"}
    whole = run(vae_dir, photos80, **kw)
    merged = latent_scale.merge_results([run(vae_dir, photos80, shard=f"{i}/3", **kw) for i in (2, 0, 1)])
    for key in ("mode", "sample"):
        assert whole.state[key]["histogram"] == merged.state[key]["histogram"]
    assert merged.distribution == pytest.approx(whole.distribution, rel=1e-9)
    assert merged.scale_factor_ci95_dataset == pytest.approx(whole.scale_factor_ci95_dataset, rel=1e-9)


# --- normalisation conventions ----------------------------------------------------------------------

MODEL = {"source": "local/tiny", "class": "AutoencoderKL", "config_scaling_factor": None,
         "config_shift_factor": None, "config_latents_mean": None, "config_latents_std": None}


@pytest.fixture(scope="module")
def posterior() -> dict[str, np.ndarray]:
    g = np.random.default_rng(8)
    shape = (24, 4, 5, 5)
    mu = g.standard_normal(shape) * np.array([1.0, 2.5, 0.7, 4.0])[None, :, None, None] \
        + np.array([0.5, -1.0, 2.0, 0.0])[None, :, None, None] + 0.3 * g.standard_normal((24, 4, 1, 1))
    sigma = g.uniform(0.1, 0.6, shape)
    eps = g.standard_normal(shape)
    return {"mu": mu, "sigma": sigma, "eps": eps, "sample": mu + sigma * eps}


def result_for(posterior: dict[str, np.ndarray], key: str, **config) -> latent_scale.Result:
    stats = PosteriorStats(4, stochastic=True, edges=histogram_edges(1.0))
    for part in np.array_split(np.arange(24), 3):
        stats.update(*(torch.from_numpy(posterior[k][part]) for k in ("mu", "sigma", "eps")))
    return build_result(stats, {**MODEL, **config}, {"data": "x", "dataset_size": 24}, [], key, {}, [4, 5, 5])


def apply_snippet(z: np.ndarray, convention: str, values: dict) -> np.ndarray:
    """What a diffusers pipeline does with the config keys (see report.CONVENTIONS)."""
    view = (1, -1, 1, 1)
    if convention == "per_channel":
        mean, std = (np.array(values[k]).reshape(view) for k in ("latents_mean", "latents_std"))
        return (z - mean) * values["scaling_factor"] / std
    return (z - values.get("shift_factor", 0.0)) * values["scaling_factor"]


@pytest.mark.parametrize("key", ["mode", "sample"])
def test_every_snippet_normalises_the_latents(posterior: dict, key: str) -> None:
    """Feeding the raw latents through each printed snippet gives what the convention promises."""
    z = posterior["mu" if key == "mode" else "sample"]
    r = result_for(posterior, key)
    snippets = r["normalisations"]
    assert set(snippets) == {"scale", "shift", "per_channel", "rms"}
    tol = dict(rel=2e-5)
    assert apply_snippet(z, "scale", snippets["scale"]).std(ddof=1) == pytest.approx(1, **tol)
    shifted = apply_snippet(z, "shift", snippets["shift"])
    assert (shifted.std(ddof=1), shifted.mean()) == (pytest.approx(1, **tol), pytest.approx(0, abs=1e-5))
    per = apply_snippet(z, "per_channel", snippets["per_channel"]).transpose(1, 0, 2, 3).reshape(4, -1)
    np.testing.assert_allclose(per.std(1, ddof=1), 1, rtol=2e-5)
    np.testing.assert_allclose(per.mean(1), 0, atol=2e-5)
    assert np.sqrt((apply_snippet(z, "rms", snippets["rms"]) ** 2).mean()) == pytest.approx(1, **tol)


CONFIGS = {
    "scale": {"config_scaling_factor": 0.4},
    "shift": {"config_scaling_factor": 0.4, "config_shift_factor": 0.25},
    "per_channel": {"config_scaling_factor": 0.5, "config_latents_mean": [0.4, -0.8, 1.9, 0.2],
                    "config_latents_std": [1.1, 2.4, 0.8, 3.5]},
    "per_channel_no_factor": {"config_latents_mean": [0.4, -0.8, 1.9, 0.2],
                              "config_latents_std": [1.1, 2.4, 0.8, 3.5]},
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("key", ["mode", "sample", "expected_sample"])
def test_std_after_the_models_own_normalisation(posterior: dict, name: str, key: str) -> None:
    cfg = CONFIGS[name]
    r = result_for(posterior, key, **cfg)
    got = r["config_normalised"]
    assert got["convention"] == name.removesuffix("_no_factor")
    view = (1, -1, 1, 1)
    factor = cfg.get("config_scaling_factor") or 1.0
    if "config_latents_mean" in cfg:
        shift = np.array(cfg["config_latents_mean"]).reshape(view)
        scale = factor / np.array(cfg["config_latents_std"]).reshape(view)
    else:
        shift, scale = cfg.get("config_shift_factor", 0.0), factor
    if key == "expected_sample":  # E over ε of the ddof=1 variance of (mu + sigma ε - shift) * scale
        y = (posterior["mu"] - shift) * scale
        n = y.size
        var = y.var(ddof=1) + (scale**2 * posterior["sigma"] ** 2).sum() / n
        ref_mean, ref_std = y.mean(), math.sqrt(var)
    else:
        y = ((posterior["mu"] if key == "mode" else posterior["sample"]) - shift) * scale
        ref_mean, ref_std = y.mean(), y.std(ddof=1)
    assert got["std"] == pytest.approx(ref_std, rel=1e-9)
    assert got["mean"] == pytest.approx(ref_mean, rel=1e-9, abs=1e-12)
    assert got["rms"] == pytest.approx(math.sqrt(ref_std**2 * (y.size - 1) / y.size + ref_mean**2), rel=1e-9)


def test_no_config_values_no_config_normalisation(posterior: dict) -> None:
    assert result_for(posterior, "mode")["config_normalised"] is None
    assert config_normalisation({"config_latents_mean": [0.0] * 3, "config_latents_std": [1.0] * 3}, 4) is None


def test_expected_sample_per_channel_std_is_exact_in_expectation(posterior: dict) -> None:
    r = result_for(posterior, "expected_sample")
    mu = posterior["mu"].transpose(1, 0, 2, 3).reshape(4, -1)
    s2 = (posterior["sigma"] ** 2).transpose(1, 0, 2, 3).reshape(4, -1)
    np.testing.assert_allclose(r.per_channel["std"], np.sqrt(mu.var(1, ddof=1) + s2.mean(1)), rtol=1e-12)
    assert r.rms == pytest.approx(math.sqrt(r.std**2 * (mu.size - 1) / mu.size + r.mean**2), rel=1e-12)
