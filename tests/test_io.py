"""io: strict JSON in, atomic writes that keep modes out, and outputs that never destroy someone's file."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from latent_scale.errors import InputError
from latent_scale.io import (
    check_checkpoint_path,
    check_output,
    read_json,
    read_object,
    to_strict,
    write_atomic,
    write_json,
)

ROOT = os.geteuid() == 0
RESULT = {"schema": 1, "state": {"count": 3}, "scale_factor": 0.2}
CHECKPOINT = {"kind": "latent-scale-checkpoint", "run": {}}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _finishes(call: Callable[[], object], seconds: float = 10.0) -> BaseException | None:
    """Run `call` in a thread; fail (instead of hanging the suite) when it blocks, e.g. on a FIFO."""
    caught: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            caught.append(e)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "blocked (opened a FIFO?)"
    return caught[0] if caught else None


@pytest.fixture
def umask_027() -> Iterator[int]:
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    return path


# --- reading -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_read_json_refuses_nan_and_infinity_tokens(tmp_path: Path, token: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(f'{{"scale_factor": {token}}}')
    with pytest.raises(InputError, match=rf"r\.json is not strict JSON: {token} is not a JSON number"):
        read_json(path)


@pytest.mark.parametrize("data, needle", [
    (b'{"a": "caf\xe9"}', r"is not UTF-8 text \(bad byte at offset 10\)"),
    (b'{"schema": 1, "state": {"cou', r"the file ends early: truncated\?"),
    (b'{"a": 1} trailing', r"is not valid JSON: Extra data \(line 1, column 10\)"),
    (b"[" * 100_000, "nests too deeply"),
])
def test_read_json_refuses_broken_files_in_one_sentence(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(data)
    with pytest.raises(InputError, match=needle) as e:
        read_json(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_read_json_refuses_a_folder_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder; pass a file"):
        read_json(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_json(tmp_path / "nothing.json")


def test_read_json_refuses_a_fifo_without_blocking(fifo: Path) -> None:
    error = _finishes(lambda: read_json(fifo))
    assert isinstance(error, InputError) and "not a regular file" in str(error)


def test_read_json_refuses_a_character_device() -> None:
    with pytest.raises(InputError, match="/dev/null is not a regular file"):
        read_json("/dev/null")


@pytest.mark.parametrize("text, found", [("[1]", "a JSON array"), ("null", "null"), ('"x"', "a JSON string")])
def test_read_object_refuses_a_top_level_non_object(tmp_path: Path, text: str, found: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"config\.json is not a diffusers config: it holds {found} where"):
        read_object(path, "diffusers config")


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
        check_output("/dev/null", force=force)


def test_output_onto_a_fifo_is_refused_without_blocking(fifo: Path) -> None:
    error = _finishes(lambda: check_output(fifo, force=True))
    assert isinstance(error, InputError) and "not a regular file" in str(error)


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


def test_output_onto_a_models_config_is_refused_unless_forced(vae_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes((vae_dir / "config.json").read_bytes())
    with pytest.raises(InputError, match=r"config\.json exists and is not a latent-scale result; .*--force"):
        check_output(config)
    check_output(config, force=True)


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


def test_plot_output_replaces_a_picture_but_not_a_result(tmp_path: Path) -> None:
    (tmp_path / "hist.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    check_output(tmp_path / "hist.png", what="-o", kind="plot")
    write_json(tmp_path / "r.json", RESULT)
    with pytest.raises(InputError, match="-o .*r.json exists and is not a latent-scale plot"):
        check_output(tmp_path / "r.json", what="-o", kind="plot")


def test_existing_checkpoint_without_resume_is_refused_naming_resume_and_force(tmp_path: Path) -> None:
    ckpt = tmp_path / "state.json"
    check_checkpoint_path(ckpt, resume=False, force=False)  # nothing there yet
    write_json(ckpt, CHECKPOINT)
    with pytest.raises(InputError, match="already exists; pass --resume to continue it, or --force"):
        check_checkpoint_path(ckpt, resume=False, force=False)
    check_checkpoint_path(ckpt, resume=True, force=False)
    check_checkpoint_path(ckpt, resume=False, force=True)
    ckpt.write_text(json.dumps(RESULT))
    with pytest.raises(InputError, match="is not a latent-scale checkpoint"):
        check_checkpoint_path(ckpt, resume=True, force=False)
