"""Mistakes answered before torch is imported: a --model, --data or --latents path that does not exist.

Importing torch and diffusers takes seconds; a mistyped path should not. These checks read only the
file system: anything a source or the hub could still make sense of (a keyword, a glob, a URL, a hub
id) passes, and the source or the model loader judges it later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import InputError
from .hub import is_hub_id, missing_model
from .sources.files import is_glob

DATA_KEYWORDS = ("imagenette", "samples")


def check_paths(opts: Any) -> None:
    """Refuse a --model, --data or --latents that names a path which does not exist (`opts`: Options)."""
    if opts.latents:
        _check_data("--latents", opts.latents)
    elif opts.data not in DATA_KEYWORDS:
        _check_data("--data", opts.data)
    model = opts.model
    if model and not Path(model).expanduser().exists() and not is_hub_id(model):
        raise missing_model(model)
    if model and Path(model).expanduser().exists() and not Path(model).expanduser().is_dir() \
            and not Path(model).expanduser().is_file():
        raise InputError(f"--model {model} is not a regular file or folder (a FIFO, device or socket); pass a "
                         "diffusers folder, a .safetensors/.ckpt file or a hub id")


def _check_data(flag: str, spec: str) -> None:
    what = "a folder, a .txt list, tar shards or parquet files (glob allowed)"
    path = Path(spec).expanduser()
    if path.exists() and not (path.is_dir() or path.is_file()):  # a FIFO would block, a device never end
        raise InputError(f"{flag} {spec} is not a regular file or folder (a FIFO, device or socket); pass {what}")
    if "://" in spec or is_glob(spec) or path.exists():
        return
    raise InputError(f"{flag} {spec} does not exist; pass {what}"
                     + (", samples or imagenette" if flag == "--data" else ""))
