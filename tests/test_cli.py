"""The command line: one clear sentence and exit code 2 for every user mistake, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli as cli


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def small(vae_dir: Path, photo_dir: Path) -> list[str]:
    return ["--model", str(vae_dir), "--data", str(photo_dir), "--size", "32", "--workers", "0", "--no-progress"]


def test_table_and_json_output(small: list[str], capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(["estimate", *small, "--limit", "6"], capsys)
    assert code == 0
    assert "scale factor" in out and "ratio to 0.18215" in out and "config factor" in out
    code, out, _ = cli(["estimate", *small, "--limit", "6", "--json"], capsys)
    assert code == 0 and json.loads(out)["num_images"] == 6


@pytest.mark.parametrize("args, needle", [
    (["--model", "/nonexistent/vae"], "does not exist"),
    (["--data", "/nonexistent/photos"], "does not exist"),
    (["--size", "0"], "--size"),
    (["--posterior", "median"], "--posterior"),
    (["--shard", "5/2"], "--shard"),
    (["--shard", "half"], "--shard"),
    (["--batch-size", "0"], "--batch-size"),
    (["--chunk-size", "many"], "--chunk-size"),
    (["--rel-tol", "2"], "--rel-tol"),
    (["--size", "big"], "--size"),
    (["--device", "cuda:7"], "--device"),
    (["--dtype", "int8"], "--dtype"),
    (["--resume"], "--checkpoint"),
])
def test_bad_values_exit_2(small: list[str], capsys: pytest.CaptureFixture, args: list[str], needle: str) -> None:
    code, _, err = cli(["estimate", *small, *args], capsys)
    assert_user_error(code, err, needle)


def test_folder_without_autoencoder_and_empty_data(small: list[str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notavae").mkdir()
    (tmp_path / "notavae" / "readme.txt").write_text("hello")
    code, _, err = cli(["estimate", *small, "--model", str(tmp_path / "notavae")], capsys)
    assert_user_error(code, err, "no autoencoder found")
    (tmp_path / "empty" / "class0").mkdir(parents=True)
    code, _, err = cli(["estimate", *small, "--data", str(tmp_path / "empty")], capsys)
    assert_user_error(code, err, "holds no images")


def test_imagenette_offline_is_a_clear_error(small: list[str], monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    def no_network(*a: object, **k: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    code, _, err = cli(["estimate", *small, "--data", "imagenette", "--cache-dir", str(tmp_path / "c")], capsys)
    assert_user_error(code, err, "could not download Imagenette", "--data samples")


def test_hub_id_offline_in_a_real_process(tmp_path: Path) -> None:
    """The default job with no network: exit 2, one sentence, the hint to pass a local path."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "latent_scale", "estimate", "--data", "samples", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, "CompVis/stable-diffusion-v1-4", "local")
    assert len(proc.stderr.strip().splitlines()) == 1
