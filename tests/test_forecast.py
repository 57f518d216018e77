"""Forecast: images (and time) a target precision needs, read off the running interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latent_scale.forecast import forecast, images_needed, postfix, table_rows
from latent_scale.stats import Z95, LatentStats

CHANNEL_MEANS = np.array([0.5, -0.3, 0.2, 0.1])


def test_images_needed_scales_as_one_over_n() -> None:
    """±1 % after 100 images -> ±0.1 % needs (1 % / 0.1 %)² = 100 times as many."""
    assert images_needed(100, 0.2, 0.002, 1e-3) == 10_000
    assert images_needed(100, 0.2, 0.002, 1e-2) == 100
    assert images_needed(100, 0.2, 0.0, 1e-3) == 2


def test_images_needed_for_the_full_data_set_inverts_the_finite_population_correction() -> None:
    """m is the first count whose corrected half-width, (k/m)·(P - m)/(P - 1), is within target."""
    n, f, half, tol, population = 100, 0.2, 0.002, 1e-3, 5000
    m = images_needed(n, f, half, tol, population)
    k, target2 = n * half**2, (tol * f) ** 2

    def corrected(count: int) -> float:
        return k / count * (population - count) / (population - 1)

    assert corrected(m) <= target2 < corrected(m - 1)
    assert m == 3334  # 2 / 5.9996e-4, by hand
    assert images_needed(n, f, half, 1e-9, population) == population  # never more than all of them


@pytest.mark.parametrize("n, factor, half", [(1, 0.2, 0.01), (10, math.nan, 0.01), (10, 0.2, math.nan)])
def test_images_needed_is_none_while_the_interval_is_undefined(n: int, factor: float, half: float) -> None:
    assert images_needed(n, factor, half, 1e-2) is None


def test_forecast_times_at_the_measured_rate_and_names_the_full_data_set() -> None:
    fc = forecast(100, 0.2, 0.002, seconds=4.0, rel_tols=(1e-2, None, 1e-3), population=5000)
    assert fc["images_per_s"] == 25.0
    assert [t["rel_tol"] for t in fc["targets"]] == [1e-3, 1e-2]
    precise = fc["targets"][0]
    assert (precise["images"], precise["seconds"]) == (10_000, 400.0)
    assert (precise["images_dataset"], precise["seconds_dataset"]) == (3334, 3334 / 25)
    rows = dict(table_rows(fc))
    assert rows["±0.1 % needs"] == (
        "~10,000 images (~6.7 min at 25 images/s); for the value of all 5000: ~3,300 (~2.2 min)")
    assert rows["±1 % needs"].startswith("~100 images (~4 s at 25 images/s)")
    assert rows["all 5000 images"] == "~3.3 min at 25 images/s"
    assert postfix(fc) == "±1 %: ~100 images (~4 s)"


def test_forecast_without_a_subset_has_no_full_data_set_rows() -> None:
    fc = forecast(5000, 0.2, 0.0002, seconds=100.0, population=5000)
    assert "images_dataset" not in fc["targets"][0]
    assert [k for k, _ in table_rows(fc)] == ["±0.1 % needs"]
    assert postfix(fc) == "±0.1 %: ~5,000 images (~100 s)"
    undefined = forecast(1, 0.2, math.nan, seconds=1.0)
    assert postfix(undefined) == "" and table_rows(undefined) == [("±0.1 % needs", "known after 2 images")]


def test_forecast_words_name_the_unit_measured() -> None:
    """Clips or latents, never "images", when those were measured: 100 clips at ±1 % -> ±0.1 % needs 100x."""
    fc = forecast(100, 0.2, 0.002, seconds=4.0, population=5000)
    rows = dict(table_rows(fc, "clips"))
    assert rows["±0.1 % needs"].startswith("~10,000 clips (~6.7 min at 25 clips/s)")
    assert rows["all 5000 clips"] == "~3.3 min at 25 clips/s"
    assert postfix(fc, "latents") == "±0.1 %: ~10,000 latents (~6.7 min)"
    assert table_rows(forecast(1, 0.2, math.nan, 1.0), "audio clips") == [("±0.1 % needs", "known after 2 audio clips")]
    assert not any("image" in k + v for k, v in table_rows(fc, "clips"))


def _images(seed: int, count: int, scale_sd: float, mean_sd: float) -> np.ndarray:
    """Per-image latents (count, 4, 8, 8) that vary like real images: lognormal scale, normal mean."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, scale_sd, count))[:, None, None, None]
    mean = rng.normal(0.0, mean_sd, count)[:, None, None, None] + CHANNEL_MEANS[None, :, None, None]
    return mean + scale * rng.standard_normal((count, 4, 8, 8))


def _running_interval(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Naive reference of the running (factor, half-width) after each image: cumulative raw sums."""
    flat = z.reshape(len(z), -1)
    a, c = flat.mean(1), (flat * flat).mean(1)
    n = np.arange(1, len(z) + 1, dtype=np.float64)
    mean_a, mean_c = np.cumsum(a) / n, np.cumsum(c) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = [(np.cumsum(x * y) / n - mx * my) * n / (n - 1)
               for x, y, mx, my in ((a, a, mean_a, mean_a), (a, c, mean_a, mean_c), (c, c, mean_c, mean_c))]
        var = mean_c - mean_a**2
        g_a, g_c = mean_a * var**-1.5, -0.5 * var**-1.5
        half = Z95 * np.sqrt((g_a**2 * cov[0] + 2 * g_a * g_c * cov[1] + g_c**2 * cov[2]) / n)
        elements = n * flat.shape[1]
        return 1 / np.sqrt(var * elements / (elements - 1)), half


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale_sd, mean_sd, tols", [(0.06, 0.1, (1e-2, 3e-3)), (0.2, 0.2, (1e-2,))],
                         ids=["like-the-benchmark", "varied-images"])
def test_forecast_after_200_images_is_within_a_factor_2_of_what_rel_tol_needs(
        seed: int, scale_sd: float, mean_sd: float, tols: tuple[float, ...]) -> None:
    """The issue's done-when, simulated: 3000 images, forecast after 200 vs the first count at which
    the running interval (as --rel-tol checks it, never before 50 images) is within ±rel_tol.
    Varied images need ~1400 for ±1 % (and ~15000, beyond the set, for ±0.3 %)."""
    z = _images(seed, 3000, scale_sd, mean_sd)
    factor, half = _running_interval(z)
    stats = LatentStats(4)
    for image in torch.from_numpy(z[:200, None]):
        stats.update(image)
    f200, h200 = stats.factor_interval()
    assert (f200, h200) == pytest.approx((factor[199], half[199]), rel=1e-9)
    stats.update(torch.from_numpy(z[200:]))
    assert stats.factor_interval() == pytest.approx((factor[-1], half[-1]), rel=1e-9)
    for tol in tols:
        predicted = images_needed(200, f200, h200, tol)
        reached = np.nonzero(half[49:] < tol * factor[49:])[0]
        assert len(reached), f"±{tol} is not reached within 3000 images"
        needed = int(reached[0]) + 50
        assert needed / 2 <= predicted <= 2 * needed, (tol, predicted, needed)


def test_forecast_never_says_fewer_images_than_rel_tol_stops_at() -> None:
    """--rel-tol never stops before --min-images, so a target reached at once still forecasts the floor."""
    quick = forecast(200, 0.2, 0.0002, seconds=2.0, rel_tols=(1e-2,), floor=50)["targets"]
    assert [t["images"] for t in quick] == [200, 50]  # ±0.1 %: ceil(200·(0.0002/0.0002)²); ±1 %: 2 → 50
