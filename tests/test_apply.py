"""`apply`: the measured normalisation lands in a local VAE's config.json, which diffusers then reads,
and no config is ever lost, half-written, or left with two conventions at once."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLMochi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import latent_scale
from latent_scale.apply import apply_result, describe_apply
from latent_scale.conventions import CONVENTION_KEYS
from latent_scale.errors import InputError
from latent_scale.schema import build_result
from latent_scale.stats import PosteriorStats

if TYPE_CHECKING:
    from conftest import Cli

ROOT = os.geteuid() == 0


@pytest.fixture
def vae_copy(vae_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(vae_dir, tmp_path / "vae"))


@pytest.fixture
def result(result_json: Path) -> dict[str, Any]:
    """A fresh copy of the session's result, for a test to spoil."""
    return json.loads(result_json.read_text())


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def _set_keys(config: dict[str, Any]) -> set[str]:
    """The convention keys a pipeline would see as set."""
    return {k for k in CONVENTION_KEYS if config.get(k) is not None}


def _folder(tmp_path: Path, config: Any, name: str = "other") -> Path:
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps(config))
    return tmp_path / name


def _unchanged(folder: Path, before: bytes) -> None:
    """A refused apply leaves the folder exactly as it was: same config, no backup, no temp file."""
    assert (folder / "config.json").read_bytes() == before
    assert not [p.name for p in folder.iterdir() if p.name.startswith((".", "config.json."))]


def test_apply_scaling_factor_then_diffusers_reads_it(result_json: Path, vae_copy: Path, cli: Cli) -> None:
    r = json.loads(result_json.read_text())
    original = (vae_copy / "config.json").read_bytes()
    code, out, err = cli("apply", result_json, "--to", vae_copy)
    assert code == 0, err
    assert "scaling_factor=" in out and "config.json.bak" in out
    vae = AutoencoderKL.from_pretrained(vae_copy)
    assert vae.config.scaling_factor == pytest.approx(r["scale_factor"], rel=1e-5)
    assert vae.config.scaling_factor != 0.5  # the tiny model's shipped value
    assert (vae_copy / "config.json.bak").read_bytes() == original
    untouched = json.loads(original)
    new = _config(vae_copy)
    assert {k: v for k, v in new.items() if k != "scaling_factor"} == \
           {k: v for k, v in untouched.items() if k != "scaling_factor"}
    assert not list(vae_copy.glob(".*tmp"))  # no temporary file left behind


def test_apply_shift_and_per_channel(result: dict[str, Any], result_json: Path, vae_copy: Path) -> None:
    done = latent_scale.apply_result(result_json, vae_copy, shift=True)
    assert done["set"].keys() == {"scaling_factor", "shift_factor"}
    vae = AutoencoderKL.from_pretrained(vae_copy)
    assert vae.config.shift_factor == pytest.approx(result["shift_factor"], rel=1e-5)
    assert vae.config.scaling_factor == pytest.approx(result["scale_factor"], rel=1e-5)
    latent_scale.apply_result(result, vae_copy, per_channel=True)
    vae = AutoencoderKL.from_pretrained(vae_copy)
    assert vae.config.latents_mean == pytest.approx(result["per_channel"]["mean"], rel=1e-5)
    assert vae.config.latents_std == pytest.approx(result["per_channel"]["std"], rel=1e-5)
    assert vae.config.scaling_factor == 1.0  # pipelines divide by latents_std, then multiply by this
    latent_scale.apply_result(result, vae_copy, rms=True)
    assert AutoencoderKL.from_pretrained(vae_copy).config.scaling_factor == pytest.approx(1 / result["rms"], rel=1e-5)


