"""`apply`: the measured normalisation lands in a local VAE's config.json, which diffusers then reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from diffusers import AutoencoderKL

import latent_scale
from conftest import run_cli as cli
from conftest import tiny_kl
from latent_scale.errors import InputError


@pytest.fixture
def vae_copy(vae_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(vae_dir, tmp_path / "vae"))


def test_apply_scaling_factor_then_diffusers_reads_it(result_json: Path, vae_copy: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    r = json.loads(result_json.read_text())
    original = (vae_copy / "config.json").read_bytes()
    code, out, err = cli(["apply", str(result_json), "--to", str(vae_copy)], capsys)
    assert code == 0, err
    assert "scaling_factor=" in out and "config.json.bak" in out
    vae = AutoencoderKL.from_pretrained(vae_copy)
    assert vae.config.scaling_factor == pytest.approx(r["scale_factor"], rel=1e-5)
    assert vae.config.scaling_factor != 0.5  # the tiny model's shipped value
    assert (vae_copy / "config.json.bak").read_bytes() == original
    untouched = json.loads(original)
    new = json.loads((vae_copy / "config.json").read_text())
    assert {k: v for k, v in new.items() if k != "scaling_factor"} == \
           {k: v for k, v in untouched.items() if k != "scaling_factor"}
    assert not list(vae_copy.glob(".*tmp"))  # no temporary file left behind


def test_apply_shift_and_per_channel(result_json: Path, vae_copy: Path) -> None:
    r = json.loads(result_json.read_text())
    done = latent_scale.apply_result(result_json, vae_copy, shift=True)
    assert done["written"].keys() == {"scaling_factor", "shift_factor"}
    vae = AutoencoderKL.from_pretrained(vae_copy)
    assert vae.config.shift_factor == pytest.approx(r["shift_factor"], rel=1e-5)
    assert vae.config.scaling_factor == pytest.approx(r["scale_factor"], rel=1e-5)
    latent_scale.apply_result(r, vae_copy, per_channel=True)
    vae = AutoencoderKL.from_pretrained(vae_copy)
    assert vae.config.latents_mean == pytest.approx(r["per_channel"]["mean"], rel=1e-5)
    assert vae.config.latents_std == pytest.approx(r["per_channel"]["std"], rel=1e-5)
    assert vae.config.scaling_factor == 1.0  # pipelines divide by latents_std, then multiply by this
    latent_scale.apply_result(r, vae_copy, rms=True)
    assert AutoencoderKL.from_pretrained(vae_copy).config.scaling_factor == pytest.approx(1 / r["rms"], rel=1e-5)


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
                                   extra: list[str], needle: str, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    before = (vae_copy / "config.json").read_bytes()
    target = target.format(vae=vae_copy, empty=tmp_path / "empty")
    code, _, err = cli(["apply", str(result_json), "--to", target, *extra], capsys)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert (vae_copy / "config.json").read_bytes() == before and not (vae_copy / "config.json.bak").exists()


def test_apply_refuses_another_model(result_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other"
    tiny_kl(latent_channels=8).save_pretrained(other)
    code, _, err = cli(["apply", str(result_json), "--to", str(other)], capsys)
    assert code == 2 and "4 latent channels" in err and "has 8" in err
    not_result = tmp_path / "x.json"
    not_result.write_text("{}")
    with pytest.raises(InputError, match="not a latent-scale result"):
        latent_scale.apply_result(not_result, other)
