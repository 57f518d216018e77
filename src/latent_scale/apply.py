"""`latent-scale apply`: write a result's normalisation into a local VAE's config.json, losing nothing.

A mistyped or stale factor silently ruins a training run, so apply writes atomically, keeps every
earlier config (config.json.bak is the original and is never overwritten; later ones are numbered),
removes the keys of the conventions it does not write, and refuses values no pipeline can use.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from .conventions import CONVENTION_KEYS, normalisations
from .errors import InputError
from .outputs import check_output, write_atomic, write_json
from .reading import as_object, parse_json, read_bytes
from .schema import Result
from .schema.sweep import pick_size, read_result_file, read_results

FLAGS = {"scale": "a plain apply", "shift": "--shift", "per_channel": "--per-channel", "rms": "--rms"}
POSITIVE = ("scaling_factor", "latents_std")  # divided by or multiplied into latents: must be > 0
PER_CHANNEL = "per-channel constants"  # a class default of one value per channel (it normalises)
# The convention keys each supported class's __init__ takes, with their defaults (diffusers 0.42): all
# apply needs to know of a class, without importing diffusers (seconds). tests/test_apply.py checks it
# against the installed diffusers' signatures; a class missing here is read from diffusers itself.
_NONE = {"shift_factor": None, "latents_mean": None, "latents_std": None}
_STATS = {"latents_mean": PER_CHANNEL, "latents_std": PER_CHANNEL}
CLASS_KEYS: dict[str, dict[str, Any]] = {
    "AutoencoderKL": {"scaling_factor": 0.18215, **_NONE},
    "AsymmetricAutoencoderKL": {"scaling_factor": 0.18215},
    "AutoencoderKLTemporalDecoder": {"scaling_factor": 0.18215},
    "ConsistencyDecoderVAE": {"scaling_factor": 0.18215},
    "AutoencoderKLHunyuanImage": {"scaling_factor": None},
    "AutoencoderDC": {"scaling_factor": 1.0},
    "AutoencoderTiny": {"scaling_factor": 1.0, "shift_factor": 0.0},
    "VQModel": {"scaling_factor": 0.18215},
    "AutoencoderRAE": {"scaling_factor": 1.0, "latents_mean": None, "latents_std": None},
    "AutoencoderKLWan": _STATS,
    "AutoencoderKLCogVideoX": {"scaling_factor": 1.15258426, **_NONE},
    "AutoencoderKLHunyuanVideo": {"scaling_factor": 0.476986},
    "AutoencoderKLLTXVideo": {"scaling_factor": 1.0},
    "AutoencoderKLMochi": {"scaling_factor": 1.0, **_STATS},
    "AutoencoderKLHunyuanVideo15": {"scaling_factor": 1.03682},
    "AutoencoderKLLTX2Video": {"scaling_factor": 1.0},
    "AutoencoderKLMagvit": {"scaling_factor": 0.7125},
    "AutoencoderKLCosmos": {"scaling_factor": 1.0, **_STATS},
    "AutoencoderKLMiniMaxH3": _STATS,
    "Kandinsky6SRVAE": {"scaling_factor": 0.910344004631042},
    "AutoencoderKLQwenImage": _STATS,
    "AutoencoderKLQwenImage21": _STATS,
    "AutoencoderKLHunyuanImageRefiner": {"scaling_factor": 1.03682},
    "AutoencoderKLMiniMaxH3Audio": {"latents_mean": None, "latents_std": None},
    "MMAudioVAE": {"scaling_factor": 0.417},
    **dict.fromkeys(("AutoencoderKLFlux2", "AutoencoderKLKVAE", "AutoencoderKLKVAEVideo", "AutoencoderVidTok",
                     "AutoencoderOobleck", "AutoencoderSAME", "AutoencoderKLKVAEAudio", "Cosmos3AVAEAudioTokenizer",
                     "AutoencoderKLLTX2Audio", "LongCatAudioDiTVae"), {}),  # read none of them
}


def apply_result(result: dict[str, Any] | list[dict[str, Any]] | str | Path, to: str | Path, *, shift: bool = False,
                 per_channel: bool = False, rms: bool = False, subfolder: str | None = None,
                 dry_run: bool = False, force: bool = False, size: int | None = None) -> dict[str, Any]:
    """Write a result's normalisation (plain scaling_factor by default; shift/per_channel/rms pick another
    convention, see conventions.CONVENTIONS) into the config.json of the local VAE folder `to`.

    The result is read through the schema: its numbers must be those its sealed state gives (an edited
    factor is refused, never written); `size` picks the entry of a --size sweep. `force` allows a config
    of another class than the one measured; nothing overrides the other checks.
    Returns {"config", "backup" (where the old config goes; None when nothing changes), "set": {key: value}
    (null where a key is unset rather than removed), "removed": [keys], "changed", "dry_run"};
    describe_apply words it.
    """
    convention = _convention(shift, per_channel, rms)
    r, name = _read_result(result, size)
    path = _config_path(to, subfolder)
    if not dry_run:
        check_output(path, inputs=[result] if isinstance(result, (str, Path)) else (), what="--to", force=True)
    raw = read_bytes(path)
    config = as_object(parse_json(raw, path), path, "diffusers config")
    _check_target(r, config, path, force)
    defaults = _class_defaults(config["_class_name"])
    values = _fit_to_class(_values(r, convention, name), convention, config["_class_name"], defaults)
    new, removed = _updated(config, values, defaults)
    changed = new != config
    backup = _next_backup(path) if changed else None
    _say_if_stored(r, name)
    if changed and not dry_run:
        _replace_config(path, new, raw, backup)
    unset = {k: None for k in removed if k in new}  # set to null: the class default would apply otherwise
    return {"config": path, "backup": backup, "set": {**values, **unset},
            "removed": [k for k in removed if k not in new], "changed": changed, "dry_run": dry_run}


def describe_apply(done: dict[str, Any]) -> str:
    """The lines the CLI prints: exactly which keys were (or would be) set and removed, and the backup."""
    would = "would " if done["dry_run"] else ""
    values = ", ".join(f"{k}={json.dumps(v)}" for k, v in done["set"].items())
    if not done["changed"]:
        return f"{done['config']} already holds {values}; nothing written"
    lines = [f"{would}set {values} in {done['config']}"]
    if done["removed"]:
        lines.append(f"{would}remove {', '.join(done['removed'])} (another convention's keys)")
    lines.append(f"{'would keep' if would else 'kept'} the previous config as {done['backup']}")
    if done["dry_run"]:
        lines.append("nothing written (--dry-run)")
    return "\n".join(lines)


def _convention(shift: bool, per_channel: bool, rms: bool) -> str:
    if sum((shift, per_channel, rms)) > 1:
        raise InputError("--shift, --per-channel and --rms are alternative conventions; pick one")
    return "shift" if shift else "per_channel" if per_channel else "rms" if rms else "scale"


def _read_result(result: dict[str, Any] | list[dict[str, Any]] | str | Path,
                 size: int | None) -> tuple[Result, str]:
    """The one result to apply (checked, and picked by --size from a sweep) and the name errors use for it."""
    name = str(result) if isinstance(result, (str, Path)) else "the result"
    found = read_result_file(result) if isinstance(result, (str, Path)) else read_results(result, name)
    return pick_size(found, size, name, "apply"), name


def _say_if_stored(r: Result, name: str) -> None:
    """Before anything is written: a factor measured on stored latents is theirs (their posterior, their
    encode), which the user should know before it goes into a config."""
    if r.recipe.source == "latents" or r.recipe.cache is not None:
        saved = (r.recipe.cache or {}).get("model") or {}
        origin = f", saved from {saved.get('source')}" if isinstance(saved, dict) and saved.get("source") else ""
        warnings.warn(f"{name} was measured on stored latents ({r.recipe.data}{origin}), posterior "
                      f"{r.recipe.posterior}: the factor applied is theirs", stacklevel=3)


def _looks_like_hub_id(s: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", s) is not None and not s.startswith(".")


def _config_path(to: str | Path, subfolder: str | None) -> Path:
    """The config.json to update: in `to`, its --subfolder, or the VAE component of a pipeline folder."""
    from .models import local_subfolder

    folder = Path(to).expanduser()
    if not folder.exists():
        if _looks_like_hub_id(str(to)):
            raise InputError(f"--to {to} looks like a hub id; apply writes into a local folder: download it "
                             f"(huggingface-cli download {to} --local-dir DIR) and pass DIR")
        raise InputError(f"--to {to} does not exist; pass the folder that holds the VAE's config.json")
    if not folder.is_dir():
        raise InputError(f"--to {to} is a file; pass the folder that holds the VAE's config.json")
    sub = local_subfolder(folder, subfolder)
    return folder / sub / "config.json" if sub else folder / "config.json"


def _check_target(r: Result, config: dict[str, Any], path: Path, force: bool) -> None:
    """Refuse a config that is not a supported autoencoder, or not of the model measured."""
    from .models import FAMILIES, latent_channels

    have, want = config.get("_class_name"), r.model.class_name
    if not isinstance(have, str):
        found = "no _class_name" if have is None else f"a _class_name that is a {type(have).__name__}"
        raise InputError(f"{path} has {found}, so it is not a diffusers autoencoder config "
                         "(a transformers model's?); pass the VAE's folder")
    if have not in FAMILIES:
        raise InputError(f"{path} describes class {have}, not a supported autoencoder; pass the VAE's folder "
                         "(or --subfolder)")
    if want and want != have and not force:
        raise InputError(f"the result was measured on class {want}, but {path} describes class {have}; pass the folder "
                         "of the model you measured, or --force if it is the same model under another class")
    channels, measured = latent_channels(config), r.state.channels
    if channels is not None and channels != measured:
        raise InputError(f"the result has {measured} latent channels, but {path} has {channels}; "
                         "pass the folder of the model you measured")


def _class_defaults(class_name: str) -> dict[str, Any] | None:
    """The convention keys a diffusers class reads, with their defaults (CLASS_KEYS; diffusers' own
    signature for a class registered later); None for a class diffusers lacks."""
    if class_name in CLASS_KEYS:
        return CLASS_KEYS[class_name]
    import inspect

    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None:
        return None
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k in CONVENTION_KEYS}


def _values(r: Result, convention: str, name: str) -> dict[str, dict[str, Any]]:
    """Every convention's config values, the chosen one checked: undefined, non-finite or (for factors and
    stds) non-positive values are refused, because a pipeline would silently produce garbage with them."""
    every = normalisations(r.to_dict())
    for key, value in every[convention].items():
        for x in value if isinstance(value, list) else [value]:
            if x is None or (key in POSITIVE and x <= 0):
                shown = "undefined (not a finite number)" if x is None else f"{x:g}, not positive"
                raise InputError(f"cannot apply {name} with {FLAGS[convention]}: its {key} would be {shown}; "
                                 f"check the result (it may come from too few {r.unit_name}s or constant latents)")
    return every


def _needed(values: dict[str, Any]) -> set[str]:
    """The keys that carry the normalisation (per-channel's scaling_factor of 1 changes nothing)."""
    return {k for k, v in values.items() if not (k == "scaling_factor" and v == 1.0)}


def _fit_to_class(every: dict[str, dict[str, Any]], convention: str, class_name: str,
                  defaults: dict[str, Any] | None) -> dict[str, Any]:
    """The chosen convention's values, limited to the keys the class reads; a convention whose keys the
    class ignores is refused, since writing them would change nothing."""
    values = every[convention]
    if defaults is None:
        return values
    ignored = sorted(_needed(values) - defaults.keys())
    if ignored:
        usable = [FLAGS[c] for c, v in every.items() if _needed(v) <= defaults.keys()]
        hint = f"use {' or '.join(usable)}" if usable else "its pipelines normalise some other way"
        raise InputError(f"{class_name} does not read {', '.join(ignored)} from its config, so {FLAGS[convention]} "
                         f"would change nothing; {hint}")
    return {k: v for k, v in values.items() if k in defaults}


def _updated(config: dict[str, Any], values: dict[str, Any],
             defaults: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The new config and the other conventions' keys taken out of it: removed, or set to null where the
    class would otherwise fall back to a default that normalises (Wan's built-in latents_mean)."""
    new, removed = {**config, **values}, []
    for key in CONVENTION_KEYS:
        if key in config and key not in values and config[key] is not None:
            removed.append(key)
            if (defaults or {}).get(key) in (None, 0, 0.0):
                del new[key]
            else:
                new[key] = None
    return new, removed


def _replace_config(path: Path, new: dict[str, Any], raw: bytes, backup: Path) -> None:
    """Back the old bytes up (with the config's mode), then write; a failed write takes its fresh backup
    with it, so the folder is as it was and a retry numbers nothing."""
    write_atomic(backup, raw, like=path)
    try:
        write_json(path, new)
    except BaseException:
        backup.unlink(missing_ok=True)
        raise


def _next_backup(path: Path) -> Path:
    """config.json.bak for the first apply (the original, never overwritten), then .bak.1, .bak.2, ..."""
    backup, n = path.with_name(path.name + ".bak"), 0
    while os.path.lexists(backup):
        n += 1
        backup = path.with_name(f"{path.name}.bak.{n}")
    return backup