def test_apply_into_a_pipeline_folder(result_json: Path, vae_dir: Path, tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    shutil.copytree(vae_dir, pipe / "vae")
    (pipe / "model_index.json").write_text(json.dumps({"vae": ["diffusers", "AutoencoderKL"]}))
    done = latent_scale.apply_result(result_json, pipe)
    assert done["config"] == pipe / "vae" / "config.json"
    scale = json.loads(result_json.read_text())["scale_factor"]
    loaded = AutoencoderKL.from_pretrained(pipe, subfolder="vae")
    assert loaded.config.scaling_factor == pytest.approx(scale, rel=1e-5)


@pytest.mark.parametrize("target, extra, needle", [
    ("CompVis/stable-diffusion-v1-4", [], "looks like a hub id"),
    ("./no/such/folder", [], "does not exist"),
    ("{vae}", ["--shift", "--per-channel"], "pick one"),
    ("{vae}/config.json", [], "is a file"),
    ("{empty}", [], "no autoencoder found"),
])
def test_apply_refuses_bad_targets(result_json: Path, vae_copy: Path, tmp_path: Path, target: str,
                                   extra: list[str], needle: str, cli: Cli) -> None:
    (tmp_path / "empty").mkdir()
    before = (vae_copy / "config.json").read_bytes()
    target = target.format(vae=vae_copy, empty=tmp_path / "empty")
    cli.fails("apply", result_json, "--to", target, *extra, says=[needle])
    _unchanged(vae_copy, before)


def test_apply_refuses_another_model(result: dict[str, Any], result_json: Path, tmp_path: Path,
                                     tiny_vae: Callable[..., Path], cli: Cli) -> None:
    other = Path(shutil.copytree(tiny_vae(latent_channels=8), tmp_path / "other"))
    cli.fails("apply", result_json, "--to", other, says=["4 latent channels", "has 8"])
    with pytest.raises(InputError, match="4 latent channels"):  # --force does not mix channel counts
        apply_result(result, other, force=True)


def test_apply_of_another_class_needs_force(result: dict[str, Any], vae_copy: Path) -> None:
    result["model"]["class"] = "AsymmetricAutoencoderKL"
    with pytest.raises(InputError, match="on class AsymmetricAutoencoderKL, but .* class AutoencoderKL; .*--force"):
        apply_result(result, vae_copy)
    assert apply_result(result, vae_copy, force=True)["changed"]


# --- nothing is lost -------------------------------------------------------------------------------------------

def test_apply_twice_keeps_the_original_backup(result_json: Path, vae_copy: Path, cli: Cli) -> None:
    original = (vae_copy / "config.json").read_bytes()
    assert cli("apply", result_json, "--to", vae_copy)[0] == 0
    first = (vae_copy / "config.json").read_bytes()
    code, out, err = cli("apply", result_json, "--to", vae_copy, "--rms")
    assert code == 0 and "config.json.bak.1" in out, err
    assert (vae_copy / "config.json.bak").read_bytes() == original  # the original, e.g. scaling_factor 0.5
    assert (vae_copy / "config.json.bak.1").read_bytes() == first
    again = apply_result(result_json, vae_copy, rms=True)  # the same values again: nothing to back up
    assert not again["changed"] and again["backup"] is None and not (vae_copy / "config.json.bak.2").exists()
    assert describe_apply(again) == f"{vae_copy / 'config.json'} already holds " \
                                    f"scaling_factor={again['set']['scaling_factor']}; nothing written"


def test_apply_shift_then_plain_removes_shift_factor(result: dict[str, Any], vae_copy: Path) -> None:
    apply_result(result, vae_copy, shift=True)
    assert _set_keys(_config(vae_copy)) == {"scaling_factor", "shift_factor"}
    done = apply_result(result, vae_copy)
    assert _set_keys(_config(vae_copy)) == {"scaling_factor"} and "shift_factor" not in _config(vae_copy)
    assert done["removed"] == ["shift_factor"]
    assert describe_apply(done).splitlines() == [
        f"set scaling_factor={_config(vae_copy)['scaling_factor']} in {vae_copy / 'config.json'}",
        "remove shift_factor (another convention's keys)",
        f"kept the previous config as {vae_copy / 'config.json.bak.1'}"]
    assert AutoencoderKL.from_pretrained(vae_copy).config.shift_factor is None


def test_apply_per_channel_then_rms_removes_latents_mean_and_std(result: dict[str, Any], vae_copy: Path) -> None:
    apply_result(result, vae_copy, per_channel=True)
    assert _set_keys(_config(vae_copy)) == {"scaling_factor", "latents_mean", "latents_std"}
    done = apply_result(result, vae_copy, rms=True)
    assert done["removed"] == ["latents_mean", "latents_std"]
    assert _set_keys(_config(vae_copy)) == {"scaling_factor"}
    assert _config(vae_copy)["scaling_factor"] == pytest.approx(1 / result["rms"], rel=1e-5)


def test_apply_dry_run_says_what_would_change_and_writes_nothing(result: dict[str, Any], vae_copy: Path) -> None:
    apply_result(result, vae_copy, shift=True)
    before = (vae_copy / "config.json").read_bytes()
    done = apply_result(result, vae_copy, per_channel=True, dry_run=True)
    assert (vae_copy / "config.json").read_bytes() == before and not (vae_copy / "config.json.bak.1").exists()
    lines = describe_apply(done).splitlines()
    assert lines[0].startswith("would set latents_mean=[") and lines[1] == "would remove shift_factor " \
           "(another convention's keys)"
    assert lines[2:] == [f"would keep the previous config as {vae_copy / 'config.json.bak.1'}",
                         "nothing written (--dry-run)"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o664])
