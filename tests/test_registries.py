"""Registries users extend (autoencoder families, sources) validate what is registered and refuse
silent overwrites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from latent_scale.models import FAMILIES, REFUSED, Family, register_family
from latent_scale.sources import _ORDER, _REGISTRY, register_source, registered
from latent_scale.sources.images import ImageSource


@pytest.fixture
def families() -> Iterator[dict]:
    """The registry itself (every module holds the same dict), restored after the test."""
    saved, refused = dict(FAMILIES), dict(REFUSED)
    yield FAMILIES
    FAMILIES.clear()
    FAMILIES.update(saved)
    REFUSED.clear()
    REFUSED.update(refused)


def test_register_family_refuses_silent_overwrite(families: dict) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_family("AutoencoderKL", Family("latents"))
    assert families["AutoencoderKL"].stochastic
    register_family("AutoencoderKL", Family("latents"), replace=True)
    assert not families["AutoencoderKL"].stochastic


@pytest.mark.parametrize("name, family", [("not a name", Family("latents")), ("MyVAE", "latent_dist"),
                                          ("MyVAE", Family("latents", input="voxels"))])
def test_register_family_validates(families: dict, name: str, family: object) -> None:
    with pytest.raises(TypeError):
        register_family(name, family)
    assert name not in families


def test_register_family_adds_a_class(families: dict) -> None:
    register_family("MyVAE", Family("latent_dist", video=True))
    assert families["MyVAE"].video and families["MyVAE"].stochastic
    assert families["MyVAE"].takes == {"pixels", "frames"}


def test_registering_a_refused_class_lifts_its_refusal(families: dict) -> None:
    """A plugin that teaches the tool a refused class (here Allegro) is how support is added."""
    assert "AutoencoderKLAllegro" in REFUSED and "AutoencoderKLAllegro" not in families
    register_family("AutoencoderKLAllegro", Family("latent_dist", video=True, one_at_a_time=True))
    assert "AutoencoderKLAllegro" not in REFUSED and families["AutoencoderKLAllegro"].one_at_a_time


@pytest.fixture
def sources(monkeypatch: pytest.MonkeyPatch) -> None:
    registered()  # the built-in sources are imported on first use
    monkeypatch.setattr("latent_scale.sources._REGISTRY", dict(_REGISTRY))
    monkeypatch.setattr("latent_scale.sources._ORDER", list(_ORDER))


def test_register_source_refuses_overwrite_and_puts_user_sources_first(sources: None) -> None:
    from latent_scale import sources as registry

    class Mine(ImageSource):
        kind = "images"

    with pytest.raises(ValueError, match="already registered"):
        register_source(Mine)

    class Other(ImageSource):
        kind = "mine"

    register_source(Other)
    assert registry._ORDER[0] == "mine" and registry._ORDER[-1] == "images"
    register_source(Mine, replace=True)
    assert registry._REGISTRY["images"] is Mine


@pytest.mark.parametrize("bad", [dict, 3])
def test_register_source_validates(sources: None, bad: object) -> None:
    with pytest.raises(TypeError):
        register_source(bad)
