"""Where a local model folder keeps its autoencoder's config.json, and what a config declares.

Plain file reading, without torch: `apply` finds and checks the config it writes into with these
before (or without) anything large is imported; loading uses them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from .families import FAMILIES


def vae_component(index: dict[str, Any], where: str) -> str:
    """The autoencoder a pipeline's model_index.json names: `vae`, else the first of a supported
    class (Kandinsky 2.2 calls its VQModel `movq`)."""
    classes = {k: v[1] for k, v in index.items() if isinstance(v, list) and len(v) == 2 and isinstance(v[1], str)}
    if "vae" in classes:
        return "vae"
    found = [k for k, cls in classes.items() if cls in FAMILIES]
    if not found:
        raise InputError(f"no autoencoder found in {where}: its model_index.json names no `vae` component "
                         "and none of a supported class; pass --subfolder")
    return found[0]


def local_subfolder(root: Path, subfolder: str | None) -> str | None:
    """Where the autoencoder's config.json is in a local folder: --subfolder, the folder itself,
    the component its model_index.json names, or vae/."""
    if subfolder:
        if not (root / subfolder / "config.json").is_file():
            raise InputError(f"no config.json in {root / subfolder}; check --subfolder")
        return subfolder
    if (root / "config.json").is_file():
        return None
    index = root / "model_index.json"
    if index.is_file():
        try:
            sub = vae_component(json.loads(index.read_text()), str(root))
        except (OSError, ValueError) as e:
            raise InputError(f"could not read {index} ({e}); pass --subfolder") from e
        if not (root / sub / "config.json").is_file():
            raise InputError(f"no autoencoder found in {root}: model_index.json names `{sub}` but "
                             f"{root / sub / 'config.json'} is missing")
        return sub
    if (root / "vae" / "config.json").is_file():
        return "vae"
    raise InputError(f"no autoencoder found in {root} (no config.json, model_index.json or vae/config.json); "
                     "pass --subfolder or another folder")


def latent_channels(config: dict[str, Any], class_name: str | None = None) -> int | None:
    """The channel count a config declares: its family's rule, else latent_channels or z_dim (Wan and
    Qwen-Image); None where the config does not say."""
    family = FAMILIES.get(str(class_name or config.get("_class_name")))
    if family is not None and family.channels is not None:
        return int(family.channels(config))
    return config.get("latent_channels") or config.get("z_dim")
