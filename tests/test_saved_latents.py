"""--save-latents: the cache keeps every unit bit for bit with its id and noise key, so reading it back
reproduces the run's numbers; a resumed writer drops exactly what came after its checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch

from latent_scale.errors import InputError
from latent_scale.options import Options
from latent_scale.saved_latents import LatentWriter, read_saved
from latent_scale.sources.base import Source
from latent_scale.sources.latents import LatentSource
from latent_scale.state import Run

if TYPE_CHECKING:
    from conftest import Cli

C = 4


def posteriors(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, logvar) pairs as an encoder gives them, two shapes mixed."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(C, 8, 8), (C, 4, 6)]
    return [(torch.randn(shapes[k % 2], generator=g) * 3 + 7, torch.randn(shapes[k % 2], generator=g) - 4)
            for k in range(count)]


def write(directory: Path, pairs: list[tuple[torch.Tensor, torch.Tensor]], keys: list[int], **kw: int) -> LatentWriter:
    cache = LatentWriter(directory, 0, 1, moments=True, items_per_shard=3, **kw)
    for key, (mean, logvar) in zip(keys, pairs, strict=True):
        cache.add(key, f"img{key:03d}.png", mean, logvar)
    cache.flush()
    return cache


def test_units_come_back_bit_for_bit_with_ids_and_noise_keys(tmp_path: Path, options: Callable[..., Options]) -> None:
    pairs = posteriors(7)
    keys = [12, 3, 40, 7, 0, 25, 9]
    write(tmp_path, pairs, keys)
    assert len(list(tmp_path.glob("latents-r0-*.safetensors"))) == 3
    source = LatentSource.open(str(tmp_path), options("latents"))
    by_key = dict(zip(keys, pairs, strict=True))
    assert [source.noise_key(i) for i in range(7)] == sorted(keys)
    assert source.ids == [f"img{k:03d}.png" for k in sorted(keys)] and source.moments
    for i, key in enumerate(sorted(keys)):
        mean, logvar = source.posterior(source.load(i)[None])
        assert torch.equal(mean[0], by_key[key][0].double())
        assert torch.equal(torch.exp(0.5 * logvar[0]), torch.exp(0.5 * by_key[key][1]))


class Encoded(Source):
    """A stand-in for an image run: fixed posteriors, noise keyed by the unit index."""

    kind, input = "encoded", "latents"

    @classmethod
    def accepts(cls, spec: str, ctx: Any) -> bool:
        return False

    @classmethod
    def open(cls, spec: str, ctx: Any) -> Encoded:
        raise NotImplementedError("built directly from posteriors")

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__([f"img{k:03d}.png" for k in range(len(pairs))], "")
        self.pairs, self.moments = pairs, True

    def load(self, index: int) -> torch.Tensor:
        return torch.cat(self.pairs[index])

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = x.chunk(2, dim=1)
        return mean.double(), logvar

    @property
    def uniform(self) -> bool:
        return False


def test_reading_the_cache_reproduces_mode_and_sample(tmp_path: Path, options: Callable[..., Options],
                                                      accumulate: Callable[..., Run]) -> None:
    pairs = posteriors(9)
    direct = accumulate(Encoded(pairs), seed=5).stats[0].estimates()
    write(tmp_path, pairs, list(range(9)))
    cached = accumulate(LatentSource.open(str(tmp_path), options("latents")), seed=5).stats[0].estimates()
    for key in ("mode", "sample", "expected_sample"):
        np.testing.assert_allclose(cached[key]["std"], direct[key]["std"], rtol=1e-12)
        np.testing.assert_allclose(cached[key]["mean"], direct[key]["mean"], rtol=1e-12)


def test_resume_drops_what_was_written_after_the_checkpoint(tmp_path: Path, options: Callable[..., Options]) -> None:
    pairs = posteriors(11)
    cache = LatentWriter(tmp_path / "run", 0, 1, moments=True, items_per_shard=3)
    for k in range(4):
        cache.add(k, f"img{k:03d}.png", *pairs[k])
    cache.flush()  # the checkpoint
    state = cache.state()
    for k in range(4, 9):  # written, then the process dies: one full shard on disk, two items pending
        cache.add(k, f"img{k:03d}.png", *pairs[k])
    resumed = LatentWriter.resume(tmp_path / "run", state, 0, 1, moments=True, items_per_shard=3)
    for k in range(4, 11):
        resumed.add(k, f"img{k:03d}.png", *pairs[k])
    resumed.flush()
    write(tmp_path / "straight", pairs, list(range(11)))
    items, _ = read_saved(tmp_path / "run")
    assert [it["noise_key"] for it in items] == list(range(11))
    a, b = (LatentSource.open(str(tmp_path / d), options("latents")) for d in ("run", "straight"))
    assert all(torch.equal(a.load(i), b.load(i)) for i in range(11))


def test_a_fresh_run_refuses_a_folder_holding_its_rank(tmp_path: Path) -> None:
    write(tmp_path, posteriors(2), [0, 1])
    with pytest.raises(InputError, match="already holds latents of rank 0"):
        LatentWriter(tmp_path, 0, 1, moments=True)
    LatentWriter(tmp_path, 1, 2, moments=True)  # another rank (or --shard) writes beside it


def test_mixed_runs_and_moments_mismatch_are_refused(tmp_path: Path, options: Callable[..., Options]) -> None:
    write(tmp_path, posteriors(2), [0, 1])
    plain = LatentWriter(tmp_path, 1, 1, moments=False)
    plain.add(5, "x.png", *posteriors(1)[0])
    plain.flush()
    with pytest.raises(InputError, match="mixes latents of different runs"):
        read_saved(tmp_path)
    only_mean = LatentWriter(tmp_path / "mean", 0, 1, moments=False)
    only_mean.add(0, "x.png", *posteriors(1)[0])
    only_mean.flush()
    with pytest.raises(InputError, match="saved without --moments"):
        LatentSource.open(str(tmp_path / "mean"), options("latents", moments=True))


def test_a_bfloat16_run_keeps_its_logvar_dtype(tmp_path: Path, options: Callable[..., Options]) -> None:
    mean, logvar = (t.to(torch.bfloat16) for t in posteriors(1)[0])
    cache = LatentWriter(tmp_path, 0, 1, moments=True)
    cache.add(0, "x.png", mean, logvar)
    cache.flush()
    source = LatentSource.open(str(tmp_path), options("latents"))
    _, back = source.posterior(source.load(0)[None])
    assert back.dtype == torch.bfloat16 and torch.equal(torch.exp(0.5 * back[0]), torch.exp(0.5 * logvar))



@pytest.mark.parametrize("posterior", ["mode", "sample"])
def test_image_run_then_latents_gives_the_same_factor(tmp_path: Path, vae_dir: Path, photo_dir: Path,
                                                      posterior: str, measure: Callable[..., Any]) -> None:
    common = {"posterior": posterior, "seed": 7}
    image = measure(vae_dir, photo_dir, save_latents=str(tmp_path / "c"), moments=True, **common)
    cached = measure(latents=str(tmp_path / "c"), **common)
    np.testing.assert_allclose(cached["scale_factor"], image["scale_factor"], rtol=1e-9)
    assert cached["num_images"] == image["num_images"]



def test_interrupted_image_run_with_save_latents_resumes_to_the_same_cache(
        tmp_path: Path, vae_dir: Path, photo_dir: Path, monkeypatch: pytest.MonkeyPatch,
        measure: Callable[..., Any]) -> None:
    from latent_scale.errors import Interrupted
    from latent_scale.loop import Accumulate

    common = {"seed": 7, "batch_size": 4, "moments": True, "save_latents": str(tmp_path / "c"),
              "checkpoint": str(tmp_path / "ck.json"), "checkpoint_every": 0.001}
    full = measure(vae_dir, photo_dir, **{**common, "save_latents": str(tmp_path / "f"), "checkpoint": None})
    step, calls = Accumulate.__call__, []

    def ctrl_c_at_the_third_batch(self: Accumulate, batch: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        step(self, batch)

    with monkeypatch.context() as m:
        m.setattr(Accumulate, "__call__", ctrl_c_at_the_third_batch)
        with pytest.raises(Interrupted):
            measure(vae_dir, photo_dir, **common)
    measure(vae_dir, photo_dir, resume=True, **common)
    for posterior in ("mode", "sample"):
        cached = measure(latents=str(tmp_path / "c"), posterior=posterior, seed=7)
        np.testing.assert_allclose(cached["estimates"][posterior]["scale_factor"],
                                   full["estimates"][posterior]["scale_factor"], rtol=1e-9)


DAMAGE = {  # a damaged or hostile index -> what the one sentence says
    "items not a list": (lambda ix: ix.update(items={"a": 1}), "'items' is not a list"),
    "shard outside the folder": (lambda ix: ix["items"][0].update(shard="../../etc/passwd"), "item 0 is not"),
    "noise key not a number": (lambda ix: ix["items"][1].update(noise_key="7"), "item 1 is not"),
    "negative noise key": (lambda ix: ix["items"][1].update(noise_key=-1), "item 1 is not"),
    "one latent for two units": (lambda ix: ix["items"][1].update(key=ix["items"][0]["key"]),
                                 "naming one stored latent for two units"),
    "meta a list": (lambda ix: ix.update(meta=[1, 2]), "'meta' .* is not an object"),  # these three were tracebacks
    "meta null": (lambda ix: ix.update(meta=None), "'meta' .* is not an object"),
    "recipe a list": (lambda ix: ix.update(meta={"recipe": [1]}), "'meta' .* is not an object"),
    "moments a string": (lambda ix: ix.update(moments="no"), "'moments' is not true or false"),  # read as true
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_index_is_refused_in_one_sentence(tmp_path: Path, damage: str) -> None:
    """Never a traceback, never a path outside the folder read, never one latent counted twice."""
    import json

    write(tmp_path, posteriors(4), [0, 1, 2, 3])
    index = tmp_path / "index-r0.json"
    content = json.loads(index.read_text())
    change, says = DAMAGE[damage]
    change(content)
    index.write_text(json.dumps(content))
    with pytest.raises(InputError, match=says):
        read_saved(tmp_path)


@pytest.mark.parametrize("dtype", ["int64", "os", "float33", 5, ["x"]])
def test_an_index_dtype_that_is_no_encoder_dtype_is_refused(tmp_path: Path, dtype: object) -> None:
    """The dtype is the one logvar is exponentiated in: "int64" shifted the sample estimate by 5.7 %, "os"
    named a module, a list was a traceback."""
    import json

    write(tmp_path, posteriors(2), [0, 1])
    index = tmp_path / "index-r0.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "dtype": dtype}))
    with pytest.raises(InputError, match=r"'dtype' is .*, not one of float16, bfloat16, float32, float64"):
        read_saved(tmp_path)


def test_an_index_dtype_refusal_is_one_sentence_on_the_command_line(tmp_path: Path, cli: Cli) -> None:
    import json

    write(tmp_path, posteriors(2), [0, 1])
    index = tmp_path / "index-r0.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "dtype": "int64"}))
    cli.fails("estimate", "--latents", tmp_path, "--no-progress", says=["'dtype' is \"int64\""])


def test_resume_leaves_files_it_did_not_name_alone(tmp_path: Path) -> None:
    """A stray latents-r0-backup.safetensors in the folder was a traceback on resume (int("backup"))."""
    writer = write(tmp_path, posteriors(4), [0, 1, 2, 3])
    (tmp_path / "latents-r0-backup.safetensors").write_bytes(b"the user's")
    resumed = LatentWriter.resume(tmp_path, writer.state(), 0, 1, moments=True, items_per_shard=3)
    assert resumed.state() == writer.state()
    assert (tmp_path / "latents-r0-backup.safetensors").read_bytes() == b"the user's"


def test_a_recorded_seed_beyond_a_generators_range_is_damage_not_a_traceback(tmp_path: Path, cli: Cli) -> None:
    """A seed of 2^70 in the index overflowed torch's generator; --seed itself is checked the same way, so a
    folder the tool writes is always one it can read back."""
    import json

    write(tmp_path / "c", posteriors(2), [0, 1])
    index = tmp_path / "c" / "index-r0.json"
    content = json.loads(index.read_text())
    content["meta"] = {"recipe": {"posterior": "sample", "seed": 2**70}}
    index.write_text(json.dumps(content))
    cli.fails("estimate", "--latents", tmp_path / "c", "--no-progress",
              says=["does not record the run's posterior and seed"])
    for seed in (2**70, -1):
        cli.fails("estimate", "--latents", tmp_path / "c", "--seed", seed, "--no-progress",
                  says=["--seed must be between 0 and 2^63 - 1"])
