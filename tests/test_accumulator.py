"""latent_scale.Accumulator: the command line's result from latents a training loop hands over, on one
process and across ranks, checked against a run of the command line and against numpy in float64."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import latent_scale

NUMBERS = ("scale_factor", "scale_factor_ci95", "std", "mean", "rms", "shift_factor", "per_channel", "estimates",
           "distribution", "config_normalised", "normalisations")


def assert_close(got: Any, want: Any, where: str = "") -> None:
    """Nested numbers equal to 1e-12 relative, counts and words exactly, NaN as NaN."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        for k in want:
            assert_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for k, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_close(a, b, f"{where}[{k}]")
    elif isinstance(want, float) and not (isinstance(want, bool) or math.isnan(want)):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-300), where
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isnan(got), where
    else:
        assert got == want, where


def assert_same_state(got: dict, want: dict) -> None:
    """Two states of the same latents fed in other batches: moments to 1e-12 of each field's scale, extremes,
    histograms and counts exactly. The interval's co-moments are kept about the first batch's mean, which
    differs with the batches, so they are compared through the interval itself, not field by field."""
    assert (got["channels"], got["stochastic"]) == (want["channels"], want["stochastic"])
    for key in ("mode", "sample", "sigma2"):
        g, w = got.get(key), want.get(key)
        assert (g is None) == (w is None), key
        if w is None:
            continue
        if key != "sigma2":
            assert g["images"]["n"] == w["images"]["n"], key
            assert (g["min"], g["max"], g.get("histogram")) == (w["min"], w["max"], w.get("histogram")), key
            g, w = g["moments"], w["moments"]
        for field in ("n", "mean", "m2", "m3", "m4"):
            scale = np.abs(w[field]).max()
            np.testing.assert_allclose(g[field], w[field], rtol=1e-12, atol=1e-12 * scale, err_msg=f"{key} {field}")


def saved_posteriors(folder: Path, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ) of every unit of a --save-latents --moments folder, in unit-index order, read with safetensors
    itself: σ = exp(logvar / 2) in float32, as diffusers' DiagonalGaussianDistribution computes it."""
    from safetensors.torch import load_file

    units = {int(k[1:]): t for shard in sorted(folder.glob("*.safetensors")) for k, t in load_file(shard).items()}
    stacked = torch.stack([units[k] for k in sorted(units)])
    assert sorted(units) == list(range(len(units)))
    return stacked[:, :channels], torch.exp(0.5 * stacked[:, channels:])


