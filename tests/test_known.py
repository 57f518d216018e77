"""Published factors: the registry, its extension by users, `known`, and the presets in configs/."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import latent_scale
from latent_scale.errors import InputError
from latent_scale.known import ENV_VAR, known_factors, lookup, read_registry
from latent_scale.options import make_options
from latent_scale.report import format_table

if TYPE_CHECKING:
    from conftest import Cli

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

@pytest.mark.parametrize("model, factor, shift", [
    ("CompVis/stable-diffusion-v1-4", 0.18215, None),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", 0.18215, None),
    ("stabilityai/stable-diffusion-2-1", 0.18215, None),
    ("stabilityai/stable-diffusion-xl-base-1.0", 0.13025, None),
    ("stabilityai/stable-diffusion-3.5-large", 1.5305, 0.0609),
    ("black-forest-labs/FLUX.1-dev", 0.3611, 0.1159),
    ("mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers", 0.41407, None),
])
def test_published_values(model: str, factor: float, shift: float | None) -> None:
    entry = lookup(model)
    assert entry is not None and entry.scaling_factor == factor and entry.shift_factor == shift
    assert lookup(model.upper() + "/") == entry  # case-insensitive, trailing slash tolerated


@pytest.mark.parametrize("model, cls", [
    ("Wan-AI/Wan2.1-T2V-14B-Diffusers", "AutoencoderKLWan"),
    ("Qwen/Qwen-Image", "AutoencoderKLQwenImage"),
    ("genmo/mochi-1-preview", "AutoencoderKLMochi"),
])
def test_per_channel_entries_match_the_diffusers_defaults(model: str, cls: str) -> None:
    """The registry's per-channel constants are the ones diffusers ships as class defaults."""
    import diffusers

    params = inspect.signature(getattr(diffusers, cls).__init__).parameters
    entry = lookup(model)
    assert list(entry.latents_mean) == pytest.approx(list(params["latents_mean"].default), abs=0)
    assert list(entry.latents_std) == pytest.approx(list(params["latents_std"].default), abs=0)


def test_every_entry_has_a_source_and_values() -> None:
    entries = known_factors()
    assert len(entries) >= 7
    for e in entries:
        assert e.source.startswith("https://") and e.ids
        assert (e.scaling_factor or 0) > 0 or (e.latents_mean and len(e.latents_mean) == len(e.latents_std))
    ids = [i.lower() for e in entries for i in e.ids]
    assert len(ids) == len(set(ids)), "an id is listed by two built-in entries"
    assert lookup("someone/unknown-model") is None


def write_registry(path: Path, model: str, factor: float) -> Path:
    path.write_text(f'[[model]]\nname = "Mine"\nids = ["{model}"]\nscaling_factor = {factor}\n'
                    f'source = "https://example.org/mine"\n')
    return path


def test_users_extend_and_override_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = write_registry(tmp_path / "mine.toml", "me/my-vae", 0.25)
    assert lookup("me/my-vae") is None
    assert lookup("me/my-vae", [mine]).scaling_factor == 0.25
    override = write_registry(tmp_path / "override.toml", "CompVis/stable-diffusion-v1-4", 0.195)
    monkeypatch.setenv(ENV_VAR, str(override))
    assert lookup("CompVis/stable-diffusion-v1-4").scaling_factor == 0.195  # a later file wins
    assert lookup("runwayml/stable-diffusion-v1-5").scaling_factor == 0.18215  # the rest of SD 1.x stays
    latent_scale.add_registry(mine)  # appends to $LATENT_SCALE_KNOWN, which monkeypatch restores
    assert lookup("me/my-vae").scaling_factor == 0.25
    assert lookup("CompVis/stable-diffusion-v1-4").scaling_factor == 0.195  # earlier entries stay


