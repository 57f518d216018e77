"""`compare`: results side by side and a 95 % test of whether their factors differ."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from latent_scale.compare import check_overlay, compare_results, format_comparison, load_results
from latent_scale.errors import InputError
from latent_scale.schema import Result


@pytest.fixture(scope="module")
def result_of(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory,
              measure: Callable[..., Any]) -> Callable[[Path], Path]:
    """`result_of(model)`: its result file on the photographs, named result.json (the table's column name)."""
    def run(model: Path) -> Path:
        out = tmp_path_factory.mktemp("compared") / "result.json"
        measure(model, photo_dir, output=str(out))
        return out

    return run


@pytest.fixture(scope="module")
def other_vae_json(result_of: Callable[[Path], Path], tiny_vae: Callable[..., Path]) -> Path:
    """The tiny VAE with other weights (seed 1), same photographs: an independent, different factor."""
    return result_of(tiny_vae(seed=1))


@pytest.fixture(scope="module")
def eight_channel_json(result_of: Callable[[Path], Path], tiny_vae: Callable[..., Path]) -> Path:
    return result_of(tiny_vae(latent_channels=8))


def _z(a: Result, b: Result) -> float:
    """The test statistic by hand: standard errors from the 95 % half-widths."""
    se = [(r.scale_factor_ci95[1] - r.scale_factor_ci95[0]) / 2 / 1.959964 for r in (a, b)]
    return (b.scale_factor - a.scale_factor) / math.sqrt(se[0] ** 2 + se[1] ** 2)


def _significant(cell: str) -> int:
    """How many significant digits a number is written with ("0.050000" has 5, "1.2" has 2)."""
    mantissa = cell.lstrip("+-").split("e")[0].replace(".", "").lstrip("0")
    return len(mantissa)


def test_two_results_of_the_same_run_show_no_difference(result_json: Path, tmp_path: Path) -> None:
    copy = tmp_path / "again.json"
    shutil.copy(result_json, copy)
    cmp = compare_results(*load_results([result_json, copy]))
    (verdict,) = cmp["verdicts"]
    assert (verdict["z"], verdict["differ"], verdict["independent"]) == (0.0, False, False)
    assert "again vs r: no difference (z = 0.00)" in format_comparison(cmp)


def test_two_different_vaes_differ(result_json: Path, other_vae_json: Path) -> None:
    results, names = load_results([result_json, other_vae_json])
    cmp = compare_results(results, names)
    (verdict,) = cmp["verdicts"]
    z = _z(*results)
    assert abs(z) > 1.959964  # the fixture's premise: these tiny VAEs give clearly different factors
    assert verdict["z"] == pytest.approx(z, rel=1e-6)
    assert verdict["differ"] and verdict["independent"]
    assert f"result vs r: differ (z = {z:.2f}) at 95 %" in format_comparison(cmp)


def test_table_shows_each_results_numbers_side_by_side(result_json: Path, other_vae_json: Path) -> None:
    results, names = load_results([result_json, other_vae_json])
    lines = format_comparison(compare_results(results, names)).splitlines()
    assert lines[0].split() == ["r", "result"]
    rows = {line[:20].strip(): line[20:].split("  ") for line in lines[1:] if line[:20].strip()}
    factor = [f"{r.scale_factor:#.5g} ± {(r.scale_factor_ci95[1] - r.scale_factor_ci95[0]) / 2:#.5g}"
              for r in results]
    assert [c.strip() for c in rows["scale factor (95%)"] if c.strip()] == factor
    assert " ".join(rows["ch 3 mean / std"]).split() == [
        t for r in results for t in (f"{r.per_channel.mean[3]:#.5g}", "/", f"{r.per_channel.std[3]:#.5g}")]
    assert " ".join(rows["beyond ±3 (N: 0.27%)"]).split() == [
        f"{100 * r.distribution.beyond_3:#.3g}%" for r in results]
    assert " ".join(rows["config factor"]).split() == ["0.50000", "0.50000"]
    assert " ".join(rows["images"]).split() == ["24", "24"]


def test_every_number_in_the_table_has_one_format(result_json: Path, other_vae_json: Path) -> None:
    """Five significant digits everywhere, trailing zeros kept: never "0.5" beside "1.0280"."""
    lines = format_comparison(compare_results(*load_results([result_json, other_vae_json]))).splitlines()
    numbers = [cell for line in lines[1:] if line.startswith(("scale", "shift", "rms", "config", "ch "))
               for cell in line[20:].replace("±", " ").replace("/", " ").split()]
    assert len(numbers) == 2 * (4 + 4 * 2) + 2  # factor ± half-width, shift, rms, config; 4 channels × 2
    assert {_significant(n) for n in numbers} == {5}, numbers


def test_different_channel_counts_compare_globally_but_refuse_the_overlay(
        result_json: Path, eight_channel_json: Path, tmp_path: Path) -> None:
    results, names = load_results([result_json, eight_channel_json])
    text = format_comparison(compare_results(results, names))
    assert "ch 7 mean / std" in text and text.count(" -") >= 4  # the 4-channel column has no ch 4..7
    with pytest.raises(InputError, match="different channel counts .r 4, result 8."):
        check_overlay(results, names)
    pytest.importorskip("matplotlib")
    from latent_scale.plot import plot_compare

    with pytest.raises(InputError, match="different channel counts"):
        plot_compare(results, names, tmp_path / "overlay.png")
    assert not (tmp_path / "overlay.png").exists()


def test_a_file_that_is_not_a_result_is_refused_in_one_sentence(result_json: Path, tmp_path: Path) -> None:
    other = tmp_path / "config.json"
    other.write_text(json.dumps({"scaling_factor": 0.18215}))
    with pytest.raises(InputError, match=r"config.json is not a latent-scale result \(it holds a JSON object without"):
        load_results([result_json, other])
    with pytest.raises(InputError, match="two or more"):
        compare_results(*load_results([result_json]))


def test_a_sweep_file_gives_one_entry_per_size(result_json: Path, tmp_path: Path) -> None:
    r = json.loads(result_json.read_text())
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([r, {**r, "recipe": {**r["recipe"], "size": 64}}]))
    results, names = load_results([sweep])
    assert names == ["sweep@32", "sweep@64"] and results[1].recipe.size == 64


