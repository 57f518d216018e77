"""The statistics against numpy's two-pass float64 results, on adversarial inputs and splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latent_scale.stats import (
    Z95,
    Histogram,
    LatentStats,
    Moments,
    PosteriorStats,
    UnitMoments,
    histogram_edges,
    histogram_edges_for,
)


def _numpy_moments(x: np.ndarray) -> dict[str, float]:
    """Two-pass float64 reference: mean, ddof=1 std, skew, excess kurtosis."""
    m = x.mean()
    d = x - m
    pop = (d**2).mean()
    return {"mean": m, "std": x.std(ddof=1), "skew": (d**3).mean() / pop**1.5,
            "excess_kurtosis": (d**4).mean() / pop**2 - 3}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moments_merge_any_split_and_order_matches_numpy(seed: int) -> None:
    """Mean 1e6, std 1e-3: raw power sums would lose every digit; Pébay merges must not."""
    rng = np.random.default_rng(seed)
    x = 1e6 + 1e-3 * rng.gamma(2.0, size=5000)  # skewed, so M3/M4 are non-trivial
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=20, replace=False))
    parts = [Moments.of(torch.from_numpy(p)[None]) for p in np.split(x, cuts)]
    rng.shuffle(parts)
    acc = Moments.empty((1,))
    for p in parts:
        acc = acc.merge(p) if rng.random() < 0.5 else p.merge(acc)
    got = acc.total().summary()
    ref = _numpy_moments(x)
    assert got["mean"] == pytest.approx(ref["mean"], rel=1e-15)
    assert got["std"] == pytest.approx(ref["std"], rel=1e-6)
    assert got["skew"] == pytest.approx(ref["skew"], rel=1e-4)
    assert got["excess_kurtosis"] == pytest.approx(ref["excess_kurtosis"], rel=1e-4)


def test_latent_stats_channels_and_global_match_naive_cat() -> None:
    """Batches of (B, C, h, w) with a huge offset in one channel; merged from two shards."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(b, 3, 5, 4, generator=g) * torch.tensor([1.0, 3.0, 1e-3])[:, None, None]
               + torch.tensor([0.0, -2.0, 1e4])[:, None, None] for b in (1, 4, 2, 7, 3)]
    a, b = LatentStats(3), LatentStats(3)
    for k, z in enumerate(batches):
        (a if k % 2 else b).update(z)
    b.merge(a)
    s = b.summary()
    allz = torch.cat([batches[k] for k in (0, 2, 4, 1, 3)]).double()
    assert s["std"] == pytest.approx(allz.std().item(), rel=1e-9)
    assert s["mean"] == pytest.approx(allz.mean().item(), rel=1e-12)
    assert s["scale_factor"] == pytest.approx(1 / allz.std().item(), rel=1e-9)
    per = allz.transpose(0, 1).reshape(3, -1)
    np.testing.assert_allclose(s["per_channel"]["std"], per.std(1).numpy(), rtol=1e-9)
    np.testing.assert_allclose(s["per_channel"]["mean"], per.mean(1).numpy(), rtol=1e-12)
    assert s["rms"] == pytest.approx(allz.pow(2).mean().sqrt().item(), rel=1e-9)
    assert (s["min"], s["max"]) == (allz.min().item(), allz.max().item())
    assert s["units"] == 17 and s["elements"] == 17 * 3 * 20


