"""--latents: every file format and layout gives exactly the arrays written, and statistics equal to numpy's
float64 ones; bad files are single units that fail in one line, never the run."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import latent_scale
from latent_scale.errors import InputError
from latent_scale.loop import Accumulate
from latent_scale.options import Options
from latent_scale.sources.latents import LatentSource
from latent_scale.state import Run
from latent_scale.stats import noise

if TYPE_CHECKING:
    from conftest import Cli

C = 4
pytestmark = pytest.mark.filterwarnings("ignore:skipping")


def save(path: Path, tensors: dict[str, np.ndarray] | np.ndarray) -> Path:
    """One file in the format its suffix names; a dict holds several named tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    named = tensors if isinstance(tensors, dict) else {"latent": tensors}
    if path.suffix == ".npy":
        np.save(path, tensors)
    elif path.suffix == ".npz":
        np.savez_compressed(path, **named)
    elif path.suffix == ".safetensors":
        save_file({k: np.ascontiguousarray(v) for k, v in named.items()}, str(path))
    else:
        obj = {k: torch.from_numpy(v) for k, v in named.items()}
        torch.save(obj if isinstance(tensors, dict) else obj["latent"], path)
    return path


def latents(count: int, shape: tuple[int, ...] = (C, 8, 8), seed: int = 0) -> list[np.ndarray]:
    """Latent-like arrays with a large offset, so a cancelling variance formula would show."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * 2.5 + 40.0).astype(np.float32) for _ in range(count)]


def assert_matches_numpy(run: Run, arrays: list[np.ndarray], key: str = "mode") -> None:
    """Global mean, ddof=1 std, 1/std and per-channel values against numpy float64, to 1e-12."""
    est = run.stats[0].estimates()[key]
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    channels = [np.concatenate([a[c].astype(np.float64).ravel() for a in arrays]) for c in range(arrays[0].shape[0])]
    np.testing.assert_allclose(est["std"], flat.std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(est["mean"], flat.mean(), rtol=1e-12)
    np.testing.assert_allclose(est["scale_factor"], 1 / flat.std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(est["per_channel"]["mean"], [c.mean() for c in channels], rtol=1e-12)
    np.testing.assert_allclose(est["per_channel"]["std"], [c.std(ddof=1) for c in channels], rtol=1e-12)


FORMATS = [".npy", ".npz", ".safetensors", ".pt"]


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("layout", ["single", "batch"])
def test_every_format_and_layout_equals_numpy(tmp_path: Path, suffix: str, layout: str,
                                              options: Callable[..., Options], accumulate: Callable[..., Run]) -> None:
    arrays = latents(6)
    if layout == "single":
        for k, a in enumerate(arrays):
            save(tmp_path / f"d/{k:02d}{suffix}", a)
    else:
        save(tmp_path / f"d/a{suffix}", np.stack(arrays[:4]))
        save(tmp_path / f"d/b{suffix}", np.stack(arrays[4:]))
    source = LatentSource.open(str(tmp_path / "d"), options("latents"))
    assert len(source) == 6 and source.uniform and source.shapes() == {"4x8x8": 6}
    for k, a in enumerate(arrays):
        assert torch.equal(source.load(k), torch.from_numpy(a))
    assert_matches_numpy(accumulate(source), arrays)
    if layout == "batch":
        assert source.ids[:2] == [f"a{suffix}#0", f"a{suffix}#1"]


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pt"])
def test_key_picks_one_tensor_of_several(tmp_path: Path, suffix: str, options: Callable[..., Options]) -> None:
    arrays = latents(3)
    for k, a in enumerate(arrays):
        save(tmp_path / f"{k}{suffix}", {"moments": a, "flipped": a[:, :, ::-1].copy()})
    with pytest.raises(InputError, match=r"several tensors \(flipped, moments\); choose one with --key"):
        LatentSource.open(str(tmp_path), options("latents"))
    source = LatentSource.open(str(tmp_path), options("latents", key="moments"))
    assert all(torch.equal(source.load(k), torch.from_numpy(a)) for k, a in enumerate(arrays))


def test_moments_give_mode_sample_and_expected_sample_exactly(tmp_path: Path, options: Callable[..., Options],
                                                              accumulate: Callable[..., Run]) -> None:
    rng = np.random.default_rng(1)
    mu = latents(5)
    logvar = [(rng.standard_normal(m.shape) - 3).astype(np.float32) for m in mu]
    save(tmp_path / "moments.npy", np.stack([np.concatenate([m, lv]) for m, lv in zip(mu, logvar, strict=True)]))
    source = LatentSource.open(str(tmp_path), options("latents", moments=True))
    run = accumulate(source, seed=3)
    assert_matches_numpy(run, mu, "mode")
    sigma = [np.exp(0.5 * lv.astype(np.float64)) for lv in logvar]
    eps = [noise([k], torch.Size(m.shape), 3)[0].double().numpy() for k, m in enumerate(mu)]
    assert_matches_numpy(run, [m + s * e for m, s, e in zip(mu, sigma, eps, strict=True)], "sample")
    flat_mu = np.concatenate([m.astype(np.float64).ravel() for m in mu])
    expected_var = flat_mu.var(ddof=1) + np.mean(np.concatenate([s.ravel() ** 2 for s in sigma]))
    np.testing.assert_allclose(run.stats[0].estimates()["expected_sample"]["std"], np.sqrt(expected_var), rtol=1e-12)


def test_input_scale_measures_the_raw_latents(tmp_path: Path, options: Callable[..., Options],
                                              accumulate: Callable[..., Run]) -> None:
    raw = latents(4)
    for k, a in enumerate(raw):
        save(tmp_path / f"{k}.npy", a * np.float32(0.18215))
    stored = [np.load(tmp_path / f"{k}.npy").astype(np.float64) for k in range(4)]
    source = LatentSource.open(str(tmp_path), options("latents", input_scale=0.18215))
    assert source.recipe() == {"source": "latents", "moments": False, "key": None, "input_scale": 0.18215}
    assert_matches_numpy(accumulate(source), [s / 0.18215 for s in stored])


def test_input_scale_shifts_logvar_by_two_log_f(tmp_path: Path, options: Callable[..., Options]) -> None:
    save(tmp_path / "m.npy", np.concatenate([np.ones((C, 2, 2)), np.zeros((C, 2, 2))]).astype(np.float32))
    mean, logvar = LatentSource.open(str(tmp_path), options("latents", moments=True, input_scale=2.0)).posterior(
        torch.from_numpy(np.load(tmp_path / "m.npy"))[None])
    assert torch.equal(mean, torch.full((1, C, 2, 2), 0.5, dtype=torch.float64))
    np.testing.assert_allclose(torch.exp(0.5 * logvar).numpy(), 0.5, rtol=1e-15)


def test_mixed_shapes_pool_every_element(tmp_path: Path, options: Callable[..., Options],
                                         accumulate: Callable[..., Run]) -> None:
    small, large = latents(3, (C, 8, 8)), latents(2, (C, 16, 12), seed=1)
    for k, a in enumerate(small + large):
        save(tmp_path / f"{k}.safetensors", a)
    source = LatentSource.open(str(tmp_path), options("latents"))
    assert not source.uniform and source.shapes() == {"4x8x8": 3, "4x16x12": 2}
    assert_matches_numpy(accumulate(source, batch_size=5), small + large)


def test_video_latents_batch_of_five_dims_and_four_dims_with_known_channels(
        tmp_path: Path, options: Callable[..., Options], accumulate: Callable[..., Run]) -> None:
    clips = latents(4, (C, 3, 8, 8))
    save(tmp_path / "batch.npy", np.stack(clips[:2]))
    save(tmp_path / "one.npy", clips[2])
    save(tmp_path / "two.npy", clips[3])
    source = LatentSource.open(str(tmp_path), options("latents", channels=C))
    assert source.ids == ["batch.npy#0", "batch.npy#1", "one.npy", "two.npy"]
    assert_matches_numpy(accumulate(source), clips[:2] + clips[2:])
    guessed = LatentSource.open(str(tmp_path / "one.npy"), options("latents"))  # no model: a batch of C images
    assert len(guessed) == C and guessed.load(0).shape == (3, 8, 8)


def test_audio_latents_one_per_file_and_in_batches_with_known_channels(
        tmp_path: Path, options: Callable[..., Options], accumulate: Callable[..., Run]) -> None:
    """(C, L) files are one audio latent each; a (B, C, L) batch is one only when the model's channel
    count is the second axis and not the first (without a model it stays one image latent)."""
    clips = latents(5, (C, 30))
    save(tmp_path / "batch.npy", np.stack(clips[:3]))
    save(tmp_path / "one.npy", clips[3])
    save(tmp_path / "two.npy", clips[4])
    source = LatentSource.open(str(tmp_path), options("latents", channels=C))
    assert source.ids == ["batch.npy#0", "batch.npy#1", "batch.npy#2", "one.npy", "two.npy"]
    assert_matches_numpy(accumulate(source), clips)
    guessed = LatentSource.open(str(tmp_path / "batch.npy"), options("latents"))  # no model: one (3, C, 30) image
    assert len(guessed) == 1 and guessed.load(0).shape == (3, C, 30)


def test_skipped_files_leave_the_latent_shapes_out(tmp_path: Path, measure: Callable[..., Any]) -> None:
    """An empty file, one of another channel count and one holding NaN are skipped: the shapes the
    result reports are those of the latents counted (it said 'size varies' with their shapes in)."""
    good = latents(3)
    for k, a in enumerate(good):
        save(tmp_path / f"{k}.npy", a)
    save(tmp_path / "empty.npy", np.zeros((C, 0, 8), np.float32))
    save(tmp_path / "six.npy", latents(1, (C + 2, 8, 8))[0])
    save(tmp_path / "nan.npy", np.full((C, 4, 4), np.nan, np.float32))
    r = measure(latents=str(tmp_path))
    assert r.num_units == 3 and len(r.skipped) == 3
    assert r.latent_shape == [C, 8, 8] and r.latent_shapes == {f"{C}x8x8": 3}


def test_shards_that_saw_different_sizes_merge_to_the_channel_count(tmp_path: Path,
                                                                    measure: Callable[..., Any]) -> None:
    """Five 8x8 latents and one 16x12 in two shards: one shard saw a single size, the merge did not."""
    for k, a in enumerate(latents(5) + latents(1, (C, 16, 12), seed=1)):
        save(tmp_path / f"{k}.npy", a)
    shards = [measure(latents=str(tmp_path), shard=f"{i}/2") for i in range(2)]
    assert sorted(r.latent_shape for r in shards) == [[C], [C, 8, 8]]
    merged = latent_scale.merge_results(shards)
    assert merged.latent_shape == [C] == measure(latents=str(tmp_path)).latent_shape


def _tar(path: Path, files: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for f in files:
            tf.add(f, arcname=f.name)
    return path


def test_tar_shards_are_read_in_place(tmp_path: Path, options: Callable[..., Options],
                                      accumulate: Callable[..., Run]) -> None:
    arrays = latents(5)
    files = [save(tmp_path / f"raw/{k}{FORMATS[k % 4]}", a) for k, a in enumerate(arrays)]
    _tar(tmp_path / "shards/s0.tar", files[:3])
    _tar(tmp_path / "shards/s1.tar", files[3:])
    source = LatentSource.open(str(tmp_path / "shards/*.tar"), options("latents"))
    assert source.ids[0] == "s0.tar::0.npy"
    assert_matches_numpy(accumulate(source), arrays)


def test_list_and_glob_specs(tmp_path: Path, options: Callable[..., Options]) -> None:
    arrays = latents(3)
    for k, a in enumerate(arrays):
        save(tmp_path / f"{k}.npy", a)
    (tmp_path / "list.txt").write_text("2.npy\n0.npy\n")
    assert LatentSource.open(str(tmp_path / "list.txt"), options("latents")).ids == ["0.npy", "2.npy"]
    assert len(LatentSource.open(str(tmp_path / "*.npy"), options("latents"))) == 3
    with pytest.raises(InputError, match="does not exist"):
        LatentSource.open(str(tmp_path / "missing"), options("latents"))


@pytest.mark.parametrize("encoding", ["npy-bytes", "nested-lists"])
def test_parquet_latent_column(tmp_path: Path, encoding: str, options: Callable[..., Options],
                               accumulate: Callable[..., Run]) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    arrays = latents(5)
    if encoding == "npy-bytes":
        cells = []
        for a in arrays:
            buf = io.BytesIO()
            np.save(buf, a)
            cells.append(buf.getvalue())
    else:
        cells = [a.tolist() for a in arrays]
    pq.write_table(pa.table({"label": list(range(5)), "latent": cells}), tmp_path / "z.parquet", row_group_size=2)
    source = LatentSource.open(str(tmp_path / "z.parquet"), options("latents"))
    assert source.ids == [f"z.parquet#{k}" for k in range(5)]
    assert_matches_numpy(accumulate(source), arrays)


def _npy_bytes_claiming(batch: int) -> bytes:
    """A .npy of one latent whose header says it holds `batch` of them."""
    one = latents(1)[0]
    header = np.lib.format.header_data_from_array_1_0(one)
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {**header, "shape": (batch, *header["shape"])})
    return f.getvalue() + one.tobytes()


def _pickle_with_code(path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo pwned",))

    path.write_bytes(pickle.dumps({"latent": Evil()}))


def bad_files(folder: Path) -> dict[str, str]:
    """One broken file of each kind beside good ones; -> the id each should be listed under, and why."""
    np.save(folder / "truncated.npy", latents(1)[0])
    (folder / "truncated.npy").write_bytes((folder / "truncated.npy").read_bytes()[:-40])
    for dtype in ("int32", "bool", "complex64"):
        np.save(folder / f"{dtype}.npy", np.zeros((C, 8, 8), dtype=dtype))
    nan = latents(1)[0]
    nan[1, 2, 3] = np.nan
    np.save(folder / "nan.npy", nan)
    np.save(folder / "huge.npy", latents(1)[0].astype(np.float64) * 1e200)  # its 4th moments would overflow
    np.save(folder / "channels.npy", latents(1, (C + 2, 8, 8))[0])
    _pickle_with_code(folder / "code.pt")
    forged = _npy_bytes_claiming(10**9)  # a header whose batch is not there: no billion units listed
    (folder / "forged.npy").write_bytes(forged)
    with zipfile.ZipFile(folder / "forged.npz", "w") as z:
        z.writestr("x.npy", forged)
    header = json.dumps({"x": {"dtype": "F32", "shape": [C, 8, 16], "data_offsets": [0, 1024]}}).encode()
    (folder / "lying.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(2 * C * 8 * 16))
    (folder / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return {"truncated.npy": "truncated", "int32.npy": "dtype int32", "bool.npy": "dtype bool",
            "complex64.npy": "dtype complex64", "nan.npy": "NaN", "huge.npy": "beyond float32's range",
            "channels.npy": "6 channels", "forged.npy": "header is wrong", "forged.npz": "header is wrong",
            "lying.safetensors": "has shape [4, 8, 16] but 1024 bytes",
            "code.pt": "refused: loading it would need more than plain tensors",
            "garbage.safetensors": "not a valid safetensors file"}


def test_bad_files_are_skipped_and_listed_in_one_line(tmp_path: Path, options: Callable[..., Options],
                                                      accumulate: Callable[..., Run]) -> None:
    good = latents(3)
    for k, a in enumerate(good):
        save(tmp_path / f"a{k}.npy", a)  # sorted first: they set the channel count
    reasons = bad_files(tmp_path)
    source = LatentSource.open(str(tmp_path), options("latents"))
    run = accumulate(source)
    listed = {s["path"]: s["error"] for s in run.skipped}
    assert set(listed) == set(reasons)
    for name, why in reasons.items():
        assert why in listed[name] and "\n" not in listed[name], (name, listed[name])
    assert_matches_numpy(run, good)


def test_refused_pickle_never_runs_code(tmp_path: Path, capfd: pytest.CaptureFixture,
                                        options: Callable[..., Options]) -> None:
    _pickle_with_code(tmp_path / "code.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        LatentSource.open(str(tmp_path), options("latents")).load(0)
    assert "pwned" not in capfd.readouterr().out


def test_model_channels_decide_and_moments_need_even_channels(tmp_path: Path, options: Callable[..., Options]) -> None:
    save(tmp_path / "odd.npy", latents(1, (3, 8, 8))[0])
    with pytest.raises(InputError, match="even channel count"):
        LatentSource.open(str(tmp_path), options("latents", moments=True))
    with pytest.raises(ValueError, match="3 channels where the model's count is 4"):
        LatentSource.open(str(tmp_path), options("latents", channels=4)).load(0)


def test_noise_key_defaults_to_the_index(tmp_path: Path, options: Callable[..., Options]) -> None:
    save(tmp_path / "a.npy", latents(1)[0])
    assert LatentSource.open(str(tmp_path), options("latents")).noise_key(0) == 0



def test_estimate_from_latents_equals_numpy(tmp_path: Path, measure: Callable[..., Any]) -> None:
    arrays = latents(6)
    save(tmp_path / "all.npy", np.stack(arrays))
    result = measure(latents=str(tmp_path), posterior="mode")
    flat = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    np.testing.assert_allclose(result["std"], flat.std(ddof=1), rtol=1e-12)
    np.testing.assert_allclose(result["mean"], flat.mean(), rtol=1e-12)
    np.testing.assert_allclose(result["scale_factor"], 1 / flat.std(ddof=1), rtol=1e-12)
    assert result["num_images"] == 6


def test_a_run_leaves_the_collector_as_it_found_it(tmp_path: Path, measure: Callable[..., Any]) -> None:
    """The run freezes pre-existing objects for its length (speed) and unfreezes them after, except
    when the caller had frozen objects itself: those stay frozen."""
    import gc

    save(tmp_path / "all.npy", np.stack(latents(3)))
    assert gc.get_freeze_count() == 0
    measure(latents=str(tmp_path))
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        measure(latents=str(tmp_path))
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_loader_workers_leave_the_callers_thread_count(tmp_path: Path, measure: Callable[..., Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On an 8-core CPU a run starts 2 loader workers and gives the encoder the other 6 threads; the
    caller's own setting is back once the run ends."""
    save(tmp_path / "all.npy", np.stack(latents(4)))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr("latent_scale.loop.Accumulate.__call__",
                        lambda self, batch, call=Accumulate.__call__: (seen.append(torch.get_num_threads()),
                                                                       call(self, batch)))
    result = measure(latents=str(tmp_path), batch_size=2, workers=None)  # the default rule
    assert result.run["workers"] == 2 and seen == [6, 6]
    assert torch.get_num_threads() == before


