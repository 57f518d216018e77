"""docs/result.md against real results: every key that results of each kind (images, video clips,
audio clips, stored latents, a --size sweep, a merge) hold is documented there, and every documented key occurs
in one of them, so the page cannot drift from what the tool writes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import pytest

from cases import WAN
from latent_scale.merge import merge_results
from test_audio import OOBLECK, RATE
from test_video import pan_zoom, write_video

DOC = Path(__file__).parents[1] / "docs" / "result.md"
OPAQUE = {"latent_shapes", "recipe.cache", "run.forecast", "run.precision_check", "frames.state",
          "normalisations.scale", "normalisations.shift", "normalisations.per_channel", "normalisations.rms",
          "estimates.mode", "estimates.sample", "estimates.expected_sample", "frames.first", "frames.later",
          "state.sigma2", "state_sha256"}  # their keys are data, or described in the row itself
DEEPER = ("state.", "model.identity", "recipe.data_identity")  # documented one level further down


def documented() -> set[str]:
    """The backticked keys in the first column of each table row of docs/result.md, and the objects
    holding them (`model` for `model.source`)."""
    rows = [line.split("|")[1] for line in DOC.read_text().splitlines() if line.startswith("| `")]
    keys = {key for cell in rows for key in re.findall(r"`([^`]+)`", cell)}
    return keys | {key.rsplit(".", n)[0] for key in keys for n in range(1, key.count(".") + 1)}


def keys_of(doc: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted keys: the top level, each object's own keys, and the state's parts one level further;
    state.sample is documented as having state.mode's fields."""
    out = set()
    for key, value in doc.items():
        name = f"{prefix}{key}"
        out.add(name)
        deeper = prefix == "" or name.startswith(DEEPER) and name.count(".") < 2
        if isinstance(value, dict) and deeper and name not in OPAQUE:
            out |= keys_of(value, f"{name}.")
    return {k.replace("state.sample.", "state.mode.") for k in out}


@pytest.fixture(scope="module")
def results(vae_dir: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory,
            measure: Callable[..., Any], result_json: Path, write_wav: Any) -> dict[str, list[dict[str, Any]]]:
    """Written results of each kind, read back from their files (what a user's script sees)."""
    folder = tmp_path_factory.mktemp("kinds")

    def written(name: str, **options: Any) -> list[dict[str, Any]]:
        measure(output=str(folder / name), **options)
        doc = json.loads((folder / name).read_text())
        return doc if isinstance(doc, list) else [doc]

    kw = {"model": vae_dir, "data": photo_dir, "limit": 6}
    out = {"image": [json.loads(result_json.read_text())], "sweep": written("sweep.json", size="16,32", **kw)}
    out["image"] += written("saved.json", save_latents=str(folder / "cache"), dtype="bfloat16", **kw)
    out["latents"] = written("latents.json", latents=str(folder / "cache"), input_scale=0.5)
    shards = [written(f"s{i}.json", shard=f"{i}/2", **kw)[0] for i in range(2)]
    out["merge"] = [json.loads(json.dumps(merge_results(shards, ["s0.json", "s1.json"])))]
    diffusers.AutoencoderKLWan(**WAN).save_pretrained(folder / "wan")
    write_video(folder / "clips" / "pan.mp4", pan_zoom("astronaut", 12))
    out["video"] = written("video.json", model=folder / "wan", data=folder / "clips", frames=5, clips_per_video=2)
    diffusers.AutoencoderOobleck(**OOBLECK).save_pretrained(folder / "oobleck")
    write_wav(folder / "sounds" / "tone.wav", RATE, seconds=1.0)
    out["audio"] = written("audio.json", model=folder / "oobleck", data=folder / "sounds", seconds=0.5)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["image", "video", "audio", "latents", "sweep", "merge"])
def test_every_key_of_each_kind_of_result_is_documented(results: dict[str, list[dict[str, Any]]],
                                                        kind: str) -> None:
    missing = {key for doc in results[kind] for key in keys_of(doc)} - documented()
    assert not missing, f"{kind} results hold keys docs/result.md does not document: {sorted(missing)}"


@pytest.mark.slow
def test_every_documented_key_occurs_in_some_result(results: dict[str, list[dict[str, Any]]]) -> None:
    seen = {key for docs in results.values() for doc in docs for key in keys_of(doc)}
    assert not documented() - seen, f"documented but in no result: {sorted(documented() - seen)}"
