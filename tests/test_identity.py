"""Identity by content, not spelling: one model at two spellings is one model, other weights at
one path are another; the data list is compared relative to its root and differences are named."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from latent_scale import identity
from latent_scale.identity import (
    data_identity,
    describe_id_difference,
    model_identity,
    pack_ids,
    result_difference,
    unpack_ids,
)


def folder_info(source: str, subfolder: str | None = None) -> dict[str, Any]:
    return {"source": source, "source_kind": "folder", "subfolder": subfolder, "revision": None,
            "variant": None, "class": "AutoencoderKL"}


def loaded_config(folder: Path) -> dict[str, Any]:
    """What diffusers' vae.config holds, with the spelling it was loaded by in _name_or_path."""
    return {**json.loads((folder / "config.json").read_text()), "_name_or_path": str(folder)}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_model_at_two_spellings_is_one_identity(vae_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(vae_dir.parent)
    relative = f"./{vae_dir.name}"
    a = model_identity(folder_info(relative), loaded_config(Path(relative)), tmp_path)
    b = model_identity(folder_info(f"{vae_dir}/"), loaded_config(vae_dir), tmp_path)
    assert a == b
    weights = sha256_of(vae_dir / "diffusion_pytorch_model.safetensors")
    assert a["weights_sha256"] == hashlib.sha256(f"diffusion_pytorch_model.safetensors:{weights}".encode()).hexdigest()


def test_other_weights_at_the_same_path_are_another_model(tmp_path: Path, tiny_vae: Callable[..., Path]) -> None:
    folder = Path(shutil.copytree(tiny_vae(seed=0), tmp_path / "vae"))
    before = model_identity(folder_info(str(folder)), loaded_config(folder), tmp_path / "cache")
    shutil.copytree(tiny_vae(seed=1), folder, dirs_exist_ok=True)  # same config, other weights
    after = model_identity(folder_info(str(folder)), loaded_config(folder), tmp_path / "cache")
    assert before["config_sha256"] == after["config_sha256"]
    assert before["weights_sha256"] != after["weights_sha256"]


def test_weight_hashes_are_cached_so_a_second_run_reads_nothing(vae_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    first = model_identity(folder_info(str(vae_dir)), loaded_config(vae_dir), tmp_path)
    cached = json.loads((tmp_path / "weights-hashes.json").read_text())
    real = os.path.realpath(vae_dir / "diffusion_pytorch_model.safetensors")
    assert list(cached.values()) == [sha256_of(Path(real))] and next(iter(cached)).startswith(f"{real}|")

    def no_reading(path: str) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(identity, "file_sha256", no_reading)
    assert model_identity(folder_info(str(vae_dir)), loaded_config(vae_dir), tmp_path) == first


def test_weights_prefetched_while_the_model_loads_give_the_same_identity(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline folder: its vae/ weights hash in the background; the identity is the independent sha256
    of the file's bytes, and a file rewritten after the prefetch is hashed again, not taken from it."""
    monkeypatch.setattr(identity, "_PENDING", {})  # prefetches of other tests' failed loads are not this one's
    weights = tmp_path / "pipe" / "vae" / "diffusion_pytorch_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"first weights")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    info = folder_info(str(tmp_path / "pipe"), "vae")

    def expected(content: bytes) -> str:
        return hashlib.sha256(f"{weights.name}:{hashlib.sha256(content).hexdigest()}".encode()).hexdigest()

    identity.prefetch_weight_hashes(str(tmp_path / "pipe"), None, tmp_path / "cache")
    assert len(identity._PENDING) == 1
    assert model_identity(info, {}, tmp_path / "cache")["weights_sha256"] == expected(b"first weights")
    assert identity._PENDING == {}
    identity.prefetch_weight_hashes(str(tmp_path / "pipe"), "vae", tmp_path / "cache")
    assert identity._PENDING == {}  # cached: nothing to hash
    weights.write_bytes(b"other weights, longer")
    identity.prefetch_weight_hashes(str(tmp_path / "pipe"), "vae", tmp_path / "cache")
    weights.write_bytes(b"third weights, longest")  # changed again after the prefetch started
    assert model_identity(info, {}, tmp_path / "cache")["weights_sha256"] == expected(b"third weights, longest")


def test_damaged_hash_cache_is_rebuilt(vae_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "weights-hashes.json").write_text("[not json")
    out = model_identity(folder_info(str(vae_dir)), loaded_config(vae_dir), tmp_path)
    assert json.loads((tmp_path / "weights-hashes.json").read_text())  # rewritten
    assert out == model_identity(folder_info(str(vae_dir)), loaded_config(vae_dir), tmp_path / "fresh")


def test_single_file_identity_is_its_content_not_its_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "copy.safetensors"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    info = {"source": str(a), "source_kind": "file", "class": "AutoencoderKL"}
    ida = model_identity(info, {"latent_channels": 4}, tmp_path)
    idb = model_identity({**info, "source": str(b)}, {"latent_channels": 4}, tmp_path)
    assert ida == idb
    assert ida["weights_sha256"] == hashlib.sha256(f":{hashlib.sha256(b'weights').hexdigest()}".encode()).hexdigest()


def test_config_hash_ignores_bookkeeping_but_not_values() -> None:
    base = {"latent_channels": 4, "scaling_factor": 0.5}
    same = {**base, "_name_or_path": "/elsewhere", "_diffusers_version": "0.1"}
    assert identity.config_sha256(base) == identity.config_sha256(same)
    assert identity.config_sha256(base) != identity.config_sha256({**base, "scaling_factor": 0.25})


def test_hub_identity_is_the_cached_commit(tmp_path: Path) -> None:
    """The conftest points the Hugging Face cache into tmp_path; lay out one snapshot there."""
    import huggingface_hub.constants as hf

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(hf.HF_HUB_CACHE) / "models--org--vae"
    (repo / "snapshots" / commit / "vae").mkdir(parents=True)
    (repo / "snapshots" / commit / "vae" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    info = {"source": "org/vae", "source_kind": "hub", "subfolder": "vae", "revision": None, "class": "AutoencoderKL"}
    assert model_identity(info, {}, tmp_path)["commit"] == commit


def test_data_identity_is_relative_to_its_root() -> None:
    ids = ["class0/a.png", "class1/b.png"]
    spelled = data_identity([f"photos/{i}" for i in ids], "./photos", "sig")  # as a folder scan lists them
    absolute = data_identity([f"/data/photos/{i}" for i in ids], "/data/photos", "sig")
    assert spelled == absolute
    assert spelled == {"count": 2, "ids_sha256": hashlib.sha256(b"class0/a.png\nclass1/b.png").hexdigest(),
                       "signature": "sig"}
    assert data_identity(["photos/class0/a.png"], "./photos", "sig") != spelled


def test_changed_image_list_names_how_many_and_the_first() -> None:
    old = [f"img{k:03d}.png" for k in range(50)]
    new = [i for i in old if i != "img010.png"] + ["img100.png", "img101.png"]
    assert describe_id_difference(old, new) == (
        "3 images differ from the checkpoint's list; the first is img010.png (no longer in the data)")
    assert describe_id_difference(old[:-1], old, "clip") == (
        "1 clips differ from the checkpoint's list; the first is img049.png (not in the checkpoint's list)")


def test_packed_ids_round_trip_and_stay_small() -> None:
    ids = [f"train/n{k // 1000:08d}/ILSVRC_{k:08d}.JPEG" for k in range(13394)]
    packed = pack_ids(ids)
    assert unpack_ids(packed) == ids
    assert len(packed) < len("\n".join(ids)) / 5
    assert unpack_ids("not base64!") is None and unpack_ids(pack_ids([])) == []


def result_like(source: str, data: str, model_id: dict | None, data_id: dict | None) -> dict[str, Any]:
    model = {"source": source, "source_kind": "folder", "class": "AutoencoderKL", "variant": None}
    recipe = {"data": data, "size": 32}
    if model_id is not None:
        model["identity"] = model_id
    if data_id is not None:
        recipe["data_identity"] = data_id
    return {"model": model, "recipe": recipe}


def test_results_compare_by_content_where_both_carry_identities() -> None:
    mid, did = {"class": "AutoencoderKL", "weights_sha256": "w"}, {"count": 2, "ids_sha256": "i", "signature": "s"}
    a = result_like("./vae", "./photos", mid, did)
    assert result_difference(a, result_like("/abs/vae/", "/abs/photos", mid, {**did, "signature": "t"})) is None
    other = result_like("./vae", "./photos", {**mid, "weights_sha256": "x"}, did)
    assert result_difference(a, other) == "model.identity.weights_sha256 differs ('w' vs 'x')"
    assert result_difference(result_like("./vae", "p", None, None), result_like("/abs/vae", "p", None, None)) == (
        "model.source differs ('./vae' vs '/abs/vae')")
