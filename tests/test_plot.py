"""`plot`: per-channel histograms of the scaled latents; a clear message without matplotlib."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from latent_scale.plot import channel_densities, result_figure
from latent_scale.schema import Result, read_result

if TYPE_CHECKING:
    from conftest import Cli


def _read(path: Path) -> Result:
    return read_result(json.loads(path.read_text()), str(path))


def _sweep(result_json: Path, tmp_path: Path) -> Path:
    """A two-entry sweep file: the session's result at size 32 and (relabelled) 64."""
    r = json.loads(result_json.read_text())
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps([r, {**r, "recipe": {**r["recipe"], "size": 64}}]))
    return path


def test_plot_writes_an_image(result_json: Path, tmp_path: Path, cli: Cli) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "hist.png"
    code, _, err = cli("plot", result_json, "-o", out)
    assert code == 0, err
    assert f"wrote {out}" in err
    with Image.open(out) as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_densities_are_normalised_histograms(result_json: Path) -> None:
    """Each channel's density integrates to the share of values inside the edges, and its mean
    (from bin centres) is the channel's scaled mean to within the bins' resolution."""
    r = _read(result_json)
    edges, density, outside = channel_densities(r)
    widths = (edges[1:] - edges[:-1]).numpy()
    centres = ((edges[1:] + edges[:-1]) / 2).numpy()
    for c in range(density.shape[0]):
        d = density[c].numpy()
        assert (d * widths).sum() + float(outside[c]) == pytest.approx(1.0, abs=1e-12)
        mean = (d * widths * centres).sum()
        assert mean == pytest.approx(r.per_channel.mean[c] * r.scale_factor, abs=0.02)
    assert np.all(density.numpy() >= 0)


def test_plot_without_matplotlib_is_a_clear_error(result_json: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    cli.fails("plot", result_json, "-o", tmp_path / "h.png", says=["pip install 'latent-scale[plot]'"])


def test_plot_refuses_a_result_without_histogram(result_json: Path, tmp_path: Path, cli: Cli) -> None:
    pytest.importorskip("matplotlib")
    r = json.loads(result_json.read_text())
    for key in ("mode", "sample"):
        r["state"][key].pop("histogram")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(r))
    cli.fails("plot", old, "-o", tmp_path / "h.png", says=["state.mode.histogram is missing"])
    cli.fails("plot", tmp_path / "missing.json", "-o", tmp_path / "h.png", says=["does not exist"])


def test_compare_overlay_is_a_readable_png(result_json: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from latent_scale.plot import plot_compare

    r = _read(result_json)
    out = plot_compare([r, r], ["before", "after"], tmp_path / "overlay.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.size[0] >= 4 * 300 and im.size[1] >= 2 * 200  # 4 channels, linear and log rows
        assert np.asarray(im.convert("L")).std() > 10  # drawn, not blank


def test_compare_figure_has_labels_a_legend_and_a_log_panel_for_the_tails(result_json: Path) -> None:
    """Per channel a linear and a log-density axes, each holding every result's histogram."""
    pytest.importorskip("matplotlib")
    from latent_scale.plot import compare_figure

    r = _read(result_json)
    fig = compare_figure([r, r], ["before", "after"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 * r.state.channels
    assert sum(ax.get_yscale() == "log" for ax in axes) == len(axes) // 2
    assert {ax.get_xlabel() for ax in axes} >= {"z × scale factor"}
    assert {ax.get_ylabel() for ax in axes} >= {"density", "density (log)"}
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        f"before (× {r.scale_factor:.5g})", f"after (× {r.scale_factor:.5g})", "N(0, 1)"]
    _, density, _ = channel_densities(r)
    for c, ax in enumerate(axes[:4]):
        stairs = [p for p in ax.patches if hasattr(p, "get_data")]
        assert len(stairs) == 2
        np.testing.assert_array_equal(stairs[0].get_data().values, density[c].numpy())


def test_plot_of_a_sweep_draws_a_row_per_size(result_json: Path, tmp_path: Path, cli: Cli) -> None:
    """Each size's row holds that size's histograms; --size draws one size alone."""
    pytest.importorskip("matplotlib")
    sweep = _sweep(result_json, tmp_path)
    results = [read_result(r, "sweep") for r in json.loads(sweep.read_text())]
    fig = result_figure(results)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    channels = results[0].state.channels
    assert len(axes) == 2 * channels
    assert {ax.get_ylabel() for ax in axes if ax.get_ylabel()} == {"size 32: density", "size 64: density"}
    _, density, _ = channel_densities(results[0])
    stairs = [p for p in axes[0].patches if hasattr(p, "get_data")]
    np.testing.assert_array_equal(stairs[0].get_data().values, density[0].numpy())
    code, _, err = cli("plot", sweep, "-o", tmp_path / "all.png")
    assert code == 0, err
    code, _, err = cli("plot", sweep, "--size", 64, "-o", tmp_path / "one.png")
    assert code == 0, err
    with Image.open(tmp_path / "all.png") as both, Image.open(tmp_path / "one.png") as one:
        assert both.size[1] > 1.5 * one.size[1]  # two rows of panels against one
    cli.fails("plot", sweep, "--size", 48, "-o", tmp_path / "x.png", says=["holds no result for --size 48",
                                                                          "sizes 32, 64"])


def test_plot_of_stored_latents_without_a_model_names_the_latents(result_json: Path) -> None:
    pytest.importorskip("matplotlib")
    r = json.loads(result_json.read_text())
    r["model"] = {**r["model"], "source": None, "class": None}
    title = result_figure([read_result(r, "r.json")])._suptitle.get_text()
    assert title.startswith(f"latents in {r['recipe']['data']}: z × ") and "24 images" in title


def test_plot_of_an_accumulator_result_never_says_none(tmp_path: Path) -> None:
    """A latent_scale.Accumulator's result has no model source and no data: the title said "latents in None"."""
    pytest.importorskip("matplotlib")
    import torch

    import latent_scale

    acc = latent_scale.Accumulator(posterior="mode", unit="clip")
    acc.update(torch.randn(3, 4, 2, 5, 5, generator=torch.Generator().manual_seed(0)))
    (tmp_path / "acc.json").write_text(json.dumps(acc.result()))
    title = result_figure([read_result(json.loads((tmp_path / "acc.json").read_text()), "acc.json")])
    text = title._suptitle.get_text()
    assert "None" not in text and text.startswith("latents of a VAE: z × ") and "3 clips" in text, text
