"""Load any diffusers autoencoder and expose one thing: encode(x) -> (μ, σ | None).

Knows nothing of data. Only the encoder half goes to the device; the decoder
stays on the CPU, untouched, because measuring a latent space never decodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Sub-modules the encode path never touches; they are not moved to the device.
DECODER_PARTS = {"decoder", "post_quant_conv", "decoder_unet", "quantize"}
OFFLINE_HINT = (
    "without network access, pass a local diffusers folder or .safetensors file with --model "
    "(or set HF_HUB_OFFLINE=1 to use a warm Hugging Face cache)"
)


@dataclass(frozen=True)
class Family:
    """How one diffusers class encodes: its output attribute, and whether it is a video VAE."""

    output: str  # "latent_dist" (KL, stochastic) or the attribute holding a deterministic latent
    video: bool = False

    @property
    def stochastic(self) -> bool:
        return self.output == "latent_dist"


KL = Family("latent_dist")
KL_VIDEO = Family("latent_dist", video=True)

# The registry of supported classes; extend it with register_family(). All of these take
# images in [-1, 1] (checked against diffusers' own code: AutoencoderTiny rescales to
# [0, 1] inside its encoder).
FAMILIES: dict[str, Family] = {
    "AutoencoderKL": KL,
    "ConsistencyDecoderVAE": KL,
    "AutoencoderKLFlux2": KL,
    "AutoencoderKLHunyuanImage": KL,
    "AutoencoderKLWan": KL_VIDEO,
    "AutoencoderKLQwenImage": KL_VIDEO,
    "AutoencoderKLCogVideoX": KL_VIDEO,
    "AutoencoderKLHunyuanVideo": KL_VIDEO,
    "AutoencoderKLLTXVideo": KL_VIDEO,
    "AutoencoderKLMochi": KL_VIDEO,
    "AutoencoderKLAllegro": KL_VIDEO,
    "AutoencoderDC": Family("latent"),
    "AutoencoderTiny": Family("latents"),
    "VQModel": Family("latents"),
}


def register_family(class_name: str, family: Family) -> None:
    """Teach the tool a new autoencoder class (a diffusers class name)."""
    FAMILIES[class_name] = family


@dataclass
class Encoder:
    """A loaded autoencoder, its device half, and what its config says about scaling."""

    vae: torch.nn.Module
    family: Family
    device: torch.device
    dtype: torch.dtype
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def stochastic(self) -> bool:
        return self.family.stochastic

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, 3, H, W) in [-1, 1] -> posterior mean and std (std None if deterministic)."""
        x = x.to(self.device, self.dtype, non_blocking=True)
        if self.family.video:
            x = x.unsqueeze(2)  # an image is a one-frame clip
        out = getattr(self.vae.encode(x), self.family.output)
        if self.family.stochastic:
            return out.mean, out.std
        return out, None

    def to_dtype(self, dtype: torch.dtype) -> None:
        """Recast the encoder half (used to retry a non-finite chunk in float32)."""
        for name, child in self.vae.named_children():
            if name not in DECODER_PARTS:
                child.to(dtype)
        self.dtype = dtype


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise InputError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: float32 on CPU, bfloat16 on CUDA (bf16 has fp32's range, so force_upcast does not apply)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise InputError(f"unknown --dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]


def _local_config_dir(root: Path, subfolder: str | None) -> tuple[Path, str | None]:
    """Find the autoencoder inside a local folder: --subfolder, the folder itself, or a pipeline's vae/."""
    if subfolder:
        if not (root / subfolder / "config.json").is_file():
            raise InputError(f"no config.json in {root / subfolder}; check --subfolder")
        return root, subfolder
    if (root / "config.json").is_file():
        return root, None
    index = root / "model_index.json"
    name = "vae"
    if index.is_file():
        components = json.loads(index.read_text())
        names = [k for k, v in components.items()
                 if isinstance(v, list) and str(v[-1]).startswith(("Autoencoder", "VQ", "Consistency"))]
        name = names[0] if names else name
    if (root / name / "config.json").is_file():
        return root, name
    raise InputError(f"no autoencoder found in {root} (no config.json, no vae/ component); "
                     "pass --subfolder or another folder")


def _load_config(source: str, subfolder: str | None, revision: str | None, cache_dir: str | None) -> dict[str, Any]:
    from diffusers import ConfigMixin

    class _Any(ConfigMixin):
        config_name = "config.json"

    return dict(_Any.load_config(source, subfolder=subfolder, revision=revision, cache_dir=cache_dir))


def _hub_error(model: str, err: Exception) -> InputError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return InputError(f"could not load model {model!r} from the Hugging Face hub ({first}); {OFFLINE_HINT}")


def _find_hub_config(model: str, subfolder: str | None, revision: str | None,
                     cache_dir: str | None) -> tuple[dict, str | None]:
    """A hub repo is either a pipeline (VAE in vae/) or a bare VAE; try in that order."""
    candidates = [subfolder] if subfolder else ["vae", None]
    last: Exception | None = None
    for sub in candidates:
        try:
            return _load_config(model, sub, revision, cache_dir), sub
        except (OSError, ValueError) as e:
            last = e
    raise _hub_error(model, last)


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
    path = Path(model).expanduser()
    source_kind = "hub"
    if path.is_file():
        source_kind = "file"
        vae, class_name = _load_single_file(path)
    else:
        if path.is_dir():
            source_kind = "folder"
            root, sub = _local_config_dir(path, subfolder)
            config = _load_config(str(root), sub, None, None)
            source = str(root)
        elif model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith(SINGLE_FILE_SUFFIXES):
            raise InputError(f"model path {model!r} does not exist")
        else:
            config, sub = _find_hub_config(model, subfolder, revision, cache_dir)
            source = model
        class_name = config.get("_class_name", "AutoencoderKL")
        cls = _class_for(class_name)
        try:
            vae = cls.from_pretrained(source, subfolder=sub, revision=revision, variant=variant,
                                      cache_dir=cache_dir, torch_dtype=torch.float32)
        except (OSError, ValueError) as e:
            if source_kind == "hub":
                raise _hub_error(model, e) from e
            raise InputError(f"could not load the autoencoder in {path}: {str(e).splitlines()[0]}") from e
        subfolder = sub
    vae.eval().requires_grad_(False)
    encoder = Encoder(vae, FAMILIES[class_name], dev, torch.float32)
    encoder.to_dtype(dt)
    for name, child in vae.named_children():
        if name not in DECODER_PARTS:
            child.to(dev)
            if dev.type == "cuda":
                child.to(memory_format=torch.channels_last)
    cfg = dict(vae.config)
    encoder.info = {
        "source": model,
        "source_kind": source_kind,
        "subfolder": subfolder,
        "revision": revision,
        "variant": variant,
        "class": class_name,
        "config_scaling_factor": cfg.get("scaling_factor"),
        "config_shift_factor": cfg.get("shift_factor"),
        "config_latents_mean": _as_list(cfg.get("latents_mean")),
        "config_latents_std": _as_list(cfg.get("latents_std")),
        "force_upcast": cfg.get("force_upcast"),
        "latent_channels": cfg.get("latent_channels"),
        "stochastic": encoder.stochastic,
        "video": encoder.family.video,
    }
    return encoder


def _as_list(v: Any) -> list[float] | None:
    return None if v is None else [float(x) for x in v]


def _class_for(class_name: str) -> type:
    import diffusers

    if class_name not in FAMILIES or not hasattr(diffusers, class_name):
        supported = ", ".join(sorted(n for n in FAMILIES if hasattr(diffusers, n)))
        raise InputError(f"autoencoder class {class_name!r} is not supported; supported classes: {supported}")
    return getattr(diffusers, class_name)


def _load_single_file(path: Path) -> tuple[torch.nn.Module, str]:
    """A single .safetensors/.ckpt file of an AutoencoderKL; pickles only with weights_only=True."""
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise InputError(f"{path} is not a model file; use a .safetensors or .ckpt file, or a diffusers folder")
    from diffusers import AutoencoderKL

    if path.suffix.lower() in PICKLE_SUFFIXES:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - any failure means the file is not plain tensors
            raise InputError(
                f"refusing {path}: it is not a plain-tensor checkpoint (weights_only=True load failed: "
                f"{str(e).splitlines()[0][:200]}); convert it to .safetensors from a source you trust"
            ) from e
    try:
        vae = AutoencoderKL.from_single_file(str(path), torch_dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise InputError(
            f"could not load {path} as an AutoencoderKL single file ({str(e).splitlines()[0][:200]}); "
            f"diffusers needs the model config for single files, so offline pass a diffusers folder instead"
        ) from e
    return vae, "AutoencoderKL"
