"""Finding an autoencoder (hub repo, local folder, pipeline folder or single file) and loading it safely.

Pickled single files are opened with weights_only=True only; the class comes from the config and
must be registered (models/families.py), so a config cannot make the tool build an arbitrary class.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, one_line
from ..hardware import prefers_channels_last
from ..hub import SINGLE_FILE_SUFFIXES, is_hub_id, missing_model
from .device import resolve_device, resolve_dtype
from .encoder import Encoder
from .families import FAMILIES, REFUSED
from .folders import latent_channels, local_subfolder, vae_component

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
OFFLINE_HINT = (
    "without network access, pass a local diffusers folder or .safetensors file with --model "
    "(or set HF_HUB_OFFLINE=1 to use a warm Hugging Face cache)"
)


def _load_json(source: str, name: str, subfolder: str | None, revision: str | None,
               cache_dir: str | None) -> dict[str, Any]:
    """config.json or model_index.json from a local folder or a hub repo, fetched the way diffusers does."""
    from diffusers import ConfigMixin

    class _File(ConfigMixin):
        config_name = name

    return dict(_File.load_config(source, subfolder=subfolder, revision=revision, cache_dir=cache_dir))


def _hub_error(model: str, err: Exception) -> InputError:
    from ..hub import offline_message, offline_mode

    if offline_mode():  # never advise setting HF_HUB_OFFLINE when it is set
        return InputError(f"could not load model {model!r}: {offline_message(model)}")
    return InputError(f"could not load model {model!r} from the Hugging Face hub ({one_line(err)}); {OFFLINE_HINT}")


def _find_hub_config(model: str, subfolder: str | None, revision: str | None,
                     cache_dir: str | None) -> tuple[dict[str, Any], str | None]:
    """A hub repo is a bare VAE (config.json at the top) or a pipeline whose model_index.json names it."""
    try:
        if subfolder:
            return _load_json(model, "config.json", subfolder, revision, cache_dir), subfolder
        try:
            return _load_json(model, "config.json", None, revision, cache_dir), None
        except (OSError, ValueError) as bare:
            try:
                index = _load_json(model, "model_index.json", None, revision, cache_dir)
            except (OSError, ValueError):
                raise bare from None
        sub = vae_component(index, model)
        return _load_json(model, "config.json", sub, revision, cache_dir), sub
    except (OSError, ValueError) as e:
        raise _hub_error(model, e) from e


def _class_name(config: dict[str, Any], where: str) -> str:
    name = config.get("_class_name")
    if not name:
        raise InputError(f"{where} has no _class_name, so it is not a diffusers autoencoder config")
    return name


@dataclass(frozen=True)
class Where:
    """Where the autoencoder was found: how it is identified and reloaded."""

    source: str
    kind: str  # "hub", "folder" or "file"
    subfolder: str | None = None
    revision: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the result records about the model: where it came from, and what its config says
    about normalising latents (compared with the measurement)."""

    where: Where
    class_name: str
    config_scaling_factor: float | None = None
    config_shift_factor: float | None = None
    config_latents_mean: list[float] | None = None
    config_latents_std: list[float] | None = None
    force_upcast: bool | None = None
    latent_channels: int | None = None
    stochastic: bool = True
    video: bool = False

    @classmethod
    def of(cls, vae: torch.nn.Module, class_name: str, where: Where) -> ModelInfo:
        cfg, family = dict(vae.config), FAMILIES[class_name]
        return cls(where, class_name, cfg.get("scaling_factor"), cfg.get("shift_factor"),
                   _latent_norm(vae, cfg, "latents_mean"), _latent_norm(vae, cfg, "latents_std"),
                   cfg.get("force_upcast"), latent_channels(cfg, class_name), family.stochastic, family.video)

    def to_dict(self) -> dict[str, Any]:
        """The result's `model` field (names kept from schema 1)."""
        fields = {k: v for k, v in self.__dict__.items() if k not in ("where", "class_name")}
        w = self.where
        return {"source": w.source, "source_kind": w.kind, "subfolder": w.subfolder, "revision": w.revision,
                "variant": w.variant, "class": self.class_name, **fields}


