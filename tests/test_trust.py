"""Numbers a user can trust: intervals that cover, early stopping, every normalisation, the distribution.

References are independent: numpy float64 on the raw latents, never the code's own output.

Coverage is tested twice, for different reasons:
- at the statistics level (LatentStats fed with synthetic per-image latents whose contrast and
  channel means vary between images, as real photographs do), because a coverage rate needs
  hundreds of subsets of a population far larger than any subset, which an encoder on CPU
  cannot afford in a unit test;
- end to end (a tiny VAE, real photographs, `--limit` with 60 seeds), as a smaller check that
  the plumbing (seeded subsets, the interval in the result, the finite-population correction
  from the data set's size) carries the property through.
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
from latent_scale.report import histogram_edges_for
from latent_scale.schema import build_result
from latent_scale.sources.base import order
from latent_scale.stats import Histogram, LatentStats, Moments, PosteriorStats, histogram_edges

Z95 = 1.959963984540054
SIZE = 32
Run = Callable[..., latent_scale.Result]


def synthetic_population(n: int, seed: int = 0) -> np.ndarray:
    """Per-image latents (n, 4, 8, 8): channel offsets vary by image (sd 0.6), contrast is
    log-normal (sd 0.35), noise is Student-t(5); elements within an image share both."""
    rng = np.random.default_rng(seed)
    offsets = np.array([0.8, -0.5, 0.3, 1.2])[None, :, None, None] + 0.6 * rng.standard_normal((n, 4, 1, 1))
    contrast = np.exp(0.35 * rng.standard_normal((n, 1, 1, 1)))
    return offsets + contrast * rng.standard_t(5, size=(n, 4, 8, 8)) * math.sqrt(3 / 5)


def subset_stats(z: np.ndarray) -> LatentStats:
    """Fed in chunks of 50 images into separate accumulators, then merged: as shards would."""
    parts = []
    for start in range(0, len(z), 50):
        part = LatentStats(z.shape[1])
        part.update(torch.from_numpy(z[start:start + 50]))
        parts.append(part)
    for p in parts[1:]:
        parts[0].merge(p)
    return parts[0]


def coverage_band(trials: int, p: float = 0.95) -> tuple[float, float]:
    """p ± 3.3 binomial standard deviations: a correct 95 % interval falls outside 1 time in 1000."""
    half = 3.3 * math.sqrt(p * (1 - p) / trials)
    return p - half, p + half


def test_interval_covers_full_data_value_and_is_not_too_wide() -> None:
    """500 random subsets of 100 images from 20 000: the 95 % interval covers the full-data factor
    about 95 % of the time; its width matches the real spread of the estimate (not merely wide);
    and an interval that treats latent elements as independent would fail badly."""
    population = synthetic_population(20_000)
    full = 1 / population.std(ddof=1)
    rng = np.random.default_rng(1)
    trials, n = 500, 100
    covered = naive_covered = 0
    factors, sds = [], []
    for _ in range(trials):
        z = population[rng.choice(len(population), n, replace=False)]
        s = subset_stats(z).summary()
        lo, hi = s["scale_factor_ci95"]
        covered += lo <= full <= hi
        f = 1 / z.std(ddof=1)
        naive_half = Z95 * f / math.sqrt(2 * z.size)  # normal theory, elements as the unit
        naive_covered += abs(f - full) <= naive_half
        factors.append(s["scale_factor"])
        sds.append((hi - lo) / 2 / Z95)
    lo_band, hi_band = coverage_band(trials)
    assert lo_band <= covered / trials <= hi_band, covered / trials
    assert np.std(factors, ddof=1) == pytest.approx(np.mean(sds), rel=0.15)
    assert naive_covered / trials < 0.5


def test_finite_population_correction_is_needed_for_large_subsets() -> None:
    """Half of a 300-image set: the plain interval (images as draws from an unlimited
    distribution) over-covers the full-data value; the corrected one covers ~95 %."""
    population = synthetic_population(300, seed=2)
    full = 1 / population.std(ddof=1)
    rng = np.random.default_rng(3)
    trials, n = 500, 150
    plain = corrected = 0
    for _ in range(trials):
        s = subset_stats(population[rng.choice(300, n, replace=False)]).summary(population=300)
        plain += s["scale_factor_ci95"][0] <= full <= s["scale_factor_ci95"][1]
        corrected += s["scale_factor_ci95_dataset"][0] <= full <= s["scale_factor_ci95_dataset"][1]
        ratio = np.diff(s["scale_factor_ci95_dataset"])[0] / np.diff(s["scale_factor_ci95"])[0]
        assert ratio == pytest.approx(math.sqrt((300 - n) / 299), rel=1e-9)
    lo_band, hi_band = coverage_band(trials)
    assert lo_band <= corrected / trials <= hi_band, corrected / trials
    assert plain / trials > 0.975, plain / trials
    full_pass = subset_stats(population).summary(population=300)
    assert full_pass["scale_factor_ci95_dataset"] == [full_pass["scale_factor"]] * 2


@pytest.fixture(scope="module")
def photos80(photo_set: Callable[..., Path]) -> Path:
    return photo_set(80, size=SIZE, seed=7)


@pytest.fixture
def run(measure: Run) -> Run:
    """This file's runs: the mode posterior, one full-data value per data set."""
    return functools.partial(measure, posterior="mode")


