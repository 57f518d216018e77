"""merge: exact on sound shards; every damaged, foreign or incomplete input is refused in one sentence
(or, for a partial split, warned about and recorded); a fuzz of random edits never gets past both."""

from __future__ import annotations

import copy
import json
import math
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latent_scale.errors import InputError
from latent_scale.identity import model_identity
from latent_scale.merge import merge_files, merge_results, missing_shards
from latent_scale.schema import headline, population, read_result, seal
from latent_scale.stats import PosteriorStats

if TYPE_CHECKING:
    from conftest import Cli

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def runs(vae_dir: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory,
         measure: Callable[..., Any]) -> dict[str, Any]:
    """Results of the two shards of a 0/2 split, the unsharded run, and the 0/2 run's checkpoint."""
    folder = tmp_path_factory.mktemp("runs")
    out: dict[str, Any] = {"checkpoint": folder / "state.json"}
    for name, shard in (("s0", "0/2"), ("s1", "1/2"), ("whole", None)):
        kw = {"checkpoint": str(out["checkpoint"])} if name == "s0" else {}
        out[name] = json.loads(json.dumps(measure(vae_dir, photo_dir, shard=shard, dtype="float32", **kw)))
    return out


def shards(runs: dict[str, Any]) -> list[Doc]:
    return [copy.deepcopy(runs["s0"]), copy.deepcopy(runs["s1"])]


def write(folder: Path, docs: dict[str, Any]) -> list[Path]:
    paths = []
    for name, doc in docs.items():
        paths.append(folder / name)
        paths[-1].write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return paths


def refused_files(folder: Path, docs: dict[str, Any]) -> str:
    with pytest.raises(InputError) as e:
        merge_files(write(folder, docs), folder / "out.json")
    assert not (folder / "out.json").exists()
    return str(e.value)


def test_shards_merge_to_the_one_process_result(runs: dict[str, Any], tmp_path: Path) -> None:
    merged = merge_files(write(tmp_path, {"a.json": runs["s0"], "b.json": runs["s1"]}), tmp_path / "out.json")
    whole = runs["whole"]
    assert merged["num_images"] == whole["num_images"] == 24
    assert merged["num_elements"] == whole["num_elements"]
    for key in ("scale_factor", "std", "mean"):
        assert merged[key] == pytest.approx(whole[key], rel=1e-6)
    assert merged["run"]["missing_shards"] == [] and merged["run"]["shards"] == ["0/2", "1/2"]
    written = json.loads((tmp_path / "out.json").read_text())
    assert read_result(written, "out.json").to_dict() == written and written["scale_factor"] == merged["scale_factor"]


def test_merging_only_some_shards_warns_and_records_which_are_missing(runs: dict[str, Any]) -> None:
    with pytest.warns(UserWarning, match=r"merging only 1 of the 2 shards of the split; missing 1/2"):
        merged = merge_results([runs["s0"]], ["a.json"])
    assert merged["run"]["missing_shards"] == ["1/2"]
    assert missing_shards(["1/4", "3/4"]) == ["0/4", "2/4"] and missing_shards([None]) == []


