"""--size 16,32: one pass, each image decoded once, one result per size equal to a separate run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Cli


def test_sweep_equals_separate_runs(vae_dir: Path, photo_dir: Path, tmp_path: Path,
                                    measure: Callable[..., Any]) -> None:
    kw = dict(batch_size=5, limit=13)
    sweep = measure(vae_dir, photo_dir, size="16,32", output=str(tmp_path / "s.json"), **kw)
    assert [r.recipe["size"] for r in sweep] == [16, 32]
    for r in sweep:
        alone = measure(vae_dir, photo_dir, size=r.recipe["size"], **kw)
        for post in ("sample", "mode", "expected_sample"):
            assert r.estimates[post]["scale_factor"] == pytest.approx(alone.estimates[post]["scale_factor"], rel=1e-9)
        assert r.per_channel["std"] == pytest.approx(alone.per_channel["std"], rel=1e-9)
        assert r.num_images == alone.num_images == 13
    saved = json.loads((tmp_path / "s.json").read_text())
    assert [s["recipe"]["size"] for s in saved] == [16, 32]


def test_sweep_table_has_one_line_per_size(vae_dir: Path, photo_dir: Path, cli: Cli) -> None:
    code, out, _ = cli("estimate", "--model", vae_dir, "--data", photo_dir, "--size", "16,32", "--workers", 0,
                       "--no-progress", "--limit", 6)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 4 and lines[1].split()[0] == "16" and lines[2].split()[0] == "32"
    assert lines[3].split()[0] == "precision"  # the dtype that ran, once: one pass encodes every size
    assert lines[1].endswith("1.0000")


@pytest.mark.parametrize("size", ["16,16", "16,x", "4,32"])
def test_bad_sweep_sizes_are_refused(size: str, cli: Cli) -> None:
    cli.fails("estimate", "--size", size, says=["--size"])


def test_unreached_rel_tol_is_stated(vae_dir: Path, photo_dir: Path, measure: Callable[..., Any]) -> None:
    r = measure(vae_dir, photo_dir, rel_tol=1e-6, min_units=2)
    assert not r.run["stopped_early"] and r.num_images == 24
    assert r.run["rel_tol_unmet"].startswith("not reached") and "1e-06" in r.run["rel_tol_unmet"]
