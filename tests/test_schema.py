"""The schema: every result and checkpoint read back is checked all the way down (each damaged or
edited field refused with one sentence naming the file and the field), its numbers against its
state; sound files pass and read back exactly as written; the key constants name the real keys."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from latent_scale import schema
from latent_scale.errors import InputError
from latent_scale.schema import check_checkpoint, parse_result, read_result, seal, state_checksum

Doc = dict[str, Any]


@pytest.fixture
def result(result_json: Path) -> Doc:
    return json.loads(result_json.read_text())


@pytest.fixture(scope="module")
def checkpoint(vae_dir: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory,
               measure: Callable[..., Any]) -> Doc:
    """A finished run's checkpoint: 24 photographs, all consumed."""
    path = tmp_path_factory.mktemp("ckpt") / "state.json"
    measure(vae_dir, photo_dir, dtype="float32", checkpoint=str(path))
    return json.loads(path.read_text())


def check_result(doc: Any, where: str) -> None:
    read_result(doc, where)


def refused(check: Callable[[], Any]) -> str:
    with pytest.raises(InputError) as e:
        check()
    return str(e.value)


def _channels(field: str, value: Callable[[list], list]) -> Callable[[Doc], None]:
    """Edit one per-channel list of the mode's moments (e.g. all counts)."""
    def edit(doc: Doc) -> None:
        moments = doc["state"]["mode"]["moments"]
        moments[field] = value(moments[field])
    return edit


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


def _times_ten(doc: Doc) -> None:
    """×10 counts, consistently across mode, sample and σ²: only the histograms can tell."""
    for part in (doc["state"]["mode"]["moments"], doc["state"]["sample"]["moments"], doc["state"]["sigma2"]):
        part["n"] = [10 * n for n in part["n"]]


def _other_edges(doc: Doc) -> None:
    hist = doc["state"]["sample"]["histogram"]
    hist["edges"] = [2 * e for e in hist["edges"]]


# (case, edit, the field the message must name)
DAMAGE = [
    ("negative_counts", _channels("n", lambda n: [-x for x in n]), "state.mode.moments.n[0]"),
    ("fractional_count", _channels("n", lambda n: [x + 0.5 for x in n]), "state.mode.moments.n[0]"),
    ("huge_counts", _channels("n", lambda n: [1e300] * len(n)), "state.mode.moments.n[0]"),
    ("counts_times_ten", _times_ten, "state.mode.histogram.counts[0] adds up to"),
    ("counts_differ_between_channels", _channels("n", lambda n: [n[0] + 1, *n[1:]]), "differs between channels"),
    ("negative_m2", _channels("m2", lambda m: [-m[0], *m[1:]]), "state.mode.moments.m2[0]"),
    ("negative_m4", _channels("m4", lambda m: [*m[:-1], -m[-1]]), "state.mode.moments.m4[3]"),
    ("nan_moment", _channels("mean", lambda m: [math.nan, *m[1:]]), "state.mode.moments.mean[0] is nan"),
    ("infinite_moment", _channels("m3", lambda m: [math.inf, *m[1:]]), "state.mode.moments.m3[0] is inf"),
    ("string_moment", _channels("m2", lambda m: ["1.0", *m[1:]]), "is a string, not a number"),
    ("short_channel_list", _channels("mean", lambda m: m[:-1]), "state.mode.moments.mean has 3 entries, not 4"),
    ("mean_outside_min_max", _channels("mean", lambda m: [1e6, *m[1:]]), "outside [min, max]"),
    ("more_images_than_values", _set("state.mode.images.n", 10**9), "state.mode.images.n"),
    ("negative_comoment_diagonal", _set("state.mode.images.comoment.0.0", -1.0), "negative mean square or var"),
    ("negative_histogram_count", _set("state.mode.histogram.counts.0.0", -1), "state.mode.histogram.counts[0][0]"),
    ("edges_not_increasing", _set("state.mode.histogram.edges.1", -1e9), "are not strictly increasing"),
    ("edges_differ_between_mode_and_sample", _other_edges, "state.sample.histogram.edges differ"),
    ("sample_counts_other_latents", _set("state.sample.images.n", 1), "state.sample.images.n"),
    ("channels_not_a_count", _set("state.channels", "4"), "state.channels"),
    ("stochastic_not_a_flag", _set("state.stochastic", 1), "state.stochastic"),
    ("missing_sigma2", lambda d: d["state"].pop("sigma2"), "state.sigma2 is missing"),
    ("state_is_a_list", _set("state", [1]), "state is a list"),
    ("shard_of_the_wrong_type", _set("run.shard", 3), "run.shard is 3"),
    ("shard_out_of_range", _set("run.shard", "2/2"), "run.shard is '2/2'"),
    ("skipped_entry_without_path", _set("skipped", [{"error": "x"}]), "skipped[0].path is missing"),
    ("deterministic_state_with_sample_posterior", _set("state.stochastic", False), "recipe.posterior"),
    ("latent_shape_of_other_channels", _set("latent_shape", [3, 16, 16]), "latent_shape"),
    ("missing_model", lambda d: d.pop("model"), "model is missing"),
]


