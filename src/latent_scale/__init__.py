"""latent-scale: the latent scale factor (and shift) of an image autoencoder, measured exactly."""

__version__ = "0.1.0"

from .estimate import Options, estimate  # noqa: E402
from .report import Result, merge_results  # noqa: E402

__all__ = ["Options", "Result", "estimate", "merge_results", "__version__"]