@pytest.mark.parametrize("text, needle", [
    ("not toml [", "not a readable TOML"),
    ("x = 1\n", "no [[model]]"),
    ('[[model]]\nname = "a"\nids = ["a/b"]\nsource = "s"\n', "needs scaling_factor"),
    ('[[model]]\nname = "a"\nids = ["a/b"]\nsource = "s"\nscaling_factor = 1\nscale = 2\n', "unknown key"),
    ('[[model]]\nname = "a"\nids = []\nsource = "s"\nscaling_factor = 1\n', "non-empty list of ids"),
    ('[[model]]\nname = "a"\nids = ["a/b"]\nsource = "s"\nlatents_mean = [1.0]\nlatents_std = [1.0, 2.0]\n',
     "same length"),
])
def test_malformed_registry_is_a_user_error(tmp_path: Path, text: str, needle: str, cli: Cli) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(InputError, match=needle.replace("[", r"\[")):
        read_registry(bad)
    cli.fails("known", "--registry", bad, says=[needle, str(bad)])


def test_known_command(tmp_path: Path, cli: Cli) -> None:
    code, out, _ = cli("known")
    assert code == 0
    for needle in ("0.18215", "0.13025", "1.5305 shift 0.0609", "0.3611 shift 0.1159", "0.41407", "Wan 2.1"):
        assert needle in out
    code, out, _ = cli("known", "--model", "black-forest-labs/FLUX.1-schnell")
    assert code == 0 and "0.3611" in out and "0.1159" in out and "github.com/black-forest-labs/flux" in out
    code, out, _ = cli("known", "--model", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "--json")
    assert code == 0 and len(json.loads(out)["latents_std"]) == 16
    cli.fails("known", "--model", "me/nothing", says=["no published values for 'me/nothing'"])
    mine = write_registry(tmp_path / "mine.toml", "me/my-vae", 0.25)
    code, out, _ = cli("known", "--model", "me/my-vae", "--registry", mine)
    assert code == 0 and "0.25" in out


def test_estimate_table_shows_the_published_value(vae_dir: Path, photo_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, measure: Callable[..., Any]) -> None:
    """A local folder is not a hub id, so register it as one: the table then names the published value."""
    monkeypatch.setenv(ENV_VAR, str(write_registry(tmp_path / "r.toml", str(vae_dir), 0.5)))
    r = measure(vae_dir, photo_dir, limit=6)
    table = format_table(r)
    assert f"0.5 (Mine); estimate / published = {r.scale_factor / 0.5:.4f}" in table
    monkeypatch.delenv(ENV_VAR)
    assert "published" not in format_table(r)


# --- presets ------------------------------------------------------------------------------------------

PRESETS = sorted(CONFIGS.glob("*.toml"))


def test_the_required_presets_exist() -> None:
    models = {make_options(config=str(p)).model for p in PRESETS}
    assert {"CompVis/stable-diffusion-v1-4", "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "stabilityai/stable-diffusion-2-1", "stabilityai/stable-diffusion-xl-base-1.0",
            "stabilityai/stable-diffusion-3-medium-diffusers", "black-forest-labs/FLUX.1-schnell",
            "mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers"} <= models


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_loads_and_names_the_published_value(path: Path) -> None:
    opts = make_options(config=str(path))
    preset = tomllib.loads(path.read_text())
    assert preset["name"] and preset["notes"]
    published = preset["published"]
    assert published["scaling_factor"] > 0
    entry = lookup(opts.model)  # the preset and the registry agree
    assert entry is not None and entry.scaling_factor == published["scaling_factor"]
    assert entry.shift_factor == published.get("shift_factor")


def test_classic_preset_records_the_original_script() -> None:
    preset = tomllib.loads((CONFIGS / "sd-v1-4-imagenette.toml").read_text())
    assert preset["published"] == {"scaling_factor": 0.18215, "classic_script": 0.19503}
    opts = make_options(config=str(CONFIGS / "sd-v1-4-imagenette.toml"))
    assert (opts.data, opts.size, opts.posterior, opts.seed) == ("imagenette", 512, "sample", 0)


# Every autoencoder class of the installed diffusers, with its status (`latent-scale known --classes`).

DOC = Path(__file__).resolve().parent.parent / "docs" / "models.md"


def exported_autoencoders() -> set[str]:
    """Found apart from the tool: every model class diffusers' autoencoders package exports with an
    encode(), plus the top-level names that say autoencoder, VAE or tokenizer (pipelines keep a few)."""
    import diffusers
    import diffusers.models.autoencoders as package

    found = {name for name, cls in vars(package).items() if isinstance(cls, type)
             and issubclass(cls, diffusers.ModelMixin) and callable(getattr(cls, "encode", None))}
    named = {name for name in dir(diffusers) if any(w in name.lower() for w in ("autoencoder", "vae", "tokenizer"))}
    return found | {name for name in named if "processor" not in name.lower()}