@pytest.mark.parametrize(("edit", "names"), [c[1:] for c in DAMAGE], ids=[c[0] for c in DAMAGE])
def test_damaged_result_is_refused_naming_file_and_field(result: Doc, edit: Callable[[Doc], None],
                                                         names: str) -> None:
    edit(result)
    message = refused(lambda: check_result(result, "shard.json"))
    assert message.startswith("shard.json: ") and names in message, message
    assert "\n" not in message


def test_sound_result_passes_and_reads_back_as_written(result: Doc) -> None:
    typed = read_result(result, "r.json")
    assert typed.to_dict() == result
    assert typed.state.num_units == typed.units == result["num_units"] == result["num_images"]
    assert (typed.scale_factor, typed.per_channel.std, typed.recipe.posterior) == (
        result["scale_factor"], result["per_channel"]["std"], result["recipe"]["posterior"])


def test_key_constants_name_the_results_keys(result: Doc) -> None:
    constants = {v for k, v in vars(schema).items() if k.startswith("KEY_")}
    fields = {f.metadata.get("key", f.name) for f in dataclasses.fields(schema.Result)}
    assert constants == fields
    assert set(result) <= constants


def test_result_without_checksum_is_refused(result: Doc) -> None:
    result.pop("state_sha256")
    assert refused(lambda: check_result(result, "r.json")).startswith("r.json: state_sha256 is missing")


def test_unknown_top_level_key_is_refused(result: Doc) -> None:
    result["scale_factr"] = 0.2
    assert refused(lambda: check_result(result, "r.json")).startswith(
        "r.json: scale_factr is not a field this version of latent-scale knows")


@pytest.mark.parametrize(("key", "value"), [
    ("scale_factor", 0.3), ("shift_factor", 1.5), ("rms", 2.0), ("num_images", 7), ("num_units", 7),
    ("std", 1.0), ("scale_factor_ci95", [0.1, 0.2])])
def test_headline_that_disagrees_with_its_sealed_state_is_refused(result: Doc, key: str, value: Any) -> None:
    """The state's checksum still matches; only the numbers shown were edited."""
    result[key] = value
    message = refused(lambda: check_result(result, "r.json"))
    assert message.startswith("r.json: ") and key in message and message.endswith("the file is damaged or was edited")


def test_edited_per_channel_std_is_refused(result: Doc) -> None:
    result["per_channel"]["std"][2] *= 1.01
    assert refused(lambda: check_result(result, "r.json")).startswith(
        "r.json: per_channel is not what its state gives")


def test_checksum_is_sha256_of_canonical_json_whatever_the_spacing() -> None:
    import hashlib

    state = {"b": [1.5, 2], "a": {"y": None, "x": "é"}}
    expected = hashlib.sha256('{"a":{"x":"é","y":null},"b":[1.5,2]}'.encode()).hexdigest()
    assert state_checksum(state) == expected
    assert state_checksum(json.loads(json.dumps(state, indent=4))) == expected


