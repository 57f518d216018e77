"""Load any diffusers autoencoder and expose one thing: encode(x) -> (μ, σ | None).

Knows nothing of data. Only the encoder half goes to the device; the decoder
stays on the CPU, untouched, because measuring a latent space never decodes.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Children of the registered classes that encode() never calls (decoders, the VQ codebook, and
# AutoencoderKLFlux2's latent BatchNorm, which only its pipelines use); they stay on the CPU.
DECODER_PARTS = {"decoder", "post_quant_conv", "decoder_unet", "quantize", "bn"}
OFFLINE_HINT = (
    "without network access, pass a local diffusers folder or .safetensors file with --model "
    "(or set HF_HUB_OFFLINE=1 to use a warm Hugging Face cache)"
)


@dataclass(frozen=True)
class Family:
    """How one diffusers class encodes: its output attribute, whether it takes clips (B, C, T, H, W),
    and, for the classes whose pipelines encode clips, the temporal compression t read from a config
    (the clips it encodes have 1 + k·t frames)."""

    output: str  # "latent_dist" (KL, stochastic) or the attribute holding a deterministic latent
    video: bool = False
    temporal: Callable[[Mapping[str, Any]], int] | None = None

    @property
    def stochastic(self) -> bool:
        return self.output == "latent_dist"


def wan_temporal(cfg: Mapping[str, Any]) -> int:
    """pipeline_wan: config.scale_factor_temporal (its encoder also reads frames in groups of 4);
    configs older than that key: 2 ** sum(temperal_downsample), as the Wan VACE pipeline computes it."""
    return int(cfg.get("scale_factor_temporal") or 2 ** sum(cfg["temperal_downsample"]))


def ratio_temporal(cfg: Mapping[str, Any]) -> int:
    """CogVideoX and HunyuanVideo: config.temporal_compression_ratio."""
    return int(cfg["temporal_compression_ratio"])


def ltx_temporal(cfg: Mapping[str, Any]) -> int:
    """LTX-Video: config.temporal_compression_ratio, else patch_size_t · 2 ** (temporal scaling blocks),
    as AutoencoderKLLTXVideo computes it."""
    return int(cfg.get("temporal_compression_ratio") or cfg["patch_size_t"] * 2 ** sum(cfg["spatio_temporal_scaling"]))


def mochi_temporal(cfg: Mapping[str, Any]) -> int:
    """Mochi: the product of config.temporal_expansions (6 for (1, 2, 3); its pipeline hard-codes 6)."""
    return math.prod(cfg["temporal_expansions"])


KL = Family("latent_dist")


def kl_video(temporal: Callable[[Mapping[str, Any]], int] | None) -> Family:
    """A stochastic video VAE; `temporal` None where its pipelines only encode single frames."""
    return Family("latent_dist", video=True, temporal=temporal)


# The registry of supported classes (each one tested with a tiny model); extend it with
# register_family(). All take images in [-1, 1], as diffusers' pipelines feed them
# (AutoencoderTiny rescales to [0, 1] inside its encoder). Video VAEs get an image as a one-frame
# clip; Qwen-Image's VAE (Wan's architecture) has no `temporal`: its pipelines encode single frames.
# Not here: AutoencoderKLAllegro, which only encodes clips of at least `sample_frames` frames.
FAMILIES: dict[str, Family] = {
    "AutoencoderKL": KL,
    "AsymmetricAutoencoderKL": KL,
    "AutoencoderKLTemporalDecoder": KL,
    "ConsistencyDecoderVAE": KL,
    "AutoencoderKLFlux2": KL,
    "AutoencoderKLHunyuanImage": KL,
    "AutoencoderKLWan": kl_video(wan_temporal),
    "AutoencoderKLQwenImage": kl_video(None),
    "AutoencoderKLCogVideoX": kl_video(ratio_temporal),
    "AutoencoderKLHunyuanVideo": kl_video(ratio_temporal),
    "AutoencoderKLLTXVideo": kl_video(ltx_temporal),
    "AutoencoderKLMochi": kl_video(mochi_temporal),
    "AutoencoderDC": Family("latent"),
    "AutoencoderTiny": Family("latents"),
    "VQModel": Family("latents"),  # before quantisation
}


def register_family(class_name: str, family: Family, *, replace: bool = False) -> None:
    """Teach the tool a new autoencoder class (a diffusers class name); a class already known is
    refused unless `replace`, so a plugin cannot silently change how a built-in class is measured."""
    if not (isinstance(class_name, str) and class_name.isidentifier()):
        raise TypeError(f"class_name must be a Python class name, got {class_name!r}")
    if not isinstance(family, Family):
        raise TypeError(f"family must be a latent_scale.models.Family, got {type(family).__name__}")
    if class_name in FAMILIES and not replace:
        raise ValueError(f"{class_name} is already registered; pass replace=True to replace it")
    FAMILIES[class_name] = family


@dataclass
class Encoder:
    """A loaded autoencoder, its device half, and what its config says about scaling."""

    vae: torch.nn.Module
    family: Family
    device: torch.device
    dtype: torch.dtype
    info: ModelInfo | None = None

    @property
    def stochastic(self) -> bool:
        return self.family.stochastic

    @torch.inference_mode()
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, 3, H, W) or clips (B, 3, T, H, W) in [-1, 1] -> the posterior mean and logvar
        exactly as diffusers holds them (its std is exp(0.5 · logvar), bit for bit); a deterministic
        encoder gives (latent, None)."""
        out = getattr(self.vae.encode(self._layout(x)), self.family.output)
        if self.family.stochastic:
            return out.mean, out.logvar
        return out, None

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """Video VAEs take an image as a one-frame clip; image VAEs take a one-frame clip as an image."""
        if x.dim() == 4 and self.family.video:
            x = x.unsqueeze(2)
        elif x.dim() == 5 and not self.family.video:
            if x.shape[2] != 1:
                raise InputError(f"{type(self.vae).__name__} is an image autoencoder and cannot encode clips of "
                                 f"{x.shape[2]} frames; use --frames 1 or a video autoencoder")
            x = x.squeeze(2)
        return x.to(self.device, self.dtype, non_blocking=True)

    def enable_tiling(self) -> None:
        """--tiling: the VAE's own tiled encode, so large frames fit in memory (tile seams change
        the latents slightly, so the recipe records it)."""
        if not callable(getattr(self.vae, "enable_tiling", None)):
            raise InputError(f"{type(self.vae).__name__} has no tiled encode in diffusers; drop --tiling")
        self.vae.enable_tiling()

    def counted(self, x: torch.Tensor) -> tuple[float, tuple[torch.Tensor, torch.Tensor | None]]:
        """Encode x under torch's FlopCounterMode: (FLOPs per image, the encoding), for TFLOP/s."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            out = self.posterior(x)
        return counter.get_total_flops() / len(x), out

    def compile(self) -> None:
        """torch.compile the encoder half in place (the decoder is never run, so never compiled)."""
        for name, child in self.vae.named_children():
            if name not in DECODER_PARTS:
                setattr(self.vae, name, torch.compile(child))

    def encode_parts(self) -> list[torch.nn.Module]:
        """The children encode() uses: all but DECODER_PARTS, so the decoder never costs device memory."""
        return [child for name, child in self.vae.named_children() if name not in DECODER_PARTS]

    def to_dtype(self, dtype: torch.dtype) -> None:
        """Cast the encoder half only; the decoder stays float32 on the CPU, never used."""
        for child in self.encode_parts():
            child.to(dtype)
        self.dtype = dtype

    def to_device(self, device: torch.device, channels_last: bool = False) -> None:
        """Move the encoder half; channels_last is chosen per weight rank because video VAEs mix
        2-D and 3-D convolutions, which Module.to(memory_format=...) cannot convert in one go."""
        for child in self.encode_parts():
            child.to(device)
            if channels_last:
                for p in child.parameters():
                    if p.dim() in (4, 5):
                        fmt = torch.channels_last if p.dim() == 4 else torch.channels_last_3d
                        p.data = p.data.contiguous(memory_format=fmt)
        self.device = device


def temporal_compression(encoder: Encoder) -> int:
    """t, the frames per latent frame after the causal first one: clips must have 1 + k·t frames."""
    rule = encoder.family.temporal
    if rule is None:
        raise InputError(f"{type(encoder.vae).__name__} encodes single frames (its pipelines never encode clips); "
                         "pass --frames 1 to measure video frames as images")
    return rule(dict(encoder.vae.config))


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


CPUINFO = "/proc/cpuinfo"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (AMX-BF16 or AVX512-BF16 in the Linux
    flags), where a bf16 encode runs ~3x faster than float32; False where it cannot tell."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return not {"amx_bf16", "avx512_bf16"}.isdisjoint(value.split())
    return False


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on CUDA and on CPUs with native bf16 units (bf16 has fp32's range, so
    force_upcast does not apply; a float32 precision check measures its effect), else float32."""
    if dtype == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if native else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise InputError(f"unknown --dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]


def _load_json(source: str, name: str, subfolder: str | None, revision: str | None,
               cache_dir: str | None) -> dict[str, Any]:
    """config.json or model_index.json from a local folder or a hub repo, fetched the way diffusers does."""
    from diffusers import ConfigMixin

    class _File(ConfigMixin):
        config_name = name

    return dict(_File.load_config(source, subfolder=subfolder, revision=revision, cache_dir=cache_dir))


def _vae_component(index: dict[str, Any], where: str) -> str:
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
            sub = _vae_component(json.loads(index.read_text()), str(root))
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


def _hub_error(model: str, err: Exception) -> InputError:
    from .hub import offline_message, offline_mode

    if offline_mode():  # never advise setting HF_HUB_OFFLINE when it is set
        return InputError(f"could not load model {model!r}: {offline_message(model)}")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return InputError(f"could not load model {model!r} from the Hugging Face hub ({first}); {OFFLINE_HINT}")


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
        sub = _vae_component(index, model)
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
                   cfg.get("force_upcast"), latent_channels(cfg), family.stochastic, family.video)

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
    if dt == torch.float16 and vae.config.get("force_upcast"):  # as diffusers' pipelines do
        warnings.warn(f"{model} sets force_upcast (it overflows in float16): encoding in float32", stacklevel=2)
        dt = torch.float32
    encoder = Encoder(vae, FAMILIES[class_name], torch.device("cpu"), torch.float32,
                      ModelInfo.of(vae, class_name, where))
    encoder.to_dtype(dt)
    encoder.to_device(dev, channels_last=True)  # measured 1.2x faster on CPU too (scripts/bench.py)
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
            raise InputError(f"could not read {where} ({str(e).splitlines()[0]})") from e
        found = Where(model, "folder", sub, revision, variant)
    elif model.startswith((".", "/", "~")) or model.count("/") > 1 or model.endswith(SINGLE_FILE_SUFFIXES):
        raise InputError(f"model path {model!r} does not exist")
    else:
        from .hub import check_hub

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
        raise InputError(f"could not load the autoencoder in {source}: {str(e).splitlines()[0]}") from e
    except (MemoryError, RuntimeError) as e:  # a config asking for more parameters than memory holds
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        raise InputError(f"could not build the {class_name} in {source}: its config asks for more memory than "
                         "this machine has; check the config's channel counts") from e


def latent_channels(config: dict[str, Any]) -> int | None:
    """The channel count a config declares (Wan and Qwen-Image call it z_dim)."""
    return config.get("latent_channels") or config.get("z_dim")


def _latent_norm(vae: torch.nn.Module, cfg: dict[str, Any], key: str) -> list[float] | None:
    """latents_mean/std from the config, or from the model's buffers (where LTX-Video keeps them)."""
    value = cfg.get(key)
    buffers = dict(vae.named_buffers(recurse=False))
    if value is None and key in buffers:
        value = buffers[key].tolist()
    return None if value is None else [float(x) for x in value]


def _class_for(class_name: str) -> type:
    import diffusers

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
            f"could not load {path} as an {class_name} single file ({str(e).splitlines()[0][:200]}); {hint}"
        ) from e
    return vae, class_name