def load_model(
    model: str,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    variant: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: str | None = None,
) -> Encoder:
    """Load the autoencoder `model` (hub id, local folder, pipeline folder or single file)."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    vae, class_name, where = _load_vae(model, subfolder, revision, variant, cache_dir)
    vae.eval().requires_grad_(False)
    family = FAMILIES[class_name]
    refusal = family.refuse(dict(vae.config)) if family.refuse else None
    if refusal:
        raise InputError(refusal)
    if dt == torch.float16 and vae.config.get("force_upcast"):  # as diffusers' pipelines do
        warnings.warn(f"{model} sets force_upcast (it overflows in float16): encoding in float32", stacklevel=2)
        dt = torch.float32
    encoder = Encoder(vae, family, torch.device("cpu"), torch.float32, ModelInfo.of(vae, class_name, where))
    encoder.to_dtype(dt)
    encoder.to_device(dev, channels_last=prefers_channels_last(dev, dt))  # the faster layout, measured
    return encoder


def _load_vae(model: str, subfolder: str | None, revision: str | None, variant: str | None,
              cache_dir: str | None) -> tuple[torch.nn.Module, str, Where]:
    """A single file, a local folder (VAE or pipeline) or a hub repo, in that order."""
    path = Path(model).expanduser()
    if path.is_file():
        if subfolder:
            raise InputError("--subfolder applies to folders and hub repos; for a single file, "
                             "put the model's config.json beside it")
        vae, class_name = _load_single_file(path)
        return vae, class_name, Where(model, "file", variant=variant)
    if path.is_dir():
        sub = local_subfolder(path, subfolder)
        where = path / sub / "config.json" if sub else path / "config.json"
        try:
            config = _load_json(str(path), "config.json", sub, None, None)
        except (OSError, ValueError) as e:
            raise InputError(f"could not read {where} ({one_line(e)})") from e
        found = Where(model, "folder", sub, revision, variant)
    elif not is_hub_id(model):
        raise missing_model(model)
    else:
        from ..hub import check_hub

        check_hub(model, subfolder, revision)  # seconds, not a minute of retries, when offline
        config, sub = _find_hub_config(model, subfolder, revision, cache_dir)
        where = f"{model}/{sub}/config.json" if sub else f"{model}/config.json"
        found = Where(model, "hub", sub, revision, variant)
    class_name = _class_name(config, str(where))
    return _from_pretrained(str(path) if found.kind == "folder" else model, class_name, found, cache_dir), \
        class_name, found


def _from_pretrained(source: str, class_name: str, where: Where, cache_dir: str | None) -> torch.nn.Module:
    try:
        return _class_for(class_name).from_pretrained(source, subfolder=where.subfolder, revision=where.revision,
                                                      variant=where.variant, cache_dir=cache_dir,
                                                      torch_dtype=torch.float32)
    except (OSError, ValueError) as e:
        if where.kind == "hub":
            raise _hub_error(source, e) from e
        raise InputError(f"could not load the autoencoder in {source}: {one_line(e)}") from e
    except (MemoryError, RuntimeError) as e:  # a config asking for more parameters than memory holds
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise InputError(f"could not build the {class_name} in {source}: its config asks for more memory than "
                         "this machine has; check the config's channel counts") from e


def _latent_norm(vae: torch.nn.Module, cfg: dict[str, Any], key: str) -> list[float] | None:
    """latents_mean/std from the config, or from the model's buffers (where LTX-Video keeps them)."""
    value = cfg.get(key)
    buffers = dict(vae.named_buffers(recurse=False))
    if value is None and key in buffers:
        value = buffers[key]
    try:  # per channel, however the config nests it (AutoencoderRAE keeps (C, 1, 1))
        return None if value is None else torch.as_tensor(value, dtype=torch.float64).flatten().tolist()
    except (TypeError, ValueError, RuntimeError):
        return None


def _class_for(class_name: str) -> type:
    """The diffusers class of a registered family; a refused class says why and what to do instead."""
    import diffusers

    if class_name in REFUSED:
        raise InputError(REFUSED[class_name])
    if class_name not in FAMILIES or not hasattr(diffusers, class_name):
        supported = ", ".join(sorted(n for n in FAMILIES if hasattr(diffusers, n)))
        raise InputError(f"autoencoder class {class_name!r} is not supported; supported classes: {supported}")
    return getattr(diffusers, class_name)


def _load_single_file(path: Path) -> tuple[torch.nn.Module, str]:
    """A single .safetensors/.ckpt file; pickles only with weights_only=True.

    Its class and config come from a diffusers config.json beside it (which is how it loads offline);
    without one it is taken as an AutoencoderKL and diffusers fetches the config from the hub.
    """
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise InputError(f"{path} is not a model file; use a .safetensors or .ckpt file, or a diffusers folder")
    beside = path.parent / "config.json"
    try:
        class_name = json.loads(beside.read_text()).get("_class_name") if beside.is_file() else None
    except (OSError, ValueError, AttributeError) as e:
        raise InputError(f"could not read {beside}, the config beside {path.name} ({e})") from e
    config_dir = str(path.parent) if class_name else None
    class_name = class_name or "AutoencoderKL"
    cls = _class_for(class_name)
    if not hasattr(cls, "from_single_file"):
        raise InputError(f"{class_name} cannot be loaded from a single file; pass its diffusers folder with --model")

    if path.suffix.lower() in PICKLE_SUFFIXES:
        try:  # mmap works only for zip-format files; old-style pickles are checked the same way without it
            torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except Exception as e:  # noqa: BLE001 - any failure means the file is not plain tensors
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
            why = next((ln for ln in lines if "nsupported" in ln), lines[0])  # the global or opcode torch refused
            why = why.removeprefix("WeightsUnpickler error: ").split(". ")[0]
            if "Unsupported operand" in why:  # e.g. the FRAME opcode of a protocol-4 legacy (non-zip) file
                why = "an old-format, non-zip PyTorch pickle that torch's safe loader cannot read"
            raise InputError(
                f"refusing {path}: loading it would need more than plain tensors ({why[:200]}); only "
                "weights_only=True pickles are loaded, convert it to .safetensors from a source you trust"
            ) from e
    hint = (f"check that {beside} belongs to these weights" if config_dir else
            "diffusers needs the model config for single files: offline, put its diffusers config.json "
            "beside the file or pass a diffusers folder")
    try:
        vae = cls.from_single_file(str(path), config=config_dir, torch_dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise InputError(
            f"could not load {path} as an {class_name} single file ({one_line(e)}); {hint}"
        ) from e
    return vae, class_name