@pytest.mark.parametrize(("value", "says"), [
    (None, "scale_factor is null, not a number"),
    ("0.9", "scale_factor is a string, not a number"),
    (0.3, "scale_factor is not what its state gives (0.3 stated"),
], ids=["null", "string", "edited"])
def test_a_damaged_factor_is_one_sentence(result_json: Path, tmp_path: Path, value: Any, says: str) -> None:
    r = json.loads(result_json.read_text())
    r["scale_factor"] = value
    (tmp_path / "bad.json").write_text(json.dumps(r))
    with pytest.raises(InputError) as e:
        load_results([result_json, tmp_path / "bad.json"])
    assert str(e.value).startswith(f"{tmp_path / 'bad.json'}: {says}") and "\n" not in str(e.value)


def test_a_result_without_a_size_shows_a_dash_not_none(result_json: Path, tmp_path: Path,
                                                       measure: Callable[..., Any]) -> None:
    """Stored latents (and audio clips) have no --size: the row says "-" beside the images' 32."""
    import numpy as np

    np.save(tmp_path / "z.npy", np.random.default_rng(0).normal(0.5, 2, (6, 4, 8, 8)))
    measure(latents=str(tmp_path / "z.npy"), output=str(tmp_path / "stored.json"))
    lines = format_comparison(compare_results(*load_results([result_json, tmp_path / "stored.json"]))).splitlines()
    assert [line.split()[1:] for line in lines if line.startswith("size")] == [["32", "-"]]
    assert "None" not in "\n".join(lines)
