"""`latent-scale apply`: write a result's normalisation into a local VAE's config.json."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from .conventions import normalisations
from .errors import InputError
from .io import _atomically, read_json, write_json


def _looks_like_hub_id(s: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", s) is not None and not s.startswith(".")


def apply_result(result: dict[str, Any] | str | Path, to: str | Path, *, shift: bool = False,
                 per_channel: bool = False, rms: bool = False, subfolder: str | None = None) -> dict[str, Any]:
    """Write a result's normalisation into a local VAE folder's config.json.

    Why: a mistyped factor silently ruins a training run, so the write is atomic, the old
    config stays as config.json.bak, and a result from another class or channel count is refused.
    Default is the global scaling_factor; shift/per_channel/rms pick another convention
    (see CONVENTIONS). Returns {"config": path, "backup": path, "written": {key: value}}.
    """
    from .models import latent_channels, local_subfolder

    if sum((shift, per_channel, rms)) > 1:
        raise InputError("--shift, --per-channel and --rms are alternative conventions; pick one")
    r = read_json(result) if isinstance(result, (str, Path)) else result
    if "scale_factor" not in r or "per_channel" not in r:
        raise InputError(f"{result if isinstance(result, (str, Path)) else 'the result'} is not a latent-scale result")
    folder = Path(to).expanduser()
    if not folder.exists():
        if _looks_like_hub_id(str(to)):
            raise InputError(f"--to {to} looks like a hub id; apply writes into a local folder: download it "
                             f"(huggingface-cli download {to} --local-dir DIR) and pass DIR")
        raise InputError(f"--to {to} does not exist; pass the folder that holds the VAE's config.json")
    if not folder.is_dir():
        raise InputError(f"--to {to} is a file; pass the folder that holds the VAE's config.json")
    sub = local_subfolder(folder, subfolder)
    path = folder / sub / "config.json" if sub else folder / "config.json"
    config = read_json(path)
    want, have = r["model"].get("class"), config.get("_class_name")
    if want and have and want != have:
        raise InputError(f"the result was measured on a {want}, but {path} describes a {have}; "
                         "pass the folder of the model you measured")
    channels = latent_channels(config)
    if channels is not None and channels != len(r["per_channel"]["mean"]):
        raise InputError(f"the result has {len(r['per_channel']['mean'])} latent channels, but {path} "
                         f"has {channels}; pass the folder of the model you measured")
    convention = "shift" if shift else "per_channel" if per_channel else "rms" if rms else "scale"
    written = normalisations(r)[convention]
    backup = path.with_name(path.name + ".bak")
    with _atomically(backup) as tmp:
        shutil.copy2(path, tmp)
    write_json(path, {**config, **written})
    return {"config": path, "backup": backup, "written": written}
