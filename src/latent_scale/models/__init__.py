"""Any diffusers autoencoder, reduced to posterior(x) = (μ, logvar | None).

families: which classes are supported (Family, FAMILIES, register_family) and which are refused
(REFUSED); folders: where a local folder keeps the config and what it declares (no torch); loading:
finding and safely loading a model; device: device and dtype choice; encoder: the Encoder wrapper.
Knows nothing of data files. Names are imported from their module on first use (PEP 562), so
reading the registry or a config (`apply`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "device": ("cpu_has_native_bf16", "resolve_device", "resolve_dtype"),
    "encoder": ("DECODER_PARTS", "Encoder", "temporal_compression"),
    "families": ("FAMILIES", "REFUSED", "register_family"),
    "families_audio": ("AudioModel", "audio_of"),
    "family": ("Audio", "Family"),
    "folders": ("latent_channels", "local_subfolder"),
    "loading": ("ModelInfo", "Where", "load_model"),
}
_MODULE = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _MODULE:
        return getattr(importlib.import_module(f".{_MODULE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_MODULE)