def test_end_to_end_limit_intervals_cover(vae_dir: Path, photos80: Path, run: Run) -> None:
    """60 seeds of --limit 40 out of 80 photographs (mode posterior: one full-data value)."""
    full = run(vae_dir, photos80).scale_factor
    dataset = plain = 0
    for seed in range(60):
        r = run(vae_dir, photos80, limit=40, seed=seed)
        assert r.num_images == 40 and r.recipe["dataset_size"] == 80
        dataset += r.scale_factor_ci95_dataset[0] <= full <= r.scale_factor_ci95_dataset[1]
        plain += r.scale_factor_ci95[0] <= full <= r.scale_factor_ci95[1]
    # P(at most 50 of 60 | p = 0.95) < 0.3 %; an interval with latent elements as the unit would
    # cover a small fraction. The plain interval ignores the finite data set, so is wider still.
    assert dataset >= 51 and plain >= dataset, (dataset, plain)


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

def numpy_shape(x: np.ndarray) -> tuple[float, float]:
    d = x - x.mean()
    pop = (d**2).mean()
    return (d**3).mean() / pop**1.5, (d**4).mean() / pop**2 - 3


def skewed_latents(seed: int = 0) -> list[torch.Tensor]:
    """Batches (B, 3, 4, 4): channel 0 skewed (gamma), 1 heavy-tailed, 2 with |mean| >> std."""
    g = np.random.default_rng(seed)
    out = []
    for b in (3, 1, 7, 4, 5):
        z = np.stack([g.gamma(2.0, size=(b, 4, 4)), g.standard_t(6, size=(b, 4, 4)),
                      1e4 + 1e-2 * g.standard_normal((b, 4, 4))], axis=1)
        out.append(torch.from_numpy(z))
    return out


def test_per_channel_and_global_skew_kurtosis_match_numpy_across_shards() -> None:
    batches = skewed_latents()
    a, b = LatentStats(3), LatentStats(3)
    for k, z in enumerate(batches):
        (a if k % 2 else b).update(z)
    a.merge(b)
    s = a.summary()
    allz = np.concatenate([z.numpy() for z in batches])
    per = allz.transpose(1, 0, 2, 3).reshape(3, -1)
    for c in range(3):
        skew, kurt = numpy_shape(per[c])
        assert s["per_channel"]["skew"][c] == pytest.approx(skew, rel=1e-6, abs=1e-9)
        assert s["per_channel"]["excess_kurtosis"][c] == pytest.approx(kurt, rel=1e-6, abs=1e-9)
        assert (s["per_channel"]["min"][c], s["per_channel"]["max"][c]) == (per[c].min(), per[c].max())
    skew, kurt = numpy_shape(allz.ravel())
    assert (s["skew"], s["excess_kurtosis"]) == (pytest.approx(skew, rel=1e-9), pytest.approx(kurt, rel=1e-9))


def test_affine_moments_are_exact() -> None:
    z = np.concatenate([t.numpy() for t in skewed_latents(1)])
    rows = torch.from_numpy(z.transpose(1, 0, 2, 3).reshape(3, -1).copy())
    shift, scale = torch.tensor([0.5, -1.0, 1e4]), torch.tensor([2.0, -0.5, 100.0])
    got = Moments.of(rows).affine(shift, scale).standardised()
    ref = (rows - shift[:, None]) * scale[:, None]
    for c in range(3):
        skew, kurt = numpy_shape(ref[c].numpy())
        assert float(got["mean"][c]) == pytest.approx(ref[c].mean().item(), rel=1e-9, abs=1e-9)
        assert float(got["std"][c]) == pytest.approx(ref[c].std().item(), rel=1e-9)
        assert float(got["skew"][c]) == pytest.approx(skew, rel=1e-6, abs=1e-9)
        assert float(got["excess_kurtosis"][c]) == pytest.approx(kurt, rel=1e-6, abs=1e-9)