def test_apply_keeps_the_config_mode_and_gives_it_to_the_backup(result: dict[str, Any], vae_copy: Path,
                                                                mode: int) -> None:
    (vae_copy / "config.json").chmod(mode)
    apply_result(result, vae_copy)
    assert stat.S_IMODE(os.stat(vae_copy / "config.json").st_mode) == mode
    assert stat.S_IMODE(os.stat(vae_copy / "config.json.bak").st_mode) == mode


@pytest.mark.skipif(not ROOT, reason="only root may give a file to another owner")
def test_apply_as_root_keeps_the_config_owner(result: dict[str, Any], vae_copy: Path) -> None:
    os.chown(vae_copy / "config.json", 1234, 4321)
    apply_result(result, vae_copy)
    for name in ("config.json", "config.json.bak"):
        assert (os.stat(vae_copy / name).st_uid, os.stat(vae_copy / name).st_gid) == (1234, 4321)


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders; see the errno test below")
def test_apply_into_a_read_only_folder_is_one_sentence(result_json: Path, vae_copy: Path, cli: Cli) -> None:
    before = (vae_copy / "config.json").read_bytes()
    vae_copy.chmod(0o555)
    try:
        cli.fails("apply", result_json, "--to", vae_copy, says=["permission denied"])
    finally:
        vae_copy.chmod(0o755)
    _unchanged(vae_copy, before)


@pytest.mark.parametrize("call, code, needle", [
    (1, errno.EACCES, "permission denied"),  # read-only folder: the backup cannot be made
    (1, errno.ENOSPC, "the disk is full"),
    (2, errno.ENOSPC, "the disk is full"),  # the backup was made, the config write fails: backup removed
])
def test_apply_write_failures_are_one_sentence_and_change_nothing(result_json: Path, vae_copy: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, call: int,
                                                                  code: int, needle: str, cli: Cli) -> None:
    before, real_replace, calls = (vae_copy / "config.json").read_bytes(), os.replace, []

    def replace(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == call:
            raise OSError(code, os.strerror(code))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    cli.fails("apply", result_json, "--to", vae_copy, says=[needle])
    _unchanged(vae_copy, before)


# --- values and configs that are refused --------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("scale_factor", 0.3), ("scale_factor", math.nan), ("scale_factor", None), ("scale_factor", -0.2),
    ("shift_factor", 0.0), ("rms", 1.0), ("std", [1.0, 0.0, 1.0, 1.0]), ("mean", [0.0, 0.5, 0.0, 0.0]),
])
def test_apply_refuses_a_headline_its_state_does_not_give(result: dict[str, Any], vae_copy: Path, field: str,
                                                          value: Any) -> None:
    """The state (sealed, untouched) says what the numbers are: an edited factor never reaches a config."""
    before = (vae_copy / "config.json").read_bytes()
    (result["per_channel"] if field in ("mean", "std") else result)[field] = value
    with pytest.raises(InputError) as e:
        apply_result(result, vae_copy, per_channel=field in ("mean", "std"), shift=field == "shift_factor")
    assert str(e.value).startswith("the result: ") and "\n" not in str(e.value)
    _unchanged(vae_copy, before)


def test_apply_of_an_edited_factor_writes_nothing(result: dict[str, Any], vae_copy: Path, tmp_path: Path,
                                                  cli: Cli) -> None:
    """The attack: the headline edited to 0.3 while state_sha256 still matches the state (which says 0.9)."""
    result["scale_factor"] = 0.3
    (tmp_path / "edited.json").write_text(json.dumps(result))
    before = (vae_copy / "config.json").read_bytes()
    cli.fails("apply", tmp_path / "edited.json", "--to", vae_copy,
              says=["scale_factor is not what its state gives (0.3 stated"])
    _unchanged(vae_copy, before)


