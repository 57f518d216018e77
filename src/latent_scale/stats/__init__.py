"""Exact streaming statistics of latents, in float64.

Knows nothing of models or files: it receives latents (B, C, ...) of any trailing shape and keeps
per-channel central moments (moments), per-unit moments for the interval (interval), histograms
(histogram), and the estimates of one encode pass under the posterior rules (posterior).
"""

from .histogram import Histogram, histogram_edges, histogram_edges_for
from .interval import Z95, factor_sd
from .latent import LatentStats
from .moments import Moments, UnitMoments, rms
from .posterior import PosteriorStats, noise
from .workspace import Workspace

__all__ = ["Z95", "Histogram", "LatentStats", "Moments", "PosteriorStats", "UnitMoments", "Workspace",
           "factor_sd", "histogram_edges", "histogram_edges_for", "noise", "rms"]
