"""TEMPORARY shim while the refactor lands: use latent_scale.sources.images / sources.base instead."""
from .sources.base import order  # noqa: F401
from .sources.images import IMAGE_EXTENSIONS, RECIPE, open_rgb, preprocess, scan_folder  # noqa: F401
