"""The Hugging Face hub, asked once: can it be reached, and what to say when it cannot.

Without a network huggingface_hub retries every file for about a minute and diffusers then blames
a missing config.json. One short TCP probe before the first hub call answers instead: no hub and
no cached copy is one clear error in seconds; no hub but a cached copy switches this process to
offline mode, so the cache is used without a single retry. Every offline message suggests what
works without a network with what the user has: local data, and a local model (the demo VAE when
they have none) only when theirs is neither a local path nor cached.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.request
import warnings
from urllib.parse import urlsplit

from .errors import InputError

DEFAULT_ENDPOINT = "https://huggingface.co"
PORTS = {"https": 443, "http": 80}
TRUE = {"1", "ON", "YES", "TRUE"}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_NAME = r"\w(?:[\w.-]{0,94}\w)?"  # the hub's rule (huggingface_hub's validate_repo_id), without importing it
HUB_ID = re.compile(rf"(?:{_NAME}/)?{_NAME}")
DEMO_VAE = "python scripts/make_demo_vae.py demo-vae"
NO_VAE = (f"no VAE at hand? `{DEMO_VAE}` in a clone of latent-scale builds a random-weight one to try the tool: "
          "`latent-scale estimate --model demo-vae --data samples --size 128`")
_probed: dict[str, str | None] = {}  # host:port -> why it cannot be reached (None: reachable), per process


def is_hub_id(model: str) -> bool:
    """Whether `model` is spelled as a hub repo id (NAME or ORG/NAME) rather than a file: a model that is
    neither an existing path nor this is a mistyped path, refused before anything heavy is imported."""
    return (HUB_ID.fullmatch(model) is not None and "--" not in model and ".." not in model
            and not model.lower().endswith((".git", *SINGLE_FILE_SUFFIXES)))


def missing_model(model: str) -> InputError:
    """The refusal of a --model that is neither an existing path nor spelled as a hub id."""
    return InputError(f"model path {model!r} does not exist (and it is not a hub id such as ORG/NAME)")


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _target() -> tuple[str, int]:
    """Host and port the hub's requests connect to: the proxy for the endpoint when one is set."""
    url = urlsplit(endpoint())
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return url.hostname or "", url.port or PORTS.get(url.scheme, 443)


def hub_unreachable(timeout: float = 2.0) -> str | None:
    """Why the hub cannot be reached (e.g. 'huggingface.co:443: timed out'), or None; probed once
    per process."""
    host, port = _target()
    key = f"{host}:{port}"
    if key not in _probed:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            _probed[key] = None
        except OSError as e:  # name resolution, refusal, no route or timeout
            _probed[key] = f"{key}: {e.strerror or e}"
    return _probed[key]


def offline_mode() -> bool:
    """Whether HF_HUB_OFFLINE is set (in the environment or already in huggingface_hub)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or (os.environ.get("HF_HUB_OFFLINE") or "").upper() in TRUE


def is_cached(model: str, subfolder: str | None = None, revision: str | None = None) -> bool:
    """Whether the Hugging Face cache holds a config of `model` (a bare VAE or a pipeline)."""
    from huggingface_hub import try_to_load_from_cache

    names = [f"{subfolder}/config.json"] if subfolder else ["config.json", "model_index.json"]
    return any(isinstance(try_to_load_from_cache(model, name, revision=revision), str) for name in names)


def go_offline() -> None:
    """Offline mode for this process (and its workers), so huggingface_hub reads the cache without retrying."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def check_hub(model: str, subfolder: str | None = None, revision: str | None = None,
              timeout: float = 2.0) -> None:
    """Call before the first hub request for `model`: refuse in seconds when the hub cannot be reached
    and nothing is cached; go offline when it cannot be reached but a copy is cached."""
    if offline_mode():
        return
    reason = hub_unreachable(timeout)
    if reason is None:
        return
    if not is_cached(model, subfolder, revision):
        raise InputError(f"no network: the Hugging Face hub ({endpoint()}) cannot be reached ({reason}) and the "
                         f"cache has no copy of {model}; pass a local folder with --model ({NO_VAE})")
    warnings.warn(f"the Hugging Face hub cannot be reached ({reason}): using the cached copy of {model}",
                  stacklevel=2)
    go_offline()


def offline_message(model: str) -> str:
    """What to say when loading `model` failed with HF_HUB_OFFLINE set (so never advise setting it)."""
    return (f"the Hugging Face cache has no copy of {model}; HF_HUB_OFFLINE is set, so pass a local folder "
            f"with --model, or unset HF_HUB_OFFLINE to download it ({NO_VAE})")


def data_hint() -> str:
    """What to pass when data could not be downloaded. The model loads first, so it already runs
    offline: local data is all the suggestion needs."""
    hint = "pass --data samples (photographs shipped with latent-scale) or a local image folder"
    return f"HF_HUB_OFFLINE covers the hub only; {hint}" if offline_mode() else hint