def test_apply_refuses_a_constant_channel_the_state_really_has(result: dict[str, Any], vae_copy: Path) -> None:
    """A sound state with one channel that never varies: its latents_std would be 0."""
    state = PosteriorStats(4, True, torch.tensor(result["state"]["mode"]["histogram"]["edges"], dtype=torch.float64))
    mu = torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mu[:, 1] = 0.25
    state.update(mu, torch.zeros_like(mu), torch.zeros_like(mu))
    built = build_result(state, result["model"], result["recipe"], [], "mode", {}, [4, 2, 2])
    with pytest.raises(InputError, match="its latents_std would be 0, not positive"):
        apply_result(dict(built), vae_copy, per_channel=True)


def test_apply_refuses_nan_tokens_in_the_result_file(result: dict[str, Any], vae_copy: Path, tmp_path: Path) -> None:
    result["scale_factor"] = math.nan
    (tmp_path / "nan.json").write_text(json.dumps(result))  # Python writes the NaN token JSON does not have
    with pytest.raises(InputError, match="nan.json is not strict JSON: NaN is not a JSON number"):
        apply_result(tmp_path / "nan.json", vae_copy)


@pytest.mark.parametrize("content, needle", [
    ({"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8}, "has no _class_name, so it is not a "
                                                                               "diffusers autoencoder config"),
    ({"_class_name": ["AutoencoderKL"], "latent_channels": 4}, "has a _class_name that is a list"),
    ({"_class_name": "UNet2DConditionModel"}, "describes class UNet2DConditionModel, not a supported autoencoder"),
    ([1], "is not a diffusers config: it holds a JSON array where an object is expected"),
    (b'{"_class_name": "AutoencoderKL\xff"}', r"is not UTF-8 text \(bad byte at offset 30\)"),
])
def test_apply_refuses_configs_that_are_not_an_autoencoder(result: dict[str, Any], tmp_path: Path,
                                                           content: Any, needle: str) -> None:
    folder = _folder(tmp_path, None)
    config = folder / "config.json"
    config.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    before = config.read_bytes()
    with pytest.raises(InputError, match=needle):
        apply_result(result, folder)
    _unchanged(folder, before)


@pytest.mark.parametrize("text, needle", [
    ("[1]", r"is not a latent-scale result \(it holds a list\)"),
    ("null", r"is not a latent-scale result \(it holds null\)"),
    ("{}", r"is not a latent-scale result \(it holds a JSON object without schema or state\)"),
    ('{"schema": 1, "state": {"count', "the file ends early: truncated"),
])
def test_apply_refuses_files_that_are_not_results(vae_copy: Path, tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "r.json").write_text(text)
    with pytest.raises(InputError, match=needle):
        apply_result(tmp_path / "r.json", vae_copy)


@pytest.mark.parametrize("change, needle", [
    (lambda r: r.update(scale_factor="0.2"), "scale_factor is a string, not a number"),
    (lambda r: r.update(rms=True), "rms is true/false, not a number"),
    (lambda r: r["per_channel"]["std"].pop(), "per_channel.std has 3 entries, not the state's 4"),
    (lambda r: r["per_channel"].update(mean="x"), "per_channel.mean is a string, not a list"),
    (lambda r: r.update(model=["AutoencoderKL"]), "model is a list, not a JSON object"),
    (lambda r: r["model"].update({"class": 3}), "model.class is a number, not a string"),
    (lambda r: r["recipe"].pop("posterior"), "recipe.posterior is missing"),
])
def test_apply_refuses_results_with_wrong_types(result: dict[str, Any], vae_copy: Path, change: Any,
                                                needle: str) -> None:
    change(result)
    with pytest.raises(InputError, match=f"^the result: {re.escape(needle)}; the file is damaged or was edited$"):
        apply_result(result, vae_copy)


def _sweep(result: dict[str, Any], tmp_path: Path) -> Path:
    """A two-entry sweep: the result at its size (32) and relabelled as 64 with its numbers rescaled."""
    other = json.loads(json.dumps(result))
    other["recipe"]["size"] = 64
    (tmp_path / "sweep.json").write_text(json.dumps([result, other]))
    return tmp_path / "sweep.json"


def test_apply_refuses_a_size_sweep_without_size(result: dict[str, Any], vae_copy: Path, tmp_path: Path,
                                                 cli: Cli) -> None:
    cli.fails("apply", _sweep(result, tmp_path), "--to", vae_copy,
              says=["holds 2 results, one per --size of a sweep (32, 64); apply takes one: pass --size"])
    cli.fails("apply", _sweep(result, tmp_path), "--to", vae_copy, "--size", 128,
              says=["holds no result for --size 128; it holds sizes 32, 64"])


def test_apply_size_picks_the_sweep_entry(result: dict[str, Any], vae_copy: Path, tmp_path: Path, cli: Cli) -> None:
    code, out, err = cli("apply", _sweep(result, tmp_path), "--to", vae_copy, "--size", 64)
    assert code == 0, err
    assert AutoencoderKL.from_pretrained(vae_copy).config.scaling_factor == pytest.approx(result["scale_factor"],
                                                                                           rel=1e-5)


def test_apply_of_stored_latents_says_so_before_writing(result: dict[str, Any], vae_copy: Path) -> None:
    result["recipe"] = {**result["recipe"], "source": "latents", "data": "cache",
                        "cache": {"model": {"source": "./vae"}}}
    with pytest.warns(UserWarning, match=r"the result was measured on stored latents \(cache, saved from ./vae\)"):
        done = apply_result(result, vae_copy)
    assert done["changed"] and _config(vae_copy)["scaling_factor"] == pytest.approx(result["scale_factor"], rel=1e-5)


# --- classes whose configs hold other keys ------------------------------------------------------------------------

@pytest.mark.parametrize("class_name, flag, needle", [
    ("AutoencoderKLWan", {}, "AutoencoderKLWan does not read scaling_factor .* a plain apply would change nothing; "
                             "use --per-channel"),
    ("AutoencoderKLLTXVideo", {"per_channel": True}, "does not read latents_mean, latents_std .*; "
                                                     "use a plain apply or --rms"),
    ("AutoencoderKLFlux2", {}, "its pipelines normalise some other way"),
])
def test_apply_refuses_conventions_the_class_does_not_read(result: dict[str, Any], tmp_path: Path, class_name: str,
                                                           flag: dict, needle: str) -> None:
    folder = _folder(tmp_path, {"_class_name": class_name, "latent_channels": 4})
    with pytest.raises(InputError, match=needle):
        apply_result(result, folder, force=True, **flag)


def test_apply_per_channel_to_wan_writes_no_scaling_factor(result: dict[str, Any], tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"_class_name": "AutoencoderKLWan", "z_dim": 4})
    done = apply_result(result, folder, per_channel=True, force=True)
    assert set(done["set"]) == {"latents_mean", "latents_std"} == _set_keys(_config(folder))


