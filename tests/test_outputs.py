"""outputs: atomic writes that keep modes, and the one rule for where any command's output may go."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from latent_scale.errors import InputError
from latent_scale.outputs import (
    check_checkpoint_path,
    check_folder_output,
    check_output,
    plot_mark,
    run_inputs,
    to_strict,
    write_atomic,
    write_json,
)
from latent_scale.reading import read_json

ROOT = os.geteuid() == 0
RESULT = {"schema": 1, "state": {"count": 3}, "scale_factor": 0.2}
CHECKPOINT = {"kind": "latent-scale-checkpoint", "run": {}}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027() -> Iterator[int]:
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


# --- writing -----------------------------------------------------------------------------------------------------

def test_to_strict_turns_every_non_finite_float_into_none() -> None:
    inf = math.inf
    obj = {"a": math.nan, "b": [1.5, -inf, {"c": inf}], "d": (2, math.nan), "e": "NaN", "f": True, "g": 3}
    assert to_strict(obj) == {"a": None, "b": [1.5, None, {"c": None}], "d": [2, None], "e": "NaN", "f": True,
                              "g": 3}


def test_write_json_writes_strict_json_with_null_for_nan(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json(path, {"scale_factor": math.nan, "ci": [math.inf, 0.25]})
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert read_json(path) == {"scale_factor": None, "ci": [None, 0.25]}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_write_keeps_an_existing_files_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "r.json"
    path.write_text("{}")
    path.chmod(mode)
    write_json(path, RESULT)
    assert _mode(path) == mode and read_json(path) == RESULT


def test_write_gives_a_new_file_the_umask_mode(tmp_path: Path, umask_027: int) -> None:
    reference = tmp_path / "made-by-open"
    reference.write_text("")  # open() applies the umask: the mode a user expects
    write_json(tmp_path / "new.json", RESULT)
    assert _mode(tmp_path / "new.json") == _mode(reference) == umask_027


@pytest.mark.skipif(not ROOT, reason="only root may give a file to another owner")
def test_write_as_root_keeps_the_owner(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chown(path, 1234, 4321)
    write_json(path, RESULT)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1234, 4321)


def test_write_atomic_gives_a_backup_the_mode_of_its_source(tmp_path: Path, umask_027: int) -> None:
    source = tmp_path / "config.json"
    source.write_text("{}")
    source.chmod(0o600)  # a private config's backup stays private
    write_atomic(tmp_path / "config.json.bak", b"{}", like=source)
    assert _mode(tmp_path / "config.json.bak") == 0o600


def _no_temp_left(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_onto_a_folder_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match=r"cannot write .*out: it is a folder; pass a file name"):
        write_json(tmp_path / "out", RESULT)
    _no_temp_left(tmp_path)


def test_write_with_a_name_too_long_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="the name is too long for its file system"):
        write_json(tmp_path / ("x" * 300 + ".json"), RESULT)
    _no_temp_left(tmp_path)


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders; see the errno test below")
def test_write_into_a_read_only_folder_is_one_sentence(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="permission denied"):
            write_json(folder / "r.json", RESULT)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("fails, code, needle", [
    ("write", errno.ENOSPC, "the disk is full"),
    ("fsync", errno.EDQUOT, "the disk is full"),
    ("replace", errno.EACCES, "permission denied"),
    ("replace", errno.EROFS, "permission denied"),
])
def test_write_failures_are_one_sentence_and_keep_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               fails: str, code: int, needle: str) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"old": true}')

    def refuse(*args: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, fails, refuse)
    with pytest.raises(InputError, match=needle):
        write_json(path, RESULT)
    monkeypatch.undo()
    assert read_json(path) == {"old": True}
    _no_temp_left(tmp_path)


# --- where outputs may go ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("force", [False, True])
def test_output_onto_a_folder_or_device_is_refused_even_with_force(tmp_path: Path, force: bool) -> None:
    with pytest.raises(InputError, match="--output .* is a folder"):
        check_output(tmp_path, force=force)
    with pytest.raises(InputError, match="--output /dev/null is not a regular file"):
        check_output("/dev/null", force=force)  # refused before anything is opened or written


def test_output_onto_a_fifo_is_refused_without_blocking(tmp_path: Path, finishes: Callable[..., Any]) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    refused = finishes(lambda: pytest.raises(InputError, check_output, tmp_path / "pipe.json", force=True))
    assert "not a regular file" in str(refused.value)


@pytest.mark.parametrize("spelling", ["same", "dot-dot", "symlink", "hard link"])
def test_output_onto_an_input_is_refused_even_with_force(tmp_path: Path, spelling: str) -> None:
    shard = tmp_path / "a.json"
    write_json(shard, RESULT)
    out = {"same": shard, "dot-dot": tmp_path / ".." / tmp_path.name / "a.json"}.get(spelling, tmp_path / "o.json")
    if spelling == "symlink":
        out.symlink_to(shard)
    elif spelling == "hard link":
        os.link(shard, out)
    with pytest.raises(InputError, match=r"is also an input of this command"):
        check_output(out, inputs=[tmp_path / "b.json", shard], force=True)


def test_output_equal_to_the_runs_checkpoint_is_refused_before_either_exists(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is also an input"):
        check_output(tmp_path / "state.json", inputs=[f"{tmp_path}/./state.json"])


def test_output_onto_a_config_is_refused_unless_forced_and_never_inside_an_input_folder(vae_dir: Path,
                                                                                        tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes((vae_dir / "config.json").read_bytes())
    with pytest.raises(InputError, match=r"config\.json exists and is not a latent-scale result; .*--force"):
        check_output(config)
    check_output(config, force=True)  # a stray config no command reads
    with pytest.raises(InputError, match=rf"is inside {tmp_path}, an input of this command"):
        check_output(config, folders=[tmp_path], force=True)
    write_json(tmp_path / "r.json", RESULT)
    check_output(tmp_path / "r.json", folders=[tmp_path])  # a result of ours beside the data is replaced
    check_output(tmp_path / "new.json", folders=[tmp_path])


def test_output_may_replace_results_and_sweeps_but_kinds_do_not_mix(tmp_path: Path) -> None:
    check_output(tmp_path / "new.json")
    write_json(tmp_path / "r.json", RESULT)
    write_json(tmp_path / "sweep.json", [RESULT, RESULT])
    write_json(tmp_path / "ckpt.json", CHECKPOINT)
    check_output(tmp_path / "r.json")
    check_output(tmp_path / "sweep.json")
    check_output(tmp_path / "ckpt.json", what="--checkpoint", kind="checkpoint")
    with pytest.raises(InputError, match="is not a latent-scale result"):
        check_output(tmp_path / "ckpt.json")
    with pytest.raises(InputError, match="is not a latent-scale checkpoint"):
        check_output(tmp_path / "r.json", what="--checkpoint", kind="checkpoint")


MARKED = ["png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "gif", "webp"]


@pytest.fixture(scope="module")
def figure() -> Any:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


@pytest.mark.parametrize("fmt", MARKED)
def test_a_plot_is_recognised_by_its_mark_not_its_format(figure: Any, tmp_path: Path, fmt: str) -> None:
    """The same picture drawn by matplotlib for someone else is not ours; signed by plot_mark it is."""
    theirs, ours = tmp_path / f"theirs.{fmt}", tmp_path / f"ours.{fmt}"
    figure.savefig(theirs, format=fmt)
    figure.savefig(ours, format=fmt, **plot_mark(fmt))
    check_output(ours, what="-o", kind="plot")
    with pytest.raises(InputError, match=rf"-o .*theirs\.{fmt} exists and is not a latent-scale plot"):
        check_output(theirs, what="-o", kind="plot")
    with pytest.raises(InputError, match="is not a latent-scale result"):
        check_output(ours)


def test_photos_and_other_files_are_no_plots(tmp_path: Path) -> None:
    from PIL import Image, PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Software", "latent-scale 1.0")  # the name elsewhere is not the mark
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png", pnginfo=text)
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg", comment="latent-scaled")
    (tmp_path / "fake.pdf").write_bytes(b"%PDF-1.4\n/Creator (latent-scaler)\n")
    (tmp_path / "fake.svgz").write_bytes(b"\x1f\x8b\x08broken")
    write_json(tmp_path / "r.png", RESULT)
    for name in ("photo.png", "photo.jpg", "fake.pdf", "fake.svgz", "r.png"):
        with pytest.raises(InputError, match="is not a latent-scale plot"):
            check_output(tmp_path / name, what="-o", kind="plot")


def test_formats_that_cannot_carry_the_mark_are_not_drawn() -> None:
    assert [fmt for fmt in ("raw", "rgba", "pgf") if plot_mark(fmt)] == []


def test_existing_checkpoint_without_resume_is_refused_naming_resume_and_force(tmp_path: Path) -> None:
    ckpt = tmp_path / "state.json"
    check_checkpoint_path(ckpt, resume=False, force=False)  # nothing there yet
    write_json(ckpt, CHECKPOINT)
    with pytest.raises(InputError, match="already exists; pass --resume to continue it, or --force"):
        check_checkpoint_path(ckpt, resume=False, force=False)
    check_checkpoint_path(ckpt, resume=True, force=False)
    check_checkpoint_path(ckpt, resume=False, force=True)


@pytest.mark.parametrize("name, content", [("config.json", b'{"_class_name": "AutoencoderKL"}'),
                                           ("r.json", json.dumps(RESULT).encode()),
                                           ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(16))])
def test_checkpoint_force_replaces_only_a_checkpoint(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    for resume, force in ((False, True), (True, False), (True, True)):
        with pytest.raises(InputError, match=r"is not a latent-scale checkpoint; .*--force replaces only a checkp"):
            check_checkpoint_path(tmp_path / name, resume=resume, force=force)


def test_a_place_nothing_can_be_written_is_refused_before_any_work(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"cannot write -o .*file/sub/r\.json: .*file is a file, not a folder"):
        check_output(tmp_path / "file" / "sub" / "r.json", what="-o")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what a read-only folder answers (not as root)
    with pytest.raises(InputError, match=r"cannot write -o .*new/r\.json: permission denied in "):
        check_output(tmp_path / "new" / "r.json", what="-o")


@pytest.mark.skipif(ROOT, reason="root may write into read-only folders")
def test_a_read_only_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(InputError, match="permission denied in"):
        check_output(tmp_path / "ro" / "r.json")


def test_save_latents_folder_is_a_new_or_existing_folder_outside_the_inputs(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    (data / "a").mkdir(parents=True)
    (tmp_path / "file").write_text("")
    check_folder_output(tmp_path / "cache", folders=[data])
    check_folder_output(tmp_path, inputs=[data / "list.txt"], folders=[data])  # a folder above the data
    with pytest.raises(InputError, match="--save-latents .*file exists and is not a folder"):
        check_folder_output(tmp_path / "file")
    for inside in (data, data / "a", data / "new"):
        with pytest.raises(InputError, match="is an input of this command .* or inside one"):
            check_folder_output(inside, folders=[data])


def test_run_inputs_are_the_model_the_data_and_a_lists_entries(vae_dir: Path, tmp_path: Path) -> None:
    from latent_scale.options import Options

    listing = tmp_path / "list.txt"
    listing.write_text("a.png\n# note\nhttps://example.com/b.png\n/abs/c.png\n")
    assert run_inputs(Options(model=str(vae_dir), data=str(listing))) == (
        [str(listing), str(tmp_path / "a.png"), "/abs/c.png"], [str(vae_dir)])
    files, folders = run_inputs(Options(model="org/vae", latents=f"{tmp_path}/shards/**/*.npy"))
    import huggingface_hub.constants as hf

    assert (files, folders) == ([], [str(tmp_path / "shards"), hf.HF_HUB_CACHE])
    assert run_inputs(Options(latents=str(tmp_path))) == ([], [str(tmp_path)])  # no --model: no model read


def test_an_unwritable_save_latents_folder_is_named_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal named a file the user never gave ("--save-latents DIR/x")."""
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # what a read-only folder answers (not as root)
    with pytest.raises(InputError, match=r"cannot write --save-latents \S*/saved: permission denied in "):
        check_folder_output(tmp_path / "saved")