@pytest.mark.parametrize("trailing", [(), (50,), (6, 5), (3, 4, 4)], ids=["tokens", "audio", "image", "video"])
def test_any_trailing_shape_matches_numpy(trailing: tuple[int, ...]) -> None:
    """Latents (B, C, ...) with 0 to 3 trailing dimensions (one value per channel, audio, image, video), in
    uneven batches: per-channel moments, extremes and histogram counts against plain numpy, the interval
    against the delta method on per-unit moments, the global std against the concatenated latents."""
    g = np.random.default_rng(len(trailing))
    z = g.standard_t(5, size=(19, 3, *trailing)) * np.array([1.0, 4.0, 0.1]).reshape(1, 3, *[1] * len(trailing))
    z += g.normal(0, 0.5, size=(19, 3, *[1] * len(trailing))) + 2.0
    edges = histogram_edges(2.0)
    st = LatentStats(3, edges)
    for part in np.array_split(np.arange(19), 4):
        st.update(torch.from_numpy(z[part]))
    want = _plain(z, edges.numpy())
    for field, w in zip(("n", "mean", "m2", "m3", "m4"), want[:5], strict=True):
        np.testing.assert_allclose(getattr(st.moments, field).numpy(), w, rtol=1e-12, atol=1e-12 * np.abs(w).max())
    assert (st.min.tolist(), st.max.tolist()) == (want[5].tolist(), want[6].tolist())
    assert st.histogram.counts.tolist() == want[7].tolist()
    s = st.summary()
    assert s["std"] == pytest.approx(z.std(ddof=1), rel=1e-12)
    lo, hi = s["ci95"]
    assert (hi - lo) / 2 == pytest.approx(Z95 * _delta_method_reference(list(z)), rel=1e-9)
    assert s["units"] == 19 and s["elements"] == z.size


def _delta_method_reference(images: list[np.ndarray]) -> float:
    """Independent numpy delta method, with plain (uncentred) per-image moments."""
    a = np.array([im.mean() for im in images])
    c = np.array([(im**2).mean() for im in images])
    n = len(images)
    var = c.mean() - a.mean() ** 2
    grad = np.array([a.mean() * var**-1.5, -0.5 * var**-1.5])
    sigma = np.cov(np.stack([a, c]), ddof=1)
    return float(np.sqrt(grad @ sigma @ grad / n))


def test_interval_matches_independent_delta_method_and_survives_rebasing() -> None:
    rng = np.random.default_rng(3)
    images = [rng.normal(rng.normal(0.5, 0.3), rng.uniform(0.5, 2.0), size=(2, 4, 4)) for _ in range(40)]
    parts = [LatentStats(2) for _ in range(3)]
    for k, im in enumerate(images):  # each part gets its own reference (its first batch's mean)
        parts[k % 3].update(torch.from_numpy(im)[None] + 0.0)
    merged = UnitMoments()
    for p in parts[::-1]:
        merged.merge(p.units)
    assert merged.n == 40
    assert merged.factor_sd() == pytest.approx(_delta_method_reference(images), rel=1e-9)
    st = LatentStats(2)
    for im in images:
        st.update(torch.from_numpy(im)[None])
    lo, hi = st.summary()["ci95"]
    assert (hi - lo) / 2 == pytest.approx(Z95 * _delta_method_reference(images), rel=1e-9)


def test_expected_sample_is_var_mu_plus_mean_sigma2() -> None:
    g = torch.Generator().manual_seed(4)
    mu = torch.randn(9, 4, 3, 3, generator=g) * 2 + 1
    sigma = torch.rand(9, 4, 3, 3, generator=g) + 0.1
    eps = torch.randn(9, 4, 3, 3, generator=g)
    ps = PosteriorStats(4, stochastic=True)
    ps.update(mu[:4], sigma[:4], eps[:4])
    rest = PosteriorStats(4, stochastic=True)
    rest.update(mu[4:], sigma[4:], eps[4:])
    ps.merge(rest)
    exp = ps.estimates()["expected_sample"]
    ref_var = mu.double().var().item() + sigma.double().pow(2).mean().item()
    assert exp["std"] == pytest.approx(ref_var**0.5, rel=1e-12)
    assert exp["mean"] == pytest.approx(mu.double().mean().item(), rel=1e-12)
    sample = (mu.double() + sigma.double() * eps.double())
    assert ps.estimates()["sample"]["std"] == pytest.approx(sample.std().item(), rel=1e-12)