def test_apply_nulls_keys_whose_class_default_would_normalise(result: dict[str, Any], tmp_path: Path) -> None:
    """Mochi's class default latents_mean is its published one: a removed key would silently come back."""
    folder = _folder(tmp_path, {"_class_name": "AutoencoderKLMochi", "latent_channels": 4, "scaling_factor": 1.0,
                                "latents_mean": [0.1] * 4, "latents_std": [2.0] * 4})
    done = apply_result(result, folder, force=True)
    assert done["set"]["latents_mean"] is None and done["removed"] == []
    init, *_ = AutoencoderKLMochi.extract_init_dict(_config(folder))
    assert init["latents_mean"] is None and init["latents_std"] is None
    assert "latents_mean=null" in describe_apply(done)


def test_class_keys_are_the_defaults_of_each_class_in_diffusers() -> None:
    """apply's table of the convention keys each class reads (so it never imports diffusers) against the
    installed diffusers' signatures, for every supported class diffusers has."""
    import inspect

    import diffusers

    from latent_scale.apply import CLASS_KEYS, PER_CHANNEL
    from latent_scale.models import FAMILIES

    have = [name for name in FAMILIES if hasattr(diffusers, name)]
    assert set(have) <= set(CLASS_KEYS) and set(CLASS_KEYS) <= set(FAMILIES)
    for name in have:
        params = inspect.signature(getattr(diffusers, name).__init__).parameters
        found = {k: PER_CHANNEL if isinstance(params[k].default, (list, tuple)) else params[k].default
                 for k in CONVENTION_KEYS if k in params}
        assert CLASS_KEYS[name] == found, name


PROBE = ("import sys\nfrom latent_scale.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
         "    print(e.code, sorted(m for m in ('torch', 'diffusers', 'numpy', 'PIL') if m in sys.modules))\n")


def _probe(*argv: object) -> subprocess.CompletedProcess:
    """The command line in a fresh process; its last line: exit code and the large libraries it imported."""
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True, text=True, timeout=120)


def test_apply_dry_run_imports_no_large_library(result_json: Path, vae_copy: Path) -> None:
    """A good result checked against its state and the config checked against the class: all in plain Python."""
    proc = _probe("apply", result_json, "--to", vae_copy, "--dry-run")
    assert proc.stdout.splitlines()[-1] == "0 []", proc.stdout + proc.stderr
    assert "would set scaling_factor=" in proc.stdout