def test_every_exported_autoencoder_has_a_status() -> None:
    from latent_scale.models import FAMILIES, REFUSED
    from latent_scale.models.status import UNDECIDED, class_statuses

    rows = {row.name: row for row in class_statuses()}
    assert exported_autoencoders() <= set(rows)
    assert [name for name, row in rows.items() if row.status == UNDECIDED] == []
    for name, row in rows.items():
        assert (row.status == "supported") == (name in FAMILIES) and (row.status == "refused") == (name in REFUSED)
        assert row.input if row.status == "supported" else row.note.endswith("with --latents")


def test_a_class_diffusers_adds_later_is_not_yet_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers
    from diffusers.utils import DummyObject

    from latent_scale.models.status import UNDECIDED, class_statuses

    class AutoencoderKLFuture(diffusers.ModelMixin):
        def encode(self, x: Any) -> Any:
            return x

    class FutureAudioVAE(metaclass=DummyObject):
        _backends = ["torch", "future_audio"]

    class VaeFutureProcessor:  # no encode: not an autoencoder
        pass

    for cls in (AutoencoderKLFuture, FutureAudioVAE, VaeFutureProcessor):
        monkeypatch.setattr(diffusers, cls.__name__, cls, raising=False)
    rows = {row.name: row for row in class_statuses()}
    assert rows["AutoencoderKLFuture"].status == rows["FutureAudioVAE"].status == UNDECIDED
    assert rows["FutureAudioVAE"].note == "needs torch, future_audio to inspect"
    assert "VaeFutureProcessor" not in rows


def test_known_classes_command(cli: Cli) -> None:
    from latent_scale.models.status import class_statuses

    rows = class_statuses()
    code, out, _ = cli("known", "--classes")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["class", "status", "input", "posterior"]
    for row in rows:
        line = next(ln for ln in lines if ln.split()[:1] == [row.name])
        assert line.split()[1] == row.status and (row.input in line)
    assert lines[-1] == f"{sum(r.status == 'supported' for r in rows)} supported, " \
                        f"{sum(r.status == 'refused' for r in rows)} refused, 0 not yet decided"
    assert all(len(ln) <= 100 for ln in lines)
    code, out, _ = cli("known", "--classes", "--json")
    assert code == 0 and json.loads(out) == [r.to_dict() for r in rows]


def test_docs_models_table_is_the_installed_diffusers_one() -> None:
    """docs/models.md names the diffusers version its table was made with; on that version it is the table."""
    import diffusers

    from latent_scale.known import classes_markdown
    from latent_scale.models.status import class_statuses

    text = DOC.read_text()
    if f"diffusers {diffusers.__version__}" not in text:
        pytest.skip(f"docs/models.md describes another diffusers than {diffusers.__version__}")
    assert classes_markdown(class_statuses()) in text


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_registry_that_is_a_fifo_or_device_is_refused_not_read(tmp_path: Path, cli: Cli,
                                                                finishes: Any, special: str) -> None:
    """`known --registry` on a FIFO blocked forever and on /dev/zero never ended."""
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "mine.toml"
        os.mkfifo(path)
    code, _, err = finishes(lambda: cli("known", "--registry", path))
    cli.one_line_error(code, err, ["registry", "not a regular file"])


def test_classes_with_model_or_registry_is_refused_not_ignored(tmp_path: Path, cli: Cli) -> None:
    """`known --classes --model X` printed the class table and dropped --model without a word."""
    cli.fails("known", "--classes", "--model", "stabilityai/sdxl-vae", says=["--classes", "--model"])
    cli.fails("known", "--classes", "--registry", tmp_path / "mine.toml", says=["--registry"])


def test_every_entry_fits_100_columns_without_breaking_a_link() -> None:
    """`known --model stabilityai/sdxl-vae` printed its ids on one line of 170 characters."""
    from latent_scale.known import describe

    for entry in known_factors():
        text = describe(entry)
        for line in text.splitlines():
            assert len(line) <= 100 or " " not in line[16:], line  # only a single long link may overflow
        assert entry.source in text and all(i in text for i in entry.ids)
