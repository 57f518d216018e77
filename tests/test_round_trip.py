"""--save-latents then --latents: the stored folder gives the encoding run's numbers for the run's own
posterior with default options, and a posterior stored latents cannot give is refused, never replaced."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from conftest import Cli


@pytest.mark.parametrize("posterior", ["sample", "mode", "expected_sample"])
def test_saved_latents_give_the_encoding_runs_factor_by_default(tmp_path: Path, vae_dir: Path, photo_dir: Path,
                                                                 posterior: str, measure: Callable[..., Any]) -> None:
    encoded = measure(vae_dir, photo_dir, posterior=posterior, seed=7, save_latents=str(tmp_path / "saved"))
    stored = measure(latents=str(tmp_path / "saved"))  # no --posterior, --seed or --moments: the run's own
    assert stored["recipe"]["posterior"] == posterior and stored["recipe"]["seed"] == 7
    np.testing.assert_allclose(stored["scale_factor"], encoded["scale_factor"], rtol=1e-9)
    for name, estimate in encoded["estimates"].items():
        np.testing.assert_allclose(stored["estimates"][name]["scale_factor"], estimate["scale_factor"], rtol=1e-9)
    assert stored["recipe"]["cache"]["model"]["class"] == "AutoencoderKL"  # what it was made from


def test_latents_without_logvar_refuse_a_sample_in_one_sentence(tmp_path: Path, cli: Cli) -> None:
    folder = tmp_path / "means"
    folder.mkdir()
    for k in range(3):
        np.save(folder / f"{k}.npy", np.random.default_rng(k).standard_normal((4, 8, 8)).astype(np.float32))
    cli.fails("estimate", "--latents", folder, "--posterior", "sample", "--no-progress",
              says=["posterior means only", "--posterior mode"])


def test_latents_without_logvar_measure_the_mode_by_default(tmp_path: Path, measure: Callable[..., Any]) -> None:
    folder = tmp_path / "means"
    folder.mkdir()
    z = np.random.default_rng(0).standard_normal((5, 4, 8, 8)) * 3 + 1
    np.save(folder / "batch.npy", z.astype(np.float32))
    result = measure(latents=str(folder))
    assert result["recipe"]["posterior"] == "mode"
    np.testing.assert_allclose(result["scale_factor"], 1 / z.astype(np.float32).astype(np.float64).std(ddof=1),
                               rtol=1e-12)