@pytest.mark.parametrize("command", [["merge", "missing.json", "-o", "merged.json"], ["compare", "missing.json"],
                                     ["compare", "RESULT", "damaged.json"]])
def test_merge_and_compare_refuse_a_missing_or_damaged_file_before_importing_torch(
        result_json: Path, tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "damaged.json").write_text('{"scale_factor": ')
    argv = [str(result_json) if a == "RESULT" else str(tmp_path / a) if a.endswith(".json") else a for a in command]
    proc = _probe(*argv)
    assert proc.stdout.splitlines()[-1] == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.count("latent-scale: error:") == 1 and "Traceback" not in proc.stderr


# --- fuzz: any mutation of a valid result gives a sound config or one InputError ----------------------------------

NUMBERS = (st.none() | st.floats() | st.integers(-(10**400), 10**400)
           | st.sampled_from([0, 0.0, -1.0, 5e-324, 1.797e308, True]))
JSON_VALUES = NUMBERS | st.lists(NUMBERS, min_size=1, max_size=5) | st.recursive(
    st.none() | st.booleans() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
ONE_IN_TEN = st.sampled_from([True] + [False] * 9)
FIELDS = [("scale_factor",), ("shift_factor",), ("rms",), ("per_channel",), ("per_channel", "mean"),
          ("per_channel", "std"), ("model",), ("model", "class"), ("schema",), ("state",), ("recipe",),
          ("recipe", "posterior"), ("recipe", "size")]


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> str:
    """The result's text after a few random edits (replace or delete a field or a list item), maybe cut short,
    or another JSON value altogether."""
    r = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        *path, key = draw(st.sampled_from(FIELDS))
        holder = r.get(path[0]) if path else r
        if not isinstance(holder, dict):
            continue
        item = holder.get(key)
        if isinstance(item, list) and item and draw(st.booleans()):
            item[draw(st.integers(0, len(item) - 1))] = draw(NUMBERS)
        elif draw(ONE_IN_TEN):
            holder.pop(key, None)
        else:
            holder[key] = draw(JSON_VALUES)
    text = json.dumps(draw(JSON_VALUES) if draw(ONE_IN_TEN) else r)
    return text[:draw(st.integers(0, len(text)))] if draw(ONE_IN_TEN) else text


def _parsed_or_file(text: str, file: Path) -> Any:
    """What Python makes of the text (NaN included), for the API's dict input; the file if it is no JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return file


def _sound(config: dict[str, Any], original: dict[str, Any], convention: str) -> None:
    """Exactly one convention's keys, with finite values (positive factors and stds); nothing else changed."""
    want = {"scale": {"scaling_factor"}, "rms": {"scaling_factor"}, "shift": {"scaling_factor", "shift_factor"},
            "per_channel": {"scaling_factor", "latents_mean", "latents_std"}}[convention]
    assert _set_keys(config) == want
    for key in want:
        values = config[key] if isinstance(config[key], list) else [config[key]]
        assert all(isinstance(x, float) and math.isfinite(x) for x in values)
        assert key in ("shift_factor", "latents_mean") or all(x > 0 for x in values)
    assert {k: v for k, v in config.items() if k not in CONVENTION_KEYS} == \
           {k: v for k, v in original.items() if k not in CONVENTION_KEYS}


def test_apply_fuzz_mutated_results_write_a_sound_config_or_refuse(result_json: Path, vae_dir: Path,
                                                                   tmp_path: Path) -> None:
    base, original = json.loads(result_json.read_text()), (vae_dir / "config.json").read_bytes()
    folder = _folder(tmp_path, None, "vae")

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(text=mutated(base), convention=st.sampled_from(["scale", "shift", "per_channel", "rms"]),
           as_dict=st.booleans())
    def check(text: str, convention: str, as_dict: bool) -> None:
        for p in folder.iterdir():
            p.unlink()
        (folder / "config.json").write_bytes(original)
        (tmp_path / "r.json").write_text(text)
        source = _parsed_or_file(text, tmp_path / "r.json") if as_dict else tmp_path / "r.json"
        try:
            apply_result(source, folder, **({convention: True} if convention != "scale" else {}))
        except InputError as e:
            assert "\n" not in str(e)
            _unchanged(folder, original)
            return
        _sound(_config(folder), json.loads(original), convention)

    check()