def test_checksum_mismatch_is_refused_naming_state_sha256(result: Doc) -> None:
    sealed = seal(result)
    parse_result(sealed, "r.json")
    sealed["state"]["mode"]["min"][0] -= 1.0  # a plausible edit that no invariant catches
    message = refused(lambda: check_result(sealed, "r.json"))
    assert message == "r.json: state_sha256 does not match its state; the file is damaged or was edited"


@pytest.mark.parametrize(("doc", "says"), [
    ([1, 2], "r.json is not a latent-scale result (it holds a list)"),
    (None, "r.json is not a latent-scale result (it holds null)"),
    ({"_class_name": "AutoencoderKL"}, "r.json is not a latent-scale result (it holds a JSON object without"),
], ids=["json_array", "json_null", "other_json_object"])
def test_result_that_is_not_a_result_object_is_refused(doc: Any, says: str) -> None:
    assert refused(lambda: check_result(doc, "r.json")).startswith(says)


def test_newer_schema_says_which_version_reads_it(result: Doc) -> None:
    result["schema"] = 2
    assert refused(lambda: check_result(result, "r.json")) == (
        "r.json: schema is 2; this version of latent-scale reads schema 1")


def test_checkpoint_passed_as_result_gets_its_own_sentence(checkpoint: Doc) -> None:
    assert refused(lambda: check_result(checkpoint, "state.json")) == (
        "state.json is a checkpoint, not a result; finish the run with --resume, then use its -o result")


def test_sound_checkpoint_passes(checkpoint: Doc) -> None:
    check_checkpoint(checkpoint, "state.json", positions=24)
    check_checkpoint(seal(checkpoint), "state.json", positions=24)


@pytest.mark.parametrize(("edit", "names"), [
    (_set("run.done", 0), "run.done is 0, but view 0 holds 24 units and 0 skipped ones"),
    (_set("run.done", 10000), "run.done is 10000, more than the 24 units of this run"),
    (_set("run.done", -1), "run.done is -1"),
    (_set("run.stats.0.mode.moments.m2.0", -1.0), "run.stats[0].mode.moments.m2[0]"),
    (_set("run.latent_shapes.0", [8, 16, 16]), "run.latent_shapes[0]"),
    (_set("run.skipped", None), "run.skipped is null"),
    (lambda d: d.pop("run"), "run is missing"),
    (_set("fingerprint", "x"), "fingerprint is a string"),
], ids=["done_edited_to_0", "done_beyond_the_run", "done_negative", "negative_m2", "latent_shape_channels",
        "skipped_null", "without_run", "fingerprint_not_an_object"])
def test_damaged_checkpoint_is_refused_naming_the_field(checkpoint: Doc, edit: Callable[[Doc], None],
                                                        names: str) -> None:
    doc = copy.deepcopy(checkpoint)
    edit(doc)
    message = refused(lambda: check_checkpoint(doc, "state.json", positions=24))
    assert message.startswith("state.json: ") and names in message, message


def test_checkpoint_that_is_null_or_another_file_is_refused() -> None:
    for doc in (None, [], {"kind": "other"}):
        assert refused(lambda d=doc: check_checkpoint(d, "c.json", 5)).startswith(
            "c.json is not a latent-scale checkpoint")


def test_checkpoint_checksum_covers_done(checkpoint: Doc) -> None:
    """`done` is part of what the checksum covers: an edit that keeps the invariants is still caught."""
    sealed = seal(copy.deepcopy(checkpoint))
    sealed["run"]["upcast_chunks"] += 1
    assert "state_sha256 does not match its run" in refused(lambda: check_checkpoint(sealed, "c.json", 24))