def test_partial_merge_warning_reaches_the_command_line(runs: dict[str, Any], tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("merge", *write(tmp_path, {"a.json": runs["s1"]}), "-o", tmp_path / "out.json")
    assert code == 0 and "latent-scale: warning: merging only 1 of the 2 shards" in err


def test_checkpoint_passed_to_merge_says_it_is_a_checkpoint(runs: dict[str, Any], tmp_path: Path) -> None:
    docs = {"a.json": runs["s1"], "state.json": json.loads(runs["checkpoint"].read_text())}
    assert refused_files(tmp_path, docs) == (f"{tmp_path}/"
        "state.json is a checkpoint, not a result; finish the run with --resume, then use its -o result")


@pytest.mark.parametrize(("text", "says"), [
    ("[1, 2]", "b.json is not a latent-scale result (it holds a list)"),
    ("null", "b.json is not a latent-scale result (it holds null)"),
    ('{"schema": 1}', "b.json: scale_factor is missing"),
    ('{"schema": 1, "sta', "b.json is not"),  # io.read_json words it
], ids=["json_array", "json_null", "lacks_a_key", "truncated"])
def test_merge_input_that_is_not_a_result_is_refused(runs: dict[str, Any], tmp_path: Path, text: str,
                                                     says: str) -> None:
    assert f"{tmp_path}/{says}" in refused_files(tmp_path, {"a.json": runs["s0"], "b.json": text})


@pytest.mark.parametrize(("path", "value", "says"), [
    (("state", "mode", "moments", "m2", 1), None, "b.json: state.mode.moments.m2[1] is null, not a number"),
    (("state", "mode", "moments", "n"), [1e300] * 4, "b.json: state.mode.moments.n[0] is 1e+300, not a count"),
    (("run", "shard"), ["1", "2"], "b.json: run.shard is ['1', '2'], not null or 'i/n'"),
    (("skipped",), {"path": "x"}, "b.json: skipped is a JSON object, not a list"),
], ids=["null_moment", "huge_counts", "shard_of_the_wrong_type", "skipped_not_a_list"])
def test_merge_names_the_file_and_the_damaged_field(runs: dict[str, Any], tmp_path: Path, path: tuple,
                                                    value: Any, says: str) -> None:
    a, b = shards(runs)
    node = b
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    message = refused_files(tmp_path, {"a.json": a, "b.json": b})
    assert message.startswith(f"{tmp_path}/{says}") and message.endswith("the file is damaged or was edited")


def test_merge_refuses_different_histogram_edges(runs: dict[str, Any]) -> None:
    """Consistent within the file (mode and sample alike), but other bins than the first file's."""
    a, b = shards(runs)
    for part in ("mode", "sample"):
        b["state"][part]["histogram"]["edges"] = [2 * e for e in b["state"][part]["histogram"]["edges"]]
    stats = PosteriorStats.from_dict(b["state"])  # the fractions beyond ±1, ±3 come from the histogram
    b.update(headline(stats, b["recipe"]["posterior"], population(b["recipe"], b["skipped"])))
    b = seal(b)  # sound and sealed, only binned differently
    with pytest.raises(InputError, match=r"cannot merge b.json with a.json: state.mode.histogram.edges differ"):
        merge_results([a, b], ["a.json", "b.json"])


def test_merge_refuses_more_units_than_the_data_holds(runs: dict[str, Any]) -> None:
    """One 12-image shard relabelled as all three shards of a 0/3 split: 36 images of 24."""
    docs = [copy.deepcopy(runs["s0"]) for _ in range(3)]
    for i, doc in enumerate(docs):
        doc["run"]["shard"] = f"{i}/3"
    with pytest.raises(InputError, match=r"hold 36 units and 0 skipped ones, more than the 24 units of the data"):
        merge_results(docs)


def test_merge_refuses_the_same_shard_twice_naming_both_files(runs: dict[str, Any]) -> None:
    with pytest.raises(InputError, match=r"shard 0/2 appears more than once \(a.json, c.json\)"):
        merge_results([runs["s0"], runs["s1"], runs["s0"]], ["a.json", "b.json", "c.json"])


def test_constant_latents_are_refused_not_divided_by_zero(runs: dict[str, Any]) -> None:
    doc = copy.deepcopy(runs["s0"])
    edges = torch.tensor(doc["state"]["mode"]["histogram"]["edges"], dtype=torch.float64)
    stats = PosteriorStats(4, True, edges)
    mu = torch.full((3, 4, 2, 2), 0.25)
    stats.update(mu, torch.zeros_like(mu), torch.randn_like(mu))
    doc["state"] = stats.to_dict()
    doc = seal(doc)
    with pytest.raises(InputError, match=r"no spread \(std 0.0 for posterior sample\), so no scale factor exists"):
        merge_results([doc])


def test_one_model_at_two_spellings_merges_and_other_weights_do_not(runs: dict[str, Any], vae_dir: Path,
                                                                    tmp_path: Path,
                                                                    tiny_vae: Callable[..., Path]) -> None:
    a, b = shards(runs)
    config = json.loads((vae_dir / "config.json").read_text())
    a["model"]["identity"] = model_identity({**a["model"], "source": str(vae_dir)}, config, tmp_path)
    b["model"]["identity"] = model_identity({**b["model"], "source": f"{vae_dir}/"}, config, tmp_path)
    b["model"]["source"] = f"{vae_dir}/"
    assert merge_results([a, b])["num_images"] == 24

    other = tiny_vae(seed=1)
    b["model"]["identity"] = model_identity({**b["model"], "source": str(other)}, config, tmp_path)
    with pytest.raises(InputError, match=r"cannot merge result 2 with result 1: model.identity.weights_sha256"):
        merge_results([a, b])


def test_sweep_files_merge_size_by_size(runs: dict[str, Any], tmp_path: Path) -> None:
    a, b = shards(runs)
    merged = merge_files(write(tmp_path, {"a.json": [a, a], "b.json": [b, b]}), tmp_path / "out.json")
    assert [m["num_images"] for m in merged] == [24, 24]
    (tmp_path / "mixed").mkdir()
    assert "merges only with files of the same sweep" in refused_files(tmp_path / "mixed", {"a.json": [a], "b.json": b})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=4,
)