@pytest.fixture(scope="module")
def cli_run(vae_dir: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory,
            measure: Callable[..., Any]) -> Callable[[str], tuple[dict, torch.Tensor, torch.Tensor]]:
    """`cli_run(posterior)`: the command line's result on the photographs, and the μ, σ it measured."""
    def get(posterior: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
        folder = tmp_path_factory.mktemp(f"latents-{posterior}")
        result = measure(vae_dir, photo_dir, posterior=posterior, save_latents=str(folder), moments=True,
                         batch_size=5)
        return result, *saved_posteriors(folder, result["latent_shape"][0])

    return get


@pytest.mark.parametrize("posterior", ["mode", "sample"])
def test_equals_the_command_lines_result_on_its_latents(cli_run: Callable, vae_dir: Path, posterior: str) -> None:
    """The run's own μ and σ, in batches of other sizes (and for "sample" in another order, with each
    unit's index): every number of the result and the whole state agree to 1e-12."""
    want, mu, sigma = cli_run(posterior)
    config = json.loads((vae_dir / "config.json").read_text())
    acc = latent_scale.Accumulator(posterior, config=config)
    order = torch.randperm(len(mu), generator=torch.Generator().manual_seed(1)) if posterior == "sample" \
        else torch.arange(len(mu))
    for part in order.split(7):
        acc.update(mu[part], sigma[part], index=part.tolist() if posterior == "sample" else None)
    got = acc.result()
    assert (got.num_images, got.num_elements, got.latent_shape) == (want["num_images"], want["num_elements"],
                                                                    want["latent_shape"])
    assert_close({k: got[k] for k in NUMBERS}, {k: want[k] for k in NUMBERS})
    assert_same_state(got.state, want["state"])
    assert got.recipe["posterior"] == posterior and got.model["config_scaling_factor"] == 0.5


def numpy_reference(mu: np.ndarray, sigma: np.ndarray, seed: int) -> dict[str, Any]:
    """Plain float64 numpy: the three estimates, ε drawn for unit i from torch.Generator seeded by
    seed·1000003 + i (the documented rule), and the delta-method interval on per-unit moments."""
    eps = np.stack([torch.randn(mu.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + i))
                    .double().numpy() for i in range(len(mu))])
    sample = mu + sigma * eps
    a, c = sample.reshape(len(mu), -1).mean(1), (sample.reshape(len(mu), -1) ** 2).mean(1)
    var = c.mean() - a.mean() ** 2
    grad = np.array([a.mean() * var**-1.5, -0.5 * var**-1.5])
    half = 1.959963984540054 * math.sqrt(grad @ np.cov(np.stack([a, c])) @ grad / len(mu))
    channels = np.moveaxis(sample, 1, 0).reshape(mu.shape[1], -1)
    expected = math.sqrt(mu.var(ddof=1) + (sigma**2).mean())
    return {"scale_factor": 1 / sample.std(ddof=1), "half": half, "mean": sample.mean(),
            "per_channel_std": channels.std(1, ddof=1), "expected_std": expected, "mode_std": mu.std(ddof=1)}


def test_audio_latents_match_numpy_in_float64() -> None:
    """1-D latents (B, C, T) as an audio VAE gives them, in uneven batches: the sample's factor, interval,
    mean and per-channel std, and the mode and expected_sample stds, against plain numpy."""
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(23, 8, 50, generator=g, dtype=torch.float64) * 2 + torch.randn(23, 8, 1, generator=g)
    sigma = torch.rand(23, 8, 50, generator=g, dtype=torch.float64) * 0.5 + 0.05
    acc = latent_scale.Accumulator("sample", seed=5, unit="audio clip")
    for part in torch.arange(23).split(6):
        acc.update(mu[part], sigma[part])
    r, ref = acc.result(), numpy_reference(mu.numpy(), sigma.numpy(), seed=5)
    assert r.scale_factor == pytest.approx(ref["scale_factor"], rel=1e-12)
    assert (r.scale_factor_ci95[1] - r.scale_factor_ci95[0]) / 2 == pytest.approx(ref["half"], rel=1e-9)
    assert r.mean == pytest.approx(ref["mean"], rel=1e-12)
    np.testing.assert_allclose(r.per_channel["std"], ref["per_channel_std"], rtol=1e-12)
    assert r.estimates["mode"]["std"] == pytest.approx(ref["mode_std"], rel=1e-12)
    assert r.estimates["expected_sample"]["std"] == pytest.approx(ref["expected_std"], rel=1e-12)
    assert (r.num_images, r.latent_shape, r.unit) == (23, [8, 50], "audio clip")


