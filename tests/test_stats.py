"""The statistics against numpy's two-pass float64 results, on adversarial inputs and splits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latent_scale.stats import Z95, LatentStats, Moments, PosteriorStats, UnitMoments


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
    assert s["num_images"] == 17 and s["num_elements"] == 17 * 3 * 20


def test_video_latents_pool_time_like_space() -> None:
    z = torch.randn(6, 4, 3, 5, 5, generator=torch.Generator().manual_seed(1)).double()
    st = LatentStats(4)
    st.update(z)
    ref = z.transpose(0, 1).reshape(4, -1).std(1)
    np.testing.assert_allclose(st.summary()["per_channel"]["std"], ref.numpy(), rtol=1e-12)


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
    lo, hi = st.summary()["scale_factor_ci95"]
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


def test_merge_refuses_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="channel"):
        LatentStats(4).merge(LatentStats(16))


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
    from latent_scale.stats import histogram_edges

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
    from latent_scale.stats import histogram_edges

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
    from latent_scale.stats import Histogram, histogram_edges

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