def _deflate(path: Path) -> None:
    """The same .pt zip with its records compressed, as a re-zipping tool might leave it (torch.load reads it)."""
    with zipfile.ZipFile(path) as z:
        records = [(info.filename, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in records:
            z.writestr(name, data)


@pytest.mark.parametrize("layout", ["plain", "dict", "batch", "view", "bf16", "transposed", "tar", "deflated"])
def test_pt_read_in_place_equals_torch_load(tmp_path: Path, layout: str, options: Callable[..., Any]) -> None:
    """.pt files are read at their offsets when plain (contiguous floats, stored uncompressed); every
    layout, in place or through torch.load, gives exactly what torch.load gives."""
    base = torch.from_numpy(latents(3)[0] if layout != "batch" else np.stack(latents(3)))
    tensor = {"view": base[1:3] if layout != "batch" else base, "bf16": base.to(torch.bfloat16),
              "transposed": base.transpose(1, 2)}.get(layout, base)
    path = tmp_path / "x.pt"
    torch.save({"latent": tensor, "step": 3} if layout == "dict" else tensor, path)
    if layout == "tar":
        with tarfile.open(tmp_path / "s.tar", "w") as tf:
            tf.add(path, arcname="x.pt")
        path.unlink()
    if layout == "deflated":
        _deflate(path)
    source = LatentSource.open(str(tmp_path), options("latents", key="latent" if layout == "dict" else None))
    expected = [tensor] if tensor.dim() == 3 else list(tensor)
    assert len(source) == len(expected)
    for i, want in enumerate(expected):
        assert source.stored[i].header.in_place == (layout not in ("transposed", "deflated"))
        assert torch.equal(source.load(i), want) and source.load(i).dtype == want.dtype


def test_pt_of_integers_is_still_refused(tmp_path: Path, options: Callable[..., Any]) -> None:
    torch.save(torch.ones(4, 8, 8, dtype=torch.int32), tmp_path / "ints.pt")
    source = LatentSource.open(str(tmp_path), options("latents"))
    with pytest.raises(Exception, match="float"):
        source.load(0)


def test_double_star_never_enters_a_linked_folder(tmp_path: Path, options: Callable[..., Any],
                                                  finishes: Callable[..., Any]) -> None:
    """A link back to the folder (`again -> .`) turned 6 latents into 246; two such links never ended."""
    for k, a in enumerate(latents(6)):
        save(tmp_path / f"d/sub{k % 2}/{k}.npy", a)
    (tmp_path / "d/again").symlink_to(".")
    (tmp_path / "d/sub0/back").symlink_to("..")
    source = finishes(lambda: LatentSource.open(str(tmp_path / "d/**/*.npy"), options("latents")))
    assert source.ids == [f"sub{k % 2}/{k}.npy" for k in (0, 2, 4, 1, 3, 5)]


def test_a_sparse_file_claiming_a_billion_latents_is_one_bad_unit(tmp_path: Path, options: Callable[..., Any],
                                                                   accumulate: Callable[..., Run]) -> None:
    """4 KB on disk, 8 GB by its size and header: listing it ended in a MemoryError traceback."""
    good = latents(3)
    save(tmp_path / "a.npy", np.stack(good))
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, C, 1, 1), np.float16))
    with open(tmp_path / "forged.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (10**9, C, 1, 1)})
        f.truncate(f.tell() + 10**9 * C * 2)
    run = accumulate(LatentSource.open(str(tmp_path), options("latents")))
    assert [(s["path"], "claims a batch of 1,000,000,000 latents" in s["error"]) for s in run.skipped] == \
        [("forged.npy", True)]
    assert_matches_numpy(run, good)


def test_a_stray_file_of_other_channels_is_skipped_whichever_sorts_first(tmp_path: Path, options: Callable[..., Any],
                                                                          accumulate: Callable[..., Run]) -> None:
    """The channel count is the one most latents have: a 3-channel file sorting first used to make every real
    latent be skipped and report its own factor."""
    good = latents(5)
    save(tmp_path / "0-stray.npy", latents(1, (3, 8, 8))[0])
    save(tmp_path / "batch.npy", np.stack(good))
    run = accumulate(LatentSource.open(str(tmp_path), options("latents")))
    assert [s["path"] for s in run.skipped] == ["0-stray.npy"]
    assert "3 channels where the usual count (5 of 6 latents) is 4" in run.skipped[0]["error"]
    assert_matches_numpy(run, good)


def test_a_file_rewritten_after_listing_is_skipped_not_read_with_its_old_header(
        tmp_path: Path, options: Callable[..., Any], accumulate: Callable[..., Run]) -> None:
    kept = latents(2, seed=3)
    save(tmp_path / "a.npy", np.stack(latents(4)))
    save(tmp_path / "b.npy", np.stack(kept))
    source = LatentSource.open(str(tmp_path), options("latents"))
    save(tmp_path / "a.npy", np.stack(latents(2, seed=9)).astype(np.float64))  # same bytes, other header
    run = accumulate(source)
    assert sorted(s["path"] for s in run.skipped) == [f"a.npy#{r}" for r in range(4)]
    assert all("changed after it was listed" in s["error"] for s in run.skipped)
    assert_matches_numpy(run, kept)


def test_a_sparse_tar_member_is_skipped(tmp_path: Path, options: Callable[..., Any],
                                       accumulate: Callable[..., Run]) -> None:
    """tarfile reads a GNU sparse member with its holes; its bytes in the shard are not the file's (they were
    read as a latent: factor 1.6e-30 where numpy's was 1.415)."""
    from test_formats import sparse_member

    good = latents(2)
    files = [save(tmp_path / f"raw/{k}.npy", a) for k, a in enumerate(good)]
    with tarfile.open(tmp_path / "s.tar", "w") as tf:
        for f in files:
            tf.add(f, arcname=f.name)
        sparse_member(tf, "holes.npy", files[0].read_bytes())
    run = accumulate(LatentSource.open(str(tmp_path / "s.tar"), options("latents")))
    assert [(s["path"], "sparse tar member" in s["error"]) for s in run.skipped] == [("s.tar::holes.npy", True)]
    assert_matches_numpy(run, good)


def test_latents_refusals_are_one_sentence(tmp_path: Path, cli: Cli) -> None:
    """A FIFO is not "missing"; an infinite --input-scale is not the model's fault."""
    save(tmp_path / "d/a.npy", latents(1)[0])
    os.mkfifo(tmp_path / "pipe.npy")
    cli.fails("estimate", "--latents", tmp_path / "pipe.npy", "--no-progress", says=["not a regular file"])
    cli.fails("estimate", "--latents", tmp_path / "d", "--input-scale", "inf", "--no-progress",
              says=["--input-scale must be a finite number"])


def test_a_latents_run_names_latents_not_its_list_of_files(tmp_path: Path, cli: Cli) -> None:
    """The bar's forecast and the sweep refusal say "latents", never the source's list of stored items."""
    save(tmp_path / "z.npy", np.stack(latents(8)))
    code, _, err = cli("estimate", "--latents", tmp_path / "z.npy")
    assert code == 0 and "FileUnit" not in err and " latents (" in err, err
    cli.fails("estimate", "--latents", tmp_path / "z.npy", "--size", "64,128", "--no-progress",
              says=["latents have no size to sweep"])