def test_histogram_counts_match_numpy_and_merge_in_any_order() -> None:
    g = np.random.default_rng(5)
    z = g.standard_normal((40, 4, 6, 6)) * np.array([1.0, 3.0, 0.2, 40.0])[None, :, None, None]
    edges = histogram_edges(unit=1.0)
    whole = Histogram(edges, 4)
    whole.update(torch.from_numpy(z).reshape(40 * 4, -1))  # rows (image, channel)
    parts = [Histogram(edges, 4) for _ in range(3)]
    for k in g.permutation(40):
        parts[k % 3].update(torch.from_numpy(z[k]).reshape(4, -1))
    parts[2].merge(parts[0])
    parts[2].merge(parts[1])
    assert torch.equal(parts[2].counts, whole.counts)
    per = z.transpose(1, 0, 2, 3).reshape(4, -1)
    e = edges.numpy()
    for c in range(4):
        inner, _ = np.histogram(per[c], bins=e)
        assert whole.counts[c, 1:-1].tolist() == inner.tolist()
        assert whole.counts[c, 0] == (per[c] < e[0]).sum() and whole.counts[c, -1] == (per[c] >= e[-1]).sum()
    assert (per[3] >= e[-1]).sum() > 0  # the wide channel really exercises the overflow slot


def test_histogram_edges_come_from_the_config_not_the_data() -> None:
    sd = histogram_edges_for({"config_scaling_factor": 0.18215})
    assert torch.equal(sd, histogram_edges(1 / 0.18215))
    assert torch.equal(histogram_edges_for({"config_scaling_factor": 0.5, "config_latents_std": [2.0, 3.0]}),
                       histogram_edges(3.0))
    assert torch.equal(histogram_edges_for({}), histogram_edges(1.0))
    widths = torch.diff(sd) * 0.18215  # in config units: fine near 0, ~5 % at ±1, reaching ±64
    assert float(sd[-1]) * 0.18215 == pytest.approx(64.0) and float(widths.min()) < 0.02
    near_one = torch.searchsorted(sd, torch.tensor([1 / 0.18215], dtype=torch.float64))
    assert float(widths[near_one - 1]) < 0.06


def test_fraction_beyond_matches_numpy_within_a_bin() -> None:
    g = np.random.default_rng(6)
    z = g.standard_t(4, size=(30, 3, 8, 8)) + np.array([0.3, -0.2, 0.0])[None, :, None, None]
    st = LatentStats(3, histogram_edges(unit=1.0))
    st.update(torch.from_numpy(z))
    s = st.summary()
    f = s["scale_factor"]
    x = np.abs(z * f)
    edges = histogram_edges(1.0).numpy() * f
    counts, _ = np.histogram(z.ravel() * f, bins=edges)
    for k in (1, 3):
        exact = (x > k).mean()
        near = [np.searchsorted(edges, t) - 1 for t in (k, -k)]  # the bins holding ±k
        bound = sum(counts[i] for i in near) / z.size
        assert abs(s[f"beyond_{k}"] - exact) <= bound, (k, s[f"beyond_{k}"], exact)
    assert abs(s["beyond_1"] - (x > 1).mean()) < 0.003


def test_histogram_of_merged_shards_equals_one_run(vae_dir: Path, photos80: Path, run: Run) -> None:
    """Edges come from the model config, so shards bin identically and merge to the one-run counts."""
    kw = {"posterior": "sample", "limit": 30, "batch_size": 4}
    whole = run(vae_dir, photos80, **kw)
    merged = latent_scale.merge_results([run(vae_dir, photos80, shard=f"{i}/3", **kw) for i in (2, 0, 1)])
    for key in ("mode", "sample"):
        assert whole.state[key]["histogram"] == merged.state[key]["histogram"]
    assert merged.distribution == pytest.approx(whole.distribution, rel=1e-9)
    assert merged.scale_factor_ci95_dataset == pytest.approx(whole.scale_factor_ci95_dataset, rel=1e-9)


def test_state_without_histogram_still_loads_and_merges() -> None:
    """Results and checkpoints written before histograms existed stay usable."""
    z = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    new, old = LatentStats(2, histogram_edges(1.0)), LatentStats(2)
    new.update(z)
    old.update(z)
    legacy = LatentStats.from_dict(old.to_dict())
    assert legacy.histogram is None and legacy.summary()["beyond_1"] is None
    new.merge(legacy)
    assert new.histogram is None and new.summary()["num_images"] == 8


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
