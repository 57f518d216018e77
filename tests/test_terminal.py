"""What a user reads on the terminal: the progress bar's words, warnings beside it, the result table
(its width, its unit words, the dtype that ran), and simple mistakes answered before torch is imported."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from latent_scale.loop import StopRule, running
from latent_scale.report import format_sweep, format_table

if TYPE_CHECKING:
    from conftest import Cli

WIDTH = 100


def broken_photos(photo_set: Callable[..., Path], tmp_path: Path, good: int) -> Path:
    """`good` photographs and two files that are not images, in a fresh folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, src in enumerate(sorted(photo_set(12).rglob("*.png"))[:good]):
        (folder / f"img{k:02d}.png").write_bytes(src.read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def segments(err: str) -> list[str]:
    """What a terminal shows as separate lines: tqdm redraws with \\r, prints end with \\n."""
    return [s for s in re.split(r"[\r\n]", err) if s.strip()]


def test_skip_warnings_get_their_own_line_above_the_bar(vae_dir: Path, photo_set: Callable[..., Path],
                                                        tmp_path: Path, cli: Cli) -> None:
    """Each 'skipping X' warning is a line of its own (tqdm clears the bar first), never glued to the bar."""
    data = broken_photos(photo_set, tmp_path, good=6)
    code, _, err = cli("estimate", "--model", vae_dir, "--data", data, "--size", 32, "--workers", 0,
                       "--batch-size", 2, "--dtype", "float32", "--progress")
    assert code == 0, err
    skips = [s for s in segments(err) if "skipping" in s]
    assert len(skips) == 2, err
    assert all(s.startswith("latent-scale: warning: skipping ") for s in skips), skips
    assert "image/s" in err  # the bar was drawn


def test_bar_says_no_unit_counted_yet_never_nan(photo_set: Callable[..., Path], vae_dir: Path, tmp_path: Path,
                                                cli: Cli) -> None:
    """Every unit skipped: the bar says so in the unit's words, and the run ends in one sentence."""
    data = broken_photos(photo_set, tmp_path, good=0)
    code, _, err = cli("estimate", "--model", vae_dir, "--data", data, "--size", 32, "--workers", 0,
                       "--progress")
    assert code == 2 and "no image counted yet" in err and "nan" not in err, err
    assert segments(err)[-1].startswith("latent-scale: error: no image of"), err


@pytest.mark.parametrize("n, f, half, unit, units, want", [
    (0, math.nan, math.nan, "image", "images", "no image counted yet"),
    (0, math.nan, math.nan, "clip", "clips", "no clip counted yet"),
    (1, math.nan, math.nan, "audio clip", "audio clips", "1 audio clip counted, no interval yet"),
    # after 100 latents ±1 %: ±0.1 % needs 100² / 10² · 100 = 10,000, at 100 / 4 s = 25 per second 400 s
    (100, 0.2, 0.002, "latent", "latents", "factor 0.20000 ± 0.00200, ±0.1 %: ~10,000 latents (~6.7 min)"),
])
def test_bar_words(n: int, f: float, half: float, unit: str, units: str, want: str) -> None:
    assert running(n, f, half, 4.0, StopRule("sample"), unit, units) == want


@pytest.fixture(scope="module")
def image_result(measure: Callable[..., Any], vae_dir: Path, photo_dir: Path) -> dict[str, Any]:
    """A float32 run on 20 of the 24 photographs (a subset: the table's longest rows)."""
    return measure(vae_dir, photo_dir, limit=20, dtype="float32")


def rows(table: str) -> dict[str, str]:
    """Label -> value of a format_table text, continuation lines joined to their row."""
    out: dict[str, str] = {}
    label = ""
    for line in table.splitlines():
        key, value = line[:18].strip(), line[18:]
        label = key or label
        out[label] = f"{out[label]} {value}" if not key else value
    return out


def test_table_always_shows_the_dtype_that_ran(image_result: dict[str, Any], measure: Callable[..., Any],
                                               tmp_path: Path) -> None:
    assert rows(format_table(image_result))["precision"] == "float32 encoder"
    check = {"dtype": "bfloat16", "std_rel_diff": -6.3e-4, "images": 4}
    low = {**image_result, "run": {**image_result["run"], "precision_check": check},
           "recipe": {**image_result["recipe"], "dtype": "bfloat16"}}
    assert rows(format_table(low))["precision"] == ("bfloat16 encoder: std -0.00063 relative to float32 "
                                                    "(4 images re-encoded; --dtype float32 to avoid)")
    np.save(tmp_path / "z.npy", np.random.default_rng(0).normal(size=(5, 4, 6, 6)).astype(np.float32))
    stored = measure(latents=str(tmp_path / "z.npy"), posterior="mode")
    assert rows(format_table(stored))["precision"] == "no encoder: stored latents, read in float64"


def test_tables_fit_100_columns(image_result: dict[str, Any], measure: Callable[..., Any], vae_dir: Path,
                                photo_dir: Path, result_json: Path, tmp_path: Path) -> None:
    from latent_scale.compare import compare_results, format_comparison, load_results
    from latent_scale.known import known_factors, summary_table

    table = format_table(image_result)
    for key in ("config → std", "±0.1 % needs", "all images"):
        assert key in rows(table)  # the long rows are there, wrapped
    sweep = format_sweep(measure(vae_dir, photo_dir, limit=4, size="16,32", dtype="float32"))
    assert sweep.splitlines()[-1] == "precision  float32 encoder"
    names = [f"run-{k}" for k in range(6)]
    for name in names:
        (tmp_path / f"{name}.json").write_bytes(result_json.read_bytes())
    side_by_side = format_comparison(compare_results(*load_results([tmp_path / f"{n}.json" for n in names])))
    assert all(name in side_by_side for name in names) and side_by_side.count("scale factor (95%)") == 2
    for text in (table, sweep, summary_table(known_factors()), side_by_side):
        assert max(len(line) for line in text.splitlines()) <= WIDTH, text


def test_table_words_name_the_unit_measured(image_result: dict[str, Any]) -> None:
    """A clip run says clips everywhere an image run says images (count, speed, forecast)."""
    clips = {**image_result, "recipe": {**image_result["recipe"], "unit": "clip"}}
    table = format_table(clips)
    assert "image" not in table.replace("scaled values", "")
    found = rows(table)
    assert found["clips"] == "20 of 24" and found["speed"].split(",")[0].endswith(" clips/s")
    assert re.fullmatch(r"~[\d,]+ clips \(.* at .* clips/s\).*", found["±0.1 % needs"])


MISTAKES = {
    "a --data path that does not exist": (["estimate", "--data", "{tmp}/photos"], "does not exist"),
    "a --model path that does not exist": (["estimate", "--model", "{tmp}/vae", "--data", "samples"],
                                           "model path"),
    "a --model file that does not exist": (["estimate", "--model", "vae.safetensors", "--data", "samples"],
                                           "model path"),
    "a --latents path that does not exist": (["estimate", "--latents", "{tmp}/cache"], "does not exist"),
    "apply --dry-run with a file that is not a result": (["apply", "{tmp}/r.json", "--to", "{tmp}", "--dry-run"],
                                                         "not a latent-scale result"),
    "apply --dry-run with no result file": (["apply", "{tmp}/none.json", "--to", "{tmp}", "--dry-run"],
                                            "does not exist"),
}
# The command line in a fresh interpreter; says whether torch was imported by the time it exited.
PROBE = ("import sys\nfrom latent_scale.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
         "    print('torch' in sys.modules, e.code)\n")


@pytest.mark.parametrize("mistake", MISTAKES)
def test_simple_mistakes_are_answered_before_torch_is_imported(mistake: str, tmp_path: Path, cli: Cli) -> None:
    args, needle = MISTAKES[mistake]
    (tmp_path / "r.json").write_text('{"a": 1}')
    proc = subprocess.run([sys.executable, "-c", PROBE, *(a.format(tmp=tmp_path) for a in args)],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "2"], proc.stdout + proc.stderr
    cli.one_line_error(2, proc.stderr, says=[needle])


def test_one_unit_shows_no_interval_in_words_never_nan(image_result: dict[str, Any]) -> None:
    """One unit has no interval (null in the JSON, nan in memory): the table and the sweep say so, never "± nan"."""
    for ci in ([None, None], [math.nan, math.nan]):
        one = {**image_result, "num_images": 1, "num_units": 1, "scale_factor_ci95": ci,
               "scale_factor_ci95_dataset": ci}
        table, sweep = format_table(one), format_sweep([one, one])
        assert "nan" not in table + sweep and "None" not in table + sweep
        assert rows(table)["scale factor"] == (f"{one['scale_factor']:.5f} (no interval before 2 images; "
                                               "posterior sample)")
        assert "all images" not in rows(table)
        assert sweep.splitlines()[1].split()[3:5] == ["±", "-"]
