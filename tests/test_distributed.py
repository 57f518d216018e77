"""The answer does not depend on how the work was split or interrupted: torchrun ranks,
--shard + merge, and checkpoint/resume across SIGTERM and SIGKILL all give the one-process result."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from latent_scale.errors import InputError
from latent_scale.sources.images import list_images

if TYPE_CHECKING:
    from conftest import Cli

SIZE = 32
FIELDS = ("scale_factor", "std", "mean", "rms")


def assert_same(r: dict, ref: dict, tol: float = 1e-9) -> None:
    """Equal to `tol` relative in every estimate, including the per-channel ones and the interval."""
    assert r["num_images"] == ref["num_images"] and r["num_elements"] == ref["num_elements"]
    same = functools.partial(pytest.approx, rel=tol, abs=0)
    assert {k: r[k] for k in FIELDS} == same({k: ref[k] for k in FIELDS})
    for post, est in ref["estimates"].items():
        assert r["estimates"][post] == same(est), post
    assert r["scale_factor_ci95"] + r["per_channel"]["std"] == same(
        ref["scale_factor_ci95"] + ref["per_channel"]["std"])


@pytest.fixture
def one_process(measure: Callable[..., Any]) -> Callable[..., dict]:
    """The reference: a run in this process, in batches of 4, each image encoded alone (torch's CPU
    kernels round a batch of one differently from a larger batch, so only per-image chunks make every
    split give the same latents bit for bit, which the 1e-9 comparisons of the merge math need)."""
    return functools.partial(measure, batch_size=4, chunk_size="1")


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(vae_dir: Path, photo_dir: Path, tmp_path: Path,
                                              one_process: Callable[..., dict]) -> None:
    out = tmp_path / "two.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "latent_scale", "estimate", "--model", str(vae_dir), "--data", str(photo_dir),
           "--size", str(SIZE), "--batch-size", "3", "--workers", "0", "--device", "cpu", "--dtype", "float32",
           "--chunk-size", "1", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("scale factor") == 1  # only rank 0 prints the table
    r = json.loads(out.read_text())
    assert r["run"]["world_size"] == 2
    assert_same(r, one_process(vae_dir, photo_dir))


def test_shards_merge_to_the_unsharded_result(vae_dir: Path, photo_dir: Path, tmp_path: Path, cli: Cli,
                                              one_process: Callable[..., dict],
                                              tiny_vae: Callable[..., Path]) -> None:
    parts = []
    for i in range(3):
        parts.append(tmp_path / f"s{i}.json")
        r = one_process(vae_dir, photo_dir, shard=f"{i}/3", batch_size=5, output=str(parts[i]))
        assert r["num_images"] == 8
    assert cli("merge", *parts, "-o", tmp_path / "total.json")[0] == 0
    merged = json.loads((tmp_path / "total.json").read_text())
    assert merged["num_images"] == 24
    assert_same(merged, one_process(vae_dir, photo_dir))

    one_process(tiny_vae(seed=1), photo_dir, shard="1/3", output=str(tmp_path / "other-model.json"))
    one_process(vae_dir, photo_dir, shard="1/3", size=40, output=str(tmp_path / "other-size.json"))
    one_process(vae_dir, photo_dir, limit=6, output=str(tmp_path / "unsharded.json"))
    one_process(vae_dir, photo_dir, limit=6, shard="1/2", output=str(tmp_path / "half.json"))
    for files, says in [(["s0.json", "other-model.json"], "weights_sha256 differs"),
                        (["s0.json", "other-size.json"], "recipe.size differs"),
                        (["s0.json", "s1.json", "s1.json"], "shard 1/3 appears more than once"),
                        (["unsharded.json", "unsharded.json"], "count images twice"),
                        (["s0.json", "half.json"], "different splits")]:
        cli.fails("merge", *(tmp_path / f for f in files), "-o", tmp_path / "bad.json", says=[says])
    assert not (tmp_path / "bad.json").exists()


def wait_for(path: Path, proc: subprocess.Popen, at_least: int) -> int:
    """Poll the checkpoint until it records `at_least` images; its `done` then."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        try:
            done = json.loads(path.read_text())["run"]["done"]
        except (FileNotFoundError, json.JSONDecodeError):  # atomic writes: never a partial file
            done = -1
        if done >= at_least:
            return done
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_equals_uninterrupted(vae_dir: Path, photo_dir: Path, tmp_path: Path,
                                                               cli: Cli, one_process: Callable[..., dict]) -> None:
    """SIGTERM saves and exits 130; SIGKILL loses at most the batches since the last periodic save;
    each --resume continues, and the final result is the uninterrupted one with the same image count."""
    images = list_images(str(photo_dir))[0]
    listing = tmp_path / "many.txt"
    listing.write_text("\n".join(images * 10))  # 240 images: a run of a few seconds
    ckpt, out = tmp_path / "state.json", tmp_path / "resumed.json"
    args = cli.argv("estimate", "--model", vae_dir, "--data", listing, "--size", 48, "--batch-size", 2,
                    "--workers", 0, "--checkpoint", ckpt, "--checkpoint-every", 0.001, "--no-progress", "-o", out,
                    "--dtype", "float32", "--chunk-size", 1)  # as the in-process reference (see one_process)

    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ckpt, first, 2)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    cli.one_line_error(first.returncode, err, says=["continue with --resume"], exit_code=130)
    after_term = json.loads(ckpt.read_text())["run"]["done"]
    assert 0 < after_term < 240

    second = subprocess.Popen([*args, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(ckpt, second, after_term + 20)
    second.kill()
    second.communicate(timeout=60)
    assert second.returncode == -signal.SIGKILL
    after_kill = json.loads(ckpt.read_text())["run"]["done"]
    assert after_term < after_kill < 240
    assert not out.exists()

    third = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=240)
    assert third.returncode == 0, third.stderr
    resumed = json.loads(out.read_text())
    assert resumed["num_images"] == 240
    assert_same(resumed, one_process(vae_dir, listing, size=48, batch_size=2))


def test_resume_refuses_another_model_or_recipe(vae_dir: Path, photo_dir: Path, tmp_path: Path,
                                                one_process: Callable[..., dict],
                                                tiny_vae: Callable[..., Path]) -> None:
    ckpt = tmp_path / "state.json"
    first = one_process(vae_dir, photo_dir, checkpoint=str(ckpt), limit=12)
    saved = json.loads(ckpt.read_text())
    assert saved["kind"] == "latent-scale-checkpoint" and saved["run"]["done"] == 12
    with pytest.raises(InputError, match="weights_sha256 differs"):
        one_process(tiny_vae(seed=1), photo_dir, checkpoint=str(ckpt), resume=True, limit=12)
    with pytest.raises(InputError, match="recipe.seed differs"):
        one_process(vae_dir, photo_dir, checkpoint=str(ckpt), resume=True, limit=12, seed=1)
    # a finished checkpoint resumes to the same answer without encoding anything again
    assert_same(one_process(vae_dir, photo_dir, checkpoint=str(ckpt), resume=True, limit=12), first)

