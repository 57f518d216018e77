"""reading: regular files only (a FIFO never blocks), strict JSON, one sentence naming the file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from latent_scale.errors import InputError
from latent_scale.reading import read_json, read_object


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


def test_read_json_refuses_a_fifo_without_blocking(tmp_path: Path, finishes: Callable[..., Any]) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    refused = finishes(lambda: pytest.raises(InputError, read_json, tmp_path / "pipe.json"))
    assert "not a regular file" in str(refused.value)


def test_read_json_refuses_a_character_device() -> None:
    with pytest.raises(InputError, match="/dev/null is not a regular file"):
        read_json("/dev/null")


@pytest.mark.parametrize("text, found", [("[1]", "a JSON array"), ("null", "null"), ('"x"', "a JSON string")])
def test_read_object_refuses_a_top_level_non_object(tmp_path: Path, text: str, found: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"config\.json is not a diffusers config: it holds {found} where"):
        read_object(path, "diffusers config")
