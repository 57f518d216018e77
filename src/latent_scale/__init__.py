"""latent-scale: the latent scale factor (and shift) of an image autoencoder, measured exactly."""

__version__ = "0.1.0"

from .estimate import Options, estimate  # noqa: E402
from .known import Published, add_registry, known_factors, lookup  # noqa: E402
from .plot import plot_result  # noqa: E402
from .report import Result, apply_result, format_snippets, merge_results, normalisations  # noqa: E402

__all__ = ["Options", "Published", "Result", "add_registry", "apply_result", "estimate", "format_snippets",
           "known_factors", "lookup", "merge_results", "normalisations", "plot_result", "__version__"]
