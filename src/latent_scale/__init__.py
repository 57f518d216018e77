"""latent-scale: the latent scale factor (and shift) of an image autoencoder, measured exactly."""

__version__ = "0.1.0"

from .apply import apply_result  # noqa: E402
from .conventions import normalisations  # noqa: E402
from .estimate import Options, estimate  # noqa: E402
from .known import Published, add_registry, known_factors, lookup  # noqa: E402
from .merge import merge_results  # noqa: E402
from .plot import plot_result  # noqa: E402
from .report import Result, format_snippets  # noqa: E402

__all__ = ["Options", "Published", "Result", "add_registry", "apply_result", "estimate", "format_snippets",
           "known_factors", "lookup", "merge_results", "normalisations", "plot_result", "__version__"]
