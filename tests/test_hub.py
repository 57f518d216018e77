"""Offline: an unreachable hub is detected once, in seconds, with one clear sentence; a cached copy
is used without retries. The network is never touched: the socket is monkeypatched."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from latent_scale import hub
from latent_scale.errors import InputError


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """HF_HUB_OFFLINE unset (the conftest sets it), no proxy, a fresh probe cache; returns the
    addresses probed. Connections fail unless a test replaces `connect`."""
    import huggingface_hub.constants as hf

    for var in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_probed", {})
    probed: list[tuple[str, int]] = []

    def unreachable(address: tuple[str, int], timeout: float) -> socket.socket:
        probed.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    return probed


def warm_cache(repo: str, name: str = "config.json") -> None:
    """One cached file of `repo` in the Hugging Face cache the conftest points into tmp_path."""
    import huggingface_hub.constants as hf

    commit = "a" * 40
    root = Path(hf.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    (root / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
    (root / "snapshots" / commit / name).write_text("{}")
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def test_unreachable_hub_without_a_cached_copy_is_one_sentence_in_seconds(online: list) -> None:
    start = time.monotonic()
    with pytest.raises(InputError) as e:
        hub.check_hub("org/vae")
    assert time.monotonic() - start < 2
    assert str(e.value) == ("no network: the Hugging Face hub (https://huggingface.co) cannot be reached "
                            "(huggingface.co:443: Network is unreachable) and the cache has no copy of org/vae; "
                            f"pass a local folder with --model ({hub.NO_VAE})")
    assert "config.json" not in str(e.value)


def test_hub_is_probed_once_per_process(online: list) -> None:
    for _ in range(3):
        with pytest.raises(InputError):
            hub.check_hub("org/vae")
    assert online == [("huggingface.co", 443)]


def test_unreachable_hub_with_a_cached_copy_goes_offline_without_retries(online: list) -> None:
    import os

    import huggingface_hub.constants as hf

    warm_cache("org/pipe", "model_index.json")
    with pytest.warns(UserWarning, match="cannot be reached .*: using the cached copy of org/pipe"):
        hub.check_hub("org/pipe")
    assert hf.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"


def test_reachable_hub_changes_nothing(online: list, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: socket.socket())
    hub.check_hub("org/vae")
    assert hf.HF_HUB_OFFLINE is False


def test_hf_hub_offline_set_means_no_probe(online: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.check_hub("org/vae")
    assert online == []


def test_probe_honours_hf_endpoint_and_proxies(online: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.internal:8080/")
    assert hub.hub_unreachable() == "mirror.internal:8080: Network is unreachable"
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    hub.hub_unreachable()
    assert online == [("mirror.internal", 8080), ("proxy.internal", 3128)]


def test_offline_message_never_advises_setting_what_is_already_set() -> None:
    message = hub.offline_message("org/vae")
    assert message == ("the Hugging Face cache has no copy of org/vae; HF_HUB_OFFLINE is set, so pass a local "
                       f"folder with --model, or unset HF_HUB_OFFLINE to download it ({hub.NO_VAE})")


@pytest.mark.parametrize("model, hub_id", [
    ("org/vae", True), ("vae", True), ("Org-1/my_vae.v2", True), ("stabilityai/sdxl-vae", True),
    ("./vae", False), ("/abs/vae", False), ("~/vae", False), ("a/b/c", False), ("org/vae.safetensors", False),
    ("vae.ckpt", False), ("org--x/vae", False), ("org/a..b", False), ("org/vae.git", False), ("my vae", False),
    ("-vae", False), ("org/", False), ("x" * 97, False),
])
def test_hub_id_spelling_follows_the_hubs_rule(model: str, hub_id: bool) -> None:
    """The hub's own rule (huggingface_hub's validate_repo_id), plus: a checkpoint file name is a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    assert hub.is_hub_id(model) is hub_id
    if hub_id:
        validate_repo_id(model)
    elif not model.endswith((".safetensors", ".ckpt")):
        with pytest.raises(HFValidationError):
            validate_repo_id(model)


def test_data_hint_says_hf_hub_offline_does_not_cover_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imagenette comes from outside the hub: with HF_HUB_OFFLINE set the hint says why it still failed."""
    import huggingface_hub.constants as hf

    local = "pass --data samples (photographs shipped with latent-scale) or a local image folder"
    assert hub.data_hint() == f"HF_HUB_OFFLINE covers the hub only; {local}"  # the conftest sets it
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    assert hub.data_hint() == local
