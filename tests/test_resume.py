"""Resuming and sizes: a checkpoint records every size of its run, and a resume with another --size list
is refused in one sentence naming the list to use, never mixing units encoded at one size into another's
statistics, dropping a size or ending in an IndexError. The same list continues to the uninterrupted numbers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Cli


@pytest.fixture
def run(vae_dir: Path, photo_dir: Path, tmp_path: Path, cli: Cli) -> Callable[..., tuple[int, str, str]]:
    """`run(sizes, *more)`: estimate on the photographs at `sizes`, checkpointing into tmp_path/ck.json."""
    def go(sizes: str, *more: Any) -> tuple[int, str, str]:
        return cli("estimate", "--model", vae_dir, "--data", photo_dir, "--size", sizes, "--workers", 0,
                   "--batch-size", 4, "--no-progress", "--checkpoint", tmp_path / "ck.json", *more)

    return go


@pytest.fixture
def ctrl_c_after(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """`ctrl_c_after(n)`: the next run is interrupted (as by Ctrl-C) after n batches, then runs normally."""
    from latent_scale.loop import Accumulate

    step = Accumulate.__call__

    def arm(batches: int) -> None:
        calls = itertools.count()

        def counted(self: Accumulate, batch: Any) -> None:
            if next(calls) == batches:
                monkeypatch.setattr(Accumulate, "__call__", step)
                raise KeyboardInterrupt
            step(self, batch)

        monkeypatch.setattr(Accumulate, "__call__", counted)

    return arm


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """Where `run` checkpoints."""
    return tmp_path / "ck.json"


def _saved(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_interrupted_size_list_resumed_with_another_list_is_refused(run: Callable[..., Any], checkpoint: Path,
                                                                    ctrl_c_after: Callable[[int], None],
                                                                    cli: Cli) -> None:
    """The reported case: 48,32 stopped early, resumed as 48,16, mixed 32 px latents into the 16 px result."""
    ctrl_c_after(2)
    assert run("48,32")[0] == 130
    before = checkpoint.read_bytes()
    assert _saved(checkpoint)["run"]["done"] == 8 and _saved(checkpoint)["fingerprint"]["sizes"] == [48, 32]
    code, _, err = run("48,16", "--resume")
    cli.one_line_error(code, err, ["holds sizes 48,32; resume with --size 48,32"])
    assert checkpoint.read_bytes() == before


def test_finished_single_size_checkpoint_resumed_with_a_list_is_refused(run: Callable[..., Any], checkpoint: Path,
                                                                        cli: Cli) -> None:
    """Was: exit 0 with the size-32 result alone, the 16 asked for silently dropped."""
    assert run("32")[0] == 0
    before = checkpoint.read_bytes()
    code, _, err = run("32,16", "--resume")
    cli.one_line_error(code, err, ["holds size 32; resume with --size 32"])
    assert checkpoint.read_bytes() == before


def test_interrupted_single_size_checkpoint_resumed_with_a_list_is_refused(run: Callable[..., Any],
                                                                           ctrl_c_after: Callable[[int], None],
                                                                           cli: Cli) -> None:
    """Was: an IndexError traceback from the second size's missing statistics."""
    ctrl_c_after(1)
    assert run("32")[0] == 130
    code, _, err = run("16,32", "--resume")
    cli.one_line_error(code, err, ["holds size 32; resume with --size 32"])


def test_resume_with_the_same_list_gives_every_size_as_uninterrupted(run: Callable[..., Any], checkpoint: Path,
                                                                     ctrl_c_after: Callable[[int], None],
                                                                     tmp_path: Path) -> None:
    assert run("48,32", "-o", tmp_path / "whole.json")[0] == 0
    checkpoint.unlink()
    ctrl_c_after(3)
    assert run("48,32")[0] == 130
    code, _, err = run("48,32", "--resume", "-o", tmp_path / "resumed.json")
    assert code == 0, err
    whole, resumed = (_saved(tmp_path / name) for name in ("whole.json", "resumed.json"))
    assert [r["recipe"]["size"] for r in resumed] == [48, 32]
    for a, b in zip(whole, resumed, strict=True):
        assert b["num_images"] == a["num_images"] == 24
        assert b["scale_factor"] == pytest.approx(a["scale_factor"], rel=1e-9)


@pytest.mark.parametrize("sizes, needle", [([48, 32, 16], "run.stats holds 2 entries for the 3 sizes"),
                                           ("48", "fingerprint.sizes is '48', not a list of sizes")])
def test_a_damaged_sizes_record_is_refused(run: Callable[..., Any], checkpoint: Path,
                                           ctrl_c_after: Callable[[int], None], cli: Cli, sizes: Any,
                                           needle: str) -> None:
    ctrl_c_after(1)
    assert run("48,32")[0] == 130
    doc = _saved(checkpoint)
    doc["fingerprint"]["sizes"] = sizes
    checkpoint.write_text(json.dumps(doc))
    shown = ",".join(map(str, sizes)) if isinstance(sizes, list) else sizes
    code, _, err = run(shown, "--resume")
    cli.one_line_error(code, err, [needle])