def mutate(data: st.DataObject, doc: Any) -> Any:
    """One random edit at a random depth: replace a value, delete a key or entry, scale a number."""
    parent, key, node = None, None, doc
    while isinstance(node, dict | list) and node and (parent is None or data.draw(st.integers(0, 3)) > 0):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, data.draw(st.sampled_from(keys))
        node = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "scale"]))
    if parent is None:
        return data.draw(JSON)
    if action == "delete":
        del parent[key]
    elif action == "scale" and isinstance(node, int | float) and not isinstance(node, bool):
        parent[key] = node * data.draw(st.sampled_from([-1, 0, 10, 0.5, 1 + 1e-9, math.inf]))
    else:
        parent[key] = data.draw(JSON)
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_merge_ends_in_one_sentence_or_a_sound_state(runs: dict[str, Any], data: st.DataObject) -> None:
    docs = shards(runs)
    if data.draw(st.booleans()):
        docs = [seal(d) for d in docs]
    target = data.draw(st.integers(0, 1))
    edits = data.draw(st.integers(1, 3))
    for _ in range(edits):
        docs[target] = mutate(data, docs[target])
    texts = [json.dumps(d) for d in docs]
    if data.draw(st.integers(0, 9)) == 0:
        texts[target] = texts[target][:data.draw(st.integers(0, len(texts[target]) - 1))]
    with tempfile.TemporaryDirectory() as tmp:
        paths = write(Path(tmp), {"a.json": texts[0], "b.json": texts[1]})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                merged = merge_files(paths, Path(tmp) / "out.json")
        except InputError as e:
            assert str(e) and "\n" not in str(e)
            return
    for result in merged if isinstance(merged, list) else [merged]:
        read_result(result, "merged")



@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_resume_ends_in_one_sentence_or_a_sound_state(runs: dict[str, Any], vae_dir: Path, photo_dir: Path,
                                                           measure: Callable[..., Any], data: st.DataObject) -> None:
    doc = mutate(data, json.loads(runs["checkpoint"].read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.json"
        path.write_text(json.dumps(doc))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = measure(vae_dir, photo_dir, shard="0/2", checkpoint=str(path), resume=True,
                                 dtype="float32")
        except InputError as e:
            assert str(e) and "\n" not in str(e)
            return
    read_result(result, "resumed")
    assert result["num_images"] == 12