def _rank(rank: int, store: str, out: str, mu: torch.Tensor, sigma: torch.Tensor) -> None:
    """One of two gloo ranks: units r, r + 2, ... (as a DistributedSampler hands them out), then all_reduce."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        acc = latent_scale.Accumulator("sample", seed=2)
        mine = torch.arange(rank, len(mu), 2)
        for part in mine.split(3):
            acc.update(mu[part], sigma[part])
        acc.all_reduce()
        Path(out, f"rank{rank}.json").write_text(json.dumps(acc.result()))
        with pytest.raises(RuntimeError, match="all-reduced already"):  # it would count on one rank only
            acc.update(mu[:1], sigma[:1])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_all_reduce_to_the_one_process_result(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(4)
    mu, sigma = torch.randn(17, 4, 6, 6, generator=g) * 3 + 1, torch.rand(17, 4, 6, 6, generator=g) + 0.1
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path), mu, sigma), nprocs=2)
    one = latent_scale.Accumulator("sample", seed=2)
    one.update(mu, sigma)
    want = json.loads(json.dumps(one.result()))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["state"] == ranks[1]["state"]  # merged in rank order on both
    assert ranks[0]["run"]["world_size"] == 2 and ranks[0]["num_images"] == 17
    assert_close({k: ranks[0][k] for k in NUMBERS}, {k: want[k] for k in NUMBERS})
    assert_same_state(ranks[0]["state"], want["state"])


def test_merge_of_two_accumulators_is_the_one_accumulator() -> None:
    g = torch.Generator().manual_seed(6)
    z = torch.randn(12, 3, 5, generator=g) * 4
    whole, a, b = (latent_scale.Accumulator() for _ in range(3))
    whole.update(z)
    a.update(z[:5])
    b.update(z[5:])
    a.merge(b)
    assert_close({k: a.result()[k] for k in NUMBERS}, {k: whole.result()[k] for k in NUMBERS})
    assert a.num_units == 12


@pytest.mark.parametrize(("make", "call", "says"), [
    (lambda: latent_scale.Accumulator("posterior"), None, "posterior must be one of"),
    (lambda: latent_scale.Accumulator("sample"), lambda a: a.update(torch.zeros(2, 4, 3)), "needs sigma"),
    (latent_scale.Accumulator, lambda a: a.update(torch.zeros(2, 4), torch.ones(2, 5)), "must match"),
    (latent_scale.Accumulator, lambda a: a.update(torch.zeros(4)), "latents (B, C, ...)"),
    (latent_scale.Accumulator, lambda a: a.update(torch.zeros(2, 4), index=[0]), "index names 1 units"),
    (latent_scale.Accumulator, lambda a: (a.update(torch.zeros(2, 4), torch.ones(2, 4)), a.update(torch.zeros(2, 4))),
     "with every update or with none"),
    (latent_scale.Accumulator, lambda a: a.result(), "no latents yet"),
    (latent_scale.Accumulator, lambda a: a.update(torch.tensor([[0.0, float("nan")]] * 2)), "NaN or infinite"),
    (lambda: latent_scale.Accumulator("sample"),
     lambda a: a.update(torch.zeros(2, 3), torch.full((2, 3), float("inf"))), "NaN or infinite"),
    (lambda: latent_scale.Accumulator("sample"), lambda a: a.update(torch.zeros(2, 3), -torch.ones(2, 3)),
     "sigma holds negative values"),
    (latent_scale.Accumulator, lambda a: a.update(torch.zeros(0, 4)), "at least one unit and one channel"),
    (latent_scale.Accumulator, lambda a: a.update(torch.zeros(2, 0, 3)), "at least one unit and one channel"),
    (lambda: latent_scale.Accumulator(seed=-1), None, "seed must be an integer from 0"),
    (lambda: latent_scale.Accumulator(seed=2**63), None, "seed must be an integer from 0"),
    (latent_scale.Accumulator, lambda a: (a.update(torch.randn(2, 3)), a.merge(a)), "with itself"),
    (latent_scale.Accumulator, lambda a: (a.update(torch.ones(4, 3)), a.result()), "no spread"),
    (lambda: latent_scale.Accumulator(config={"scaling_factor": "0.18"}), None, "scaling_factor must be a number"),
    (lambda: latent_scale.Accumulator(config={"latents_mean": ["a"]}), None, "latents_mean must be a list"),
])
def test_misuse_is_one_clear_sentence(make: Callable, call: Callable | None, says: str) -> None:
    """Never a NaN factor, an IndexError or a count doubled: one ValueError naming the mistake."""
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        acc = make()
        call(acc)