def _mismatches(plain: Any, reference: Any, path: str = "") -> list[str]:
    """Where the plain-Python numbers differ from torch's: counts exactly, floats to 1e-12 (relative, or
    absolute for numbers near 0 such as a skew), undefined (NaN) only where the reference's is."""
    if isinstance(reference, dict):
        if not isinstance(plain, dict) or plain.keys() != reference.keys():
            return [f"{path}: keys {sorted(plain)} != {sorted(reference)}"]
        return [m for k in reference for m in _mismatches(plain[k], reference[k], f"{path}.{k}")]
    if isinstance(reference, list):
        if not isinstance(plain, list) or len(plain) != len(reference):
            return [f"{path}: {plain!r} != {reference!r}"]
        pairs = enumerate(zip(plain, reference, strict=True))
        return [m for i, (a, b) in pairs for m in _mismatches(a, b, f"{path}[{i}]")]
    if reference is None or isinstance(reference, int):
        same = plain == reference and type(plain) is type(reference)
    elif math.isnan(reference):
        same = isinstance(plain, float) and math.isnan(plain)
    else:
        same = isinstance(plain, float) and math.isclose(plain, reference, rel_tol=1e-12, abs_tol=1e-12)
    return [] if same else [f"{path}: {plain!r} != {reference!r}"]


def _estimates_agree(state_json: Doc, population: int | None) -> None:
    """recompute.estimates (plain Python, what reading a result checks) against PosteriorStats.estimates."""
    from latent_scale.schema import recompute
    from latent_scale.schema.parse import parse
    from latent_scale.stats import PosteriorStats

    plain = recompute.estimates(parse(schema.State, state_json, "state"), population)
    reference = PosteriorStats.from_dict(state_json).estimates(population)
    assert not _mismatches(plain, reference), _mismatches(plain, reference)[:5]


def test_numbers_checked_on_reading_equal_the_statistics_on_a_real_result(result: Doc) -> None:
    assert result["recipe"]["dataset_size"] is not None and result["state"]["stochastic"]
    for population in (None, result["recipe"]["dataset_size"]):
        _estimates_agree(result["state"], population)


@pytest.mark.parametrize(("stochastic", "units", "batches"), [(True, 5, 2), (False, 5, 2), (True, 1, 1)])
def test_numbers_checked_on_reading_equal_the_statistics_far_from_zero(stochastic: bool, units: int,
                                                                        batches: int) -> None:
    """Latents whose mean is 100 times their spread, 3-D ones (clips), and a single unit (no interval)."""
    import torch

    from latent_scale.stats import PosteriorStats, histogram_edges

    g = torch.Generator().manual_seed(0)
    stats = PosteriorStats(3, stochastic, histogram_edges(2.0))
    for _ in range(batches):
        mu = 200 + 2 * torch.randn(units, 3, 2, 5, 4, generator=g, dtype=torch.float64)
        sigma = torch.rand(mu.shape, generator=g, dtype=torch.float64) if stochastic else None
        stats.update(mu, sigma, torch.randn(mu.shape, generator=g, dtype=torch.float64) if stochastic else None)
    _estimates_agree(stats.to_dict(), 4 * units * batches)


@pytest.mark.parametrize("stochastic", [True, False])
def test_posterior_rules_read_back_are_those_of_the_statistics(stochastic: bool) -> None:
    from latent_scale.options import POSTERIORS
    from latent_scale.schema import recompute
    from latent_scale.stats import PosteriorStats

    stats = PosteriorStats(2, stochastic)
    for posterior in POSTERIORS:
        assert (recompute.realised_key(posterior, stochastic), recompute.base_key(posterior, stochastic)) == (
            stats.realised_key(posterior), stats.base_key(posterior))


def test_reading_a_result_back_needs_no_torch(result_json: Path) -> None:
    """apply, compare and plot check a result against its state before (or without) importing torch."""
    probe = ("import json, sys\nfrom latent_scale.schema import read_result\n"
             f"r = read_result(json.loads(open({str(result_json)!r}).read()), 'r.json')\n"
             "print(r.scale_factor, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    factor, torch_loaded = proc.stdout.split()
    assert (float(factor), torch_loaded) == (json.loads(result_json.read_text())["scale_factor"], "False")
