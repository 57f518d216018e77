"""latent-scale: the latent scale factor (and shift) of an image autoencoder, measured exactly.

The API is loaded on first use (PEP 562), so `import latent_scale` and the CLI's --help stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .version import __version__ as __version__

_API = {
    "Options": "options", "estimate": "estimation", "Result": "schema", "ResultDict": "schema",
    "read_result": "schema", "format_snippets": "report",
    "apply_result": "apply", "normalisations": "conventions", "merge_results": "merge",
    "Published": "known", "add_registry": "known", "known_factors": "known", "lookup": "known",
    "plot_result": "plot", "register_family": "models", "register_source": "sources",
    "Accumulator": "accumulator",
}
__all__ = sorted([*_API, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'latent_scale' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
