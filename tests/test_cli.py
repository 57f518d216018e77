"""The command line: one clear sentence and exit code 2 for every user mistake, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Cli


@pytest.fixture
def small(vae_dir: Path, photo_dir: Path) -> tuple[str | Path | int, ...]:
    return "--model", vae_dir, "--data", photo_dir, "--size", 32, "--workers", 0, "--no-progress"


def test_table_and_json_output(small: tuple, cli: Cli) -> None:
    code, out, _ = cli("estimate", *small, "--limit", 6)
    assert code == 0
    assert "scale factor" in out and "ratio to 0.18215" in out and "config factor" in out
    code, out, _ = cli("estimate", *small, "--limit", 6, "--json")
    assert code == 0 and json.loads(out)["num_images"] == 6


# each option's bad values: the message names the option
BAD_VALUES = {"--size": ("0", "big"), "--posterior": ("median",), "--shard": ("5/2", "half"), "--batch-size": ("0",),
              "--chunk-size": ("many",), "--rel-tol": ("2",), "--device": ("cuda:7",), "--dtype": ("int8",),
              "--min-units": ("-5",), "--seed": ("-1", str(2**70))}


@pytest.mark.parametrize("args, needle", [
    *(([option, value], option) for option, values in BAD_VALUES.items() for value in values),
    (["--model", "/nonexistent/vae"], "does not exist"), (["--data", "/nonexistent/photos"], "does not exist"),
    (["--resume"], "--checkpoint"),
])
def test_bad_values_exit_2(small: tuple, cli: Cli, args: list[str], needle: str) -> None:
    cli.fails("estimate", *small, *args, says=[needle])


def test_folder_without_autoencoder_and_empty_data(small: tuple, tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "notavae").mkdir()
    (tmp_path / "notavae" / "readme.txt").write_text("hello")
    cli.fails("estimate", *small, "--model", tmp_path / "notavae", says=["no autoencoder found"])
    (tmp_path / "empty" / "class0").mkdir(parents=True)
    cli.fails("estimate", *small, "--data", tmp_path / "empty", says=["holds no images"])


def test_imagenette_offline_is_a_clear_error(small: tuple, monkeypatch: pytest.MonkeyPatch, cli: Cli,
                                             tmp_path: Path) -> None:
    def no_network(*a: object, **k: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    err = cli.fails("estimate", *small, "--data", "imagenette", "--cache-dir", tmp_path / "c",
                    says=["could not download Imagenette", "--data samples", "HF_HUB_OFFLINE covers the hub only"])
    assert "--model" not in err  # the model loads first, so it runs offline: only the data needs replacing
    cli.fails("estimate", "--data", "imagenette", "--cache-dir", tmp_path / "c", "--no-progress",
              says=["cache has no copy of CompVis/stable-diffusion-v1-4", "`python scripts/make_demo_vae.py demo-vae`",
                    "`latent-scale estimate --model demo-vae --data samples --size 128`"])


@pytest.mark.slow
def test_hub_id_offline_in_a_real_process(tmp_path: Path, cli: Cli) -> None:
    """The default job with no network: exit 2, one sentence, the hint to pass a local path."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path)}
    proc = subprocess.run(cli.argv("estimate", "--data", "samples", "--no-progress"),
                          capture_output=True, text=True, env=env, timeout=120)
    cli.one_line_error(proc.returncode, proc.stderr, says=["CompVis/stable-diffusion-v1-4", "local",
                                                           "python scripts/make_demo_vae.py demo-vae"])


@pytest.mark.parametrize("command", ["", "estimate", "known", "merge", "compare", "apply", "plot"])
def test_every_help_fits_80_columns(command: str, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal of 80 columns shows every help page unbroken; estimate names every unit it measures."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(*filter(None, [command]), "--help")
    assert code == 0 and max(map(len, out.splitlines())) <= 80, out
    if command == "estimate":
        head = " ".join(out.split("╭")[0].split())
        assert all(word in head for word in ("images", "video", "audio clips", "stored --latents")), head


def test_workers_beyond_four_per_core_are_refused(small: tuple, cli: Cli) -> None:
    """--workers 100000 forked processes until the machine ran out of memory."""
    cli.fails("estimate", *small, "--workers", 4 * (os.cpu_count() or 1) + 1, says=["--workers", "4 per core"])


@pytest.mark.parametrize("args, says", [
    (["estimate", "--bogus"], "No such option: --bogus; see `latent-scale estimate --help`"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["merge"], "Missing argument 'results'"),
    (["estimate", "--batch-size", "abc"], "Invalid value for '--batch-size'"),
    (["estimate", "--size"], "Option '--size' requires an argument"),
])
def test_a_mistyped_command_line_is_one_sentence(cli: Cli, args: list[str], says: str) -> None:
    """click's framed five-line panel became `latent-scale: error: ...` like every other user error."""
    assert cli.fails(*args, says=[says]).startswith("latent-scale: error: ")


def test_no_arguments_print_the_help(cli: Cli) -> None:
    code, out, _ = cli()
    assert code == 2 and "Usage: latent-scale" in out and "estimate" in out
