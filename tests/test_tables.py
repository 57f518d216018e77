"""Tables: parquet files and saved Hugging Face datasets give exactly the pixels of the same photographs
read from files; a corrupt row is one bad unit; hub datasets offline are one sentence."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from latent_scale.errors import InputError
from latent_scale.options import Options
from latent_scale.sources.images import open_rgb, preprocess
from latent_scale.sources.tables import DatasetSource

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
SIZE = 32


@pytest.fixture(scope="module")
def photos(photo_set: Callable[..., Path]) -> list[Path]:
    """7 photographs of 48 px, in the order they were written."""
    return sorted(photo_set(7, size=48).rglob("*.png"), key=lambda path: path.name)


def expected(paths: list[Path]) -> list[torch.Tensor]:
    """The same photographs as image files through the classic recipe."""
    return [preprocess(SIZE)(open_rgb(p)) for p in paths]


def assert_same_pixels(source: DatasetSource, paths: list[Path]) -> None:
    assert len(source) == len(paths)
    for k, want in enumerate(expected(paths)):
        assert torch.equal(source.load(k)[0], want)


def test_parquet_binary_column_equals_the_image_files(tmp_path: Path, photos: list[Path],
                                                      options: Callable[..., Options]) -> None:
    table = pa.table({"label": list(range(len(photos))), "png": [p.read_bytes() for p in photos]})
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=3)
    source = DatasetSource.open(str(tmp_path / "train.parquet"), options())
    assert source.table.column == "png" and source.ids[4] == "train.parquet#4"
    assert_same_pixels(source, photos)
    assert source.recipe()["column"] == "png" and source.kind == "dataset"


def test_parquet_glob_of_hf_image_structs(tmp_path: Path, photos: list[Path], options: Callable[..., Options]) -> None:
    cells = [{"bytes": p.read_bytes(), "path": p.name} for p in photos]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"image": cells[:4], "text": ["a"] * 4}), tmp_path / "data/train-0.parquet")
    pq.write_table(pa.table({"image": cells[4:], "text": ["b"] * 3}), tmp_path / "data/train-1.parquet")
    assert DatasetSource.accepts(str(tmp_path / "data"), options())
    source = DatasetSource.open(str(tmp_path / "data/*.parquet"), options())
    assert source.ids[4] == "train-1.parquet#0"
    assert_same_pixels(source, photos)


def test_saved_dataset_folder_equals_the_image_files(tmp_path: Path, photos: list[Path],
                                                     options: Callable[..., Options]) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": p.read_bytes(), "path": None} for p in photos],
                                     "label": list(range(len(photos)))}, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    source = DatasetSource.open(str(tmp_path / "saved"), options())
    assert source.table.column == "image"
    assert_same_pixels(source, photos)


def test_column_choice_and_no_image_column(tmp_path: Path, photos: list[Path], options: Callable[..., Options]) -> None:
    data = [p.read_bytes() for p in photos[:2]]
    pq.write_table(pa.table({"blob": [b"not an image", b"x"], "photo": data}), tmp_path / "t.parquet")
    assert DatasetSource.open(str(tmp_path / "t.parquet"), options()).table.column == "photo"
    with pytest.raises(InputError, match=r"--column nope is not a column .* it has blob \(binary\), photo"):
        DatasetSource.open(str(tmp_path / "t.parquet"), options(column="nope"))
    pq.write_table(pa.table({"caption": ["a", "b"], "blob": [b"\x00", b"\x01"]}), tmp_path / "u.parquet")
    with pytest.raises(InputError, match=r"found no image column .*caption \(string\), blob \(binary\)"):
        DatasetSource.open(str(tmp_path / "u.parquet"), options())


def test_corrupt_row_fails_alone_in_one_line(tmp_path: Path, photos: list[Path],
                                             options: Callable[..., Options]) -> None:
    data = [p.read_bytes() for p in photos[:3]]
    data[1] = data[1][:200]
    pq.write_table(pa.table({"image": data}), tmp_path / "t.parquet")
    source = DatasetSource.open(str(tmp_path / "t.parquet"), options())
    with pytest.raises(OSError) as e:
        source.load(1)
    assert "\n" not in str(e.value)
    assert torch.equal(source.load(2)[0], expected(photos[2:3])[0])


def test_hub_dataset_offline_is_one_sentence(options: Callable[..., Options]) -> None:
    with pytest.raises(InputError, match=r"cannot list hf://org/name:test on the Hugging Face hub .*pass them"):
        DatasetSource.open("hf://org/name:test", options())
    assert DatasetSource.accepts("hf://org/name", options())


def test_dataset_dict_folder_asks_for_a_split(tmp_path: Path, options: Callable[..., Options]) -> None:
    (tmp_path / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    with pytest.raises(InputError, match="holds the splits train, test; pass one"):
        DatasetSource.open(str(tmp_path), options())


def test_fifo_among_parquet_files_is_refused_without_blocking(tmp_path: Path, photos: list[Path],
                                                              options: Callable[..., Options],
                                                              finishes: Callable[..., Any]) -> None:
    pq.write_table(pa.table({"png": [p.read_bytes() for p in photos[:2]]}), tmp_path / "a.parquet")
    os.mkfifo(tmp_path / "b.parquet")

    def opened() -> str:
        try:
            DatasetSource.open(str(tmp_path / "*.parquet"), options())
        except InputError as e:
            return str(e)
        return "opened"

    assert "b.parquet as parquet (not a regular file" in finishes(opened)


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_a_path_row_is_read_only_when_it_is_a_regular_file(tmp_path: Path, photos: list[Path], target: str,
                                                           options: Callable[..., Options],
                                                           finishes: Callable[..., Any]) -> None:
    """{bytes: null, path: FIFO} blocked forever; /dev/zero read until memory ran out."""
    from latent_scale.sources.batches import UnitDataset

    path = tmp_path / "pipe" if target == "fifo" else Path(target)
    if target == "fifo":
        os.mkfifo(path)
    cells = [{"bytes": photos[0].read_bytes(), "path": None}, {"bytes": None, "path": str(path)}]
    pq.write_table(pa.table({"image": cells}), tmp_path / "t.parquet")
    source = DatasetSource.open(str(tmp_path / "t.parquet"), options())
    reason = finishes(lambda: UnitDataset(source, [1])[0][2])
    assert "not a regular file" in reason and "\n" not in reason
    assert torch.equal(source.load(0)[0], expected(photos[:1])[0])


DAMAGED = {"state.json not JSON": ("state.json", "{oops", "is not valid JSON"),
           "state.json a list": ("state.json", "[1]", "where an object is expected"),
           "a data file outside the folder": ("state.json", '{"_data_files": [{"filename": "../x.arrow"}]}',
                                              "'_data_files' is not a list of {filename: a file in this folder}"),
           "no splits": ("dataset_dict.json", '{"splits": []}', "names no splits")}


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_saved_dataset_is_one_sentence(tmp_path: Path, damage: str, options: Callable[..., Options]) -> None:
    name, text, says = DAMAGED[damage]
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=re.escape(says)):
        DatasetSource.open(str(tmp_path), options())