def test_state_round_trips_through_plain_data() -> None:
    import json

    g = torch.Generator().manual_seed(5)
    ps = PosteriorStats(4, stochastic=True)
    ps.update(torch.randn(3, 4, 2, 2, generator=g), torch.rand(3, 4, 2, 2, generator=g),
              torch.randn(3, 4, 2, 2, generator=g))
    back = PosteriorStats.from_dict(json.loads(json.dumps(ps.to_dict())))
    assert back.estimates() == ps.estimates()


def test_merge_refuses_mismatched_channels_and_histograms() -> None:
    with pytest.raises(ValueError, match="channel"):
        LatentStats(4).merge(LatentStats(16))
    with pytest.raises(ValueError, match="histogram"):
        LatentStats(4, histogram_edges(1.0)).merge(LatentStats(4))
    with pytest.raises(ValueError, match="bin edges"):
        LatentStats(4, histogram_edges(1.0)).merge(LatentStats(4, histogram_edges(2.0)))


# --- the optimised update against plain numpy float64 --------------------------------------------------------

def _plain(z: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per channel, in float64 numpy: count, mean, M2, M3, M4, min, max, and counts per slot (slot k:
    edges[k-1] <= x < edges[k], as bucketize(right=True) numbers them)."""
    x = z.astype(np.float64).transpose(1, 0, *range(2, z.ndim)).reshape(z.shape[1], -1)
    d = x - x.mean(1, keepdims=True)
    slots = np.searchsorted(edges, x, side="right")
    counts = np.stack([np.bincount(s, minlength=len(edges) + 1) for s in slots])
    return (np.full(len(x), x.shape[1]), x.mean(1), (d**2).sum(1), (d**3).sum(1), (d**4).sum(1),
            x.min(1), x.max(1), counts)


def _layouts(batch: int, dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(μ, σ) as encoders hand them over: contiguous, channels_last, and diffusers' chunk of a channels_last
    output (strided, not dense); values on the histogram's edges and exact zeros of both signs included."""
    g = torch.Generator().manual_seed(batch)
    par = torch.randn(batch, 8, 6, 5, generator=g) * 3 + 1
    par[0, :4].view(-1)[:40] = histogram_edges(2.0)[100:140].float()
    par[0, 1, 0, :2] = torch.tensor([0.0, -0.0])
    last = par.to(dtype).contiguous(memory_format=torch.channels_last)
    mu, logvar = last.chunk(2, dim=1)
    return {"contiguous": (last[:, :4].contiguous(), last[:, 4:].exp().contiguous()),
            "channels_last": (mu.contiguous(memory_format=torch.channels_last),
                              logvar.exp().contiguous(memory_format=torch.channels_last)),
            "chunk": (mu, logvar.exp())}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "chunk"])
def test_update_matches_plain_numpy_in_every_layout(layout: str, dtype: torch.dtype) -> None:
    """Two batches (the second smaller, so reused buffers are prefixes) through one PosteriorStats: moments
    to 1e-12, extremes and histogram counts exactly."""
    edges = histogram_edges(2.0)
    ps = PosteriorStats(4, stochastic=True, edges=edges)
    seen = {"mode": [], "sample": [], "sigma2": []}
    for batch in (5, 2):
        mu, sigma = _layouts(batch, dtype)[layout]
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
        ps.update(mu, sigma, eps)
        seen["mode"].append(mu.double().numpy())
        seen["sample"].append(mu.double().numpy() + sigma.double().numpy() * eps.double().numpy())
        seen["sigma2"].append(sigma.double().numpy() ** 2)
    for key, got in (("mode", ps.mode), ("sample", ps.sample), ("sigma2", ps.sigma2)):
        want = _plain(np.concatenate(seen[key]), edges.numpy())
        moments = got if key == "sigma2" else got.moments
        for field, w in zip(("n", "mean", "m2", "m3", "m4"), want[:5], strict=True):
            g = getattr(moments, field).numpy()
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * np.abs(w).max(), err_msg=f"{key} {field}")
        if key != "sigma2":
            assert got.min.tolist() == want[5].tolist() and got.max.tolist() == want[6].tolist()
            assert got.histogram.counts.tolist() == want[7].tolist()


