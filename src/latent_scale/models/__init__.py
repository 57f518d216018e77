"""Any diffusers autoencoder, reduced to posterior(x) = (μ, logvar | None).

families: which classes are supported (Family, FAMILIES, register_family) and which are refused
(REFUSED); loading: finding and safely loading a model; device: device and dtype choice; encoder:
the Encoder wrapper. Knows nothing of data files.
"""

from .device import cpu_has_native_bf16, resolve_device, resolve_dtype
from .encoder import DECODER_PARTS, Encoder, temporal_compression
from .families import FAMILIES, REFUSED, register_family
from .families_audio import AudioModel, audio_of
from .family import Audio, Family
from .loading import ModelInfo, Where, latent_channels, load_model, local_subfolder

__all__ = [
    "DECODER_PARTS", "FAMILIES", "REFUSED", "Audio", "AudioModel", "Encoder", "Family", "ModelInfo", "Where",
    "audio_of", "cpu_has_native_bf16", "latent_channels", "load_model", "local_subfolder", "register_family",
    "resolve_device", "resolve_dtype", "temporal_compression",
]