def test_histogram_slots_equal_bucketize_at_edges_infinities_and_nan() -> None:
    """The grid lookup must agree exactly where binary search is decided: on an edge, one ulp either
    side (in float64 and in float32, which compares with the edges rounded up), far outside, ±inf and
    NaN; also for repeated edges, a single edge (no grid) and edges beyond float32's range."""
    for edges in (histogram_edges(0.7), histogram_edges(1e37), torch.tensor([0.0, 1.0, 1.0, 2.0], dtype=torch.float64),
                  torch.tensor([3.0], dtype=torch.float64)):
        for dtype in (torch.float64, torch.float32):
            e = edges.to(dtype)
            inf = torch.full_like(e, math.inf)
            x = torch.cat([e, torch.nextafter(e, inf), torch.nextafter(e, -inf),
                           torch.randn(5000, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 20,
                           torch.tensor([math.inf, -math.inf, 0.0, -0.0, 3e38, -3e38], dtype=dtype)])
            hist = Histogram(edges, 1)
            for values in (x, torch.cat([x, torch.tensor([math.nan], dtype=dtype)])):
                want = torch.bucketize(values.double(), edges, right=True)
                assert torch.equal(hist.slots(values[None]).long(), want[None]), (dtype, len(edges))
            # pieces shorter than a vector register go through the kernels' scalar loops
            pieces = torch.cat([hist.slots(piece[None]).long()[0] for piece in x[:3 * len(e)].split(3)])
            assert torch.equal(pieces, torch.bucketize(x[:3 * len(e)].double(), edges, right=True))


# --- the interval covers: hundreds of subsets of a population far larger than any subset ------------------

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
        lo, hi = s["ci95"]
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
        plain += s["ci95"][0] <= full <= s["ci95"][1]
        corrected += s["ci95_dataset"][0] <= full <= s["ci95_dataset"][1]
        ratio = np.diff(s["ci95_dataset"])[0] / np.diff(s["ci95"])[0]
        assert ratio == pytest.approx(math.sqrt((300 - n) / 299), rel=1e-9)
    lo_band, hi_band = coverage_band(trials)
    assert lo_band <= corrected / trials <= hi_band, corrected / trials
    assert plain / trials > 0.975, plain / trials
    full_pass = subset_stats(population).summary(population=300)
    assert full_pass["ci95_dataset"] == [full_pass["scale_factor"]] * 2


# --- the distribution: moments, histogram, tails ---------------------------------------------------------

def _shape(x: np.ndarray) -> tuple[float, float]:
    ref = _numpy_moments(x)
    return ref["skew"], ref["excess_kurtosis"]


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
        skew, kurt = _shape(per[c])
        assert s["per_channel"]["skew"][c] == pytest.approx(skew, rel=1e-6, abs=1e-9)
        assert s["per_channel"]["excess_kurtosis"][c] == pytest.approx(kurt, rel=1e-6, abs=1e-9)
        assert (s["per_channel"]["min"][c], s["per_channel"]["max"][c]) == (per[c].min(), per[c].max())
    skew, kurt = _shape(allz.ravel())
    assert (s["skew"], s["excess_kurtosis"]) == (pytest.approx(skew, rel=1e-9), pytest.approx(kurt, rel=1e-9))


def test_affine_moments_are_exact() -> None:
    z = np.concatenate([t.numpy() for t in skewed_latents(1)])
    rows = torch.from_numpy(z.transpose(1, 0, 2, 3).reshape(3, -1).copy())
    shift, scale = torch.tensor([0.5, -1.0, 1e4]), torch.tensor([2.0, -0.5, 100.0])
    got = Moments.of(rows).affine(shift, scale).standardised()
    ref = (rows - shift[:, None]) * scale[:, None]
    for c in range(3):
        skew, kurt = _shape(ref[c].numpy())
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
