"""Still images: folders, .txt lists, globs, tar shards, Imagenette and the shipped samples.

Ids are the sorted file paths (for tar shards: shard order, then member order); each unit is
decoded once and preprocessed by the classic recipe at every --size asked for.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import InputError, one_line
from ..formats.window import Span
from .base import Source, SourceContext, file_signature
from .files import check_regular, expand, glob_root, is_glob, matching, read_list, scan_folder
from .tar import index_tar

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torchvision import transforms

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
SAMPLES_DIR = Path(__file__).parent.parent / "samples"
RECIPE = "classic-v1"  # PIL RGB, Resize(size, bilinear, antialias), CenterCrop(size), ToTensor, Normalize(0.5, 0.5)


def cache_root(cache_dir: str | None = None) -> Path:
    """--cache-dir, else $XDG_CACHE_HOME/latent-scale, else ~/.cache/latent-scale."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latent-scale"


def _imagenette(cache_dir: str | None) -> list[str]:
    """Imagenette train+val at full size, as the classic experiment used; downloaded once."""
    from torchvision.datasets import Imagenette

    root = cache_root(cache_dir) / "imagenette"
    try:
        for split in ("train", "val"):
            Imagenette(str(root), split=split, size="full", download=True)
    except Exception as e:  # noqa: BLE001 - urllib, tarfile and md5 failures all mean the same to the user
        from ..hub import data_hint

        raise InputError(f"could not download Imagenette into {root} ({one_line(e, 160)}); "
                         f"{data_hint()}") from e
    return scan_folder(root / "imagenette2", IMAGE_EXTENSIONS)


def list_images(data: str, cache_dir: str | None = None) -> tuple[list[str], dict[str, Span], str]:
    """Resolve --data to (ordered ids, tar members by id, root)."""
    if data in ("imagenette", "samples"):
        ids = _imagenette(cache_dir) if data == "imagenette" else scan_folder(SAMPLES_DIR, IMAGE_EXTENSIONS)
        return ids, {}, str(Path(ids[0]).parent.parent if data == "imagenette" and ids else SAMPLES_DIR)
    p = Path(data).expanduser()
    if p.is_dir():
        return scan_folder(p, IMAGE_EXTENSIONS), {}, str(p)
    if p.is_file() and p.suffix.lower() == ".txt":
        return read_list(p), {}, str(p.parent)
    if p.is_file() and p.suffix.lower() == ".tar":
        members = index_tar(str(p), IMAGE_EXTENSIONS)
        return list(members), members, str(p.parent)
    if p.is_file():
        raise InputError(f"--data {data} is a file but not a .txt list of image paths nor a .tar shard")
    if is_glob(data):
        ids, members = expand(matching(p), IMAGE_EXTENSIONS)
        return ids, members, str(glob_root(p))
    raise InputError(f"--data {data} does not exist; pass a folder, a .txt list, .tar shards "
                     "(glob allowed), imagenette or samples")


class CenterCropToMultiple:
    """--no-crop keeps the aspect ratio but trims each side to a multiple of `multiple` (at most
    31 pixels), so every autoencoder (f/8 up to DC-AE's f/32) sees whole latent pixels."""

    def __init__(self, multiple: int = 32) -> None:
        self.multiple = multiple

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        m = self.multiple
        from torchvision.transforms.functional import center_crop

        return center_crop(img, [max(m, h // m * m), max(m, w // m * m)])


def preprocess(size: int, crop: bool = True) -> transforms.Compose:
    """The classic recipe (named RECIPE in every result); crop=False keeps the aspect ratio."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.CenterCrop(size) if crop else CenterCropToMultiple(),
        transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    ])


def open_rgb(path: str | Path | IO[bytes]) -> Image.Image:
    """Decode fully (truncated files fail here, not later) and convert to 8-bit RGB.

    16-bit images are scaled to 8 bits rather than clipped; decompression bombs are errors.
    """
    from PIL import Image, UnidentifiedImageError  # here: the CLI lists this source's options at once

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message="Palette images with Transparency")
        try:
            img = Image.open(path)
        except UnidentifiedImageError:  # PIL's message names a file object for tar members
            raise UnidentifiedImageError("cannot identify image file (not an image PIL can read)") from None
        with img:
            img.load()
            return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    import numpy as np
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            top = 1.0
        img = Image.fromarray(np.clip(np.round(arr / top * 255), 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


class Resized:
    """Units preprocessed by the classic recipe at every --size asked for: one view per size. Units
    share a batch only when cropped to one shape (a float32 convolution's rounding depends on the
    batch, so units of different shapes go one at a time)."""

    def __init__(self, sizes: Sequence[int], crop: bool) -> None:
        self.sizes, self.crop = tuple(sizes), crop
        self.transforms = [preprocess(size, crop) for size in sizes]

    @property
    def uniform(self) -> bool:
        return self.crop

    def views(self) -> list[dict[str, Any]]:
        return [{"size": size} for size in self.sizes]


class ImageSource(Resized, Source):
    """Image files and tar members; one view per --size (decoded once, resized per size)."""

    kind = "images"
    input = "pixels"
    unit, units = "image", "images"

    def __init__(self, ids: list[str], root: str, members: dict[str, Span], sizes: Sequence[int],
                 crop: bool = True) -> None:
        Source.__init__(self, ids, root)
        Resized.__init__(self, sizes, crop)
        self.members = members

    @classmethod
    def accepts(cls, spec: str, ctx: SourceContext) -> bool:
        return True  # the fallback: every other source claims its spec first

    @classmethod
    def open(cls, spec: str, ctx: SourceContext) -> ImageSource:
        ids, members, root = list_images(spec, ctx.cache_dir)
        if not ids:
            raise InputError(f"--data {spec} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return cls(ids, root, members, ctx.sizes, ctx.crop)

    def image(self, index: int) -> Image.Image:
        """Decode unit `index` (a file, or a member of a tar shard) with open_rgb."""
        name = self.ids[index]
        member = self.members.get(name)
        if member is None:
            check_regular(name)
        return open_rgb(member.read() if member else name)

    def load(self, index: int) -> tuple[torch.Tensor, ...]:
        img = self.image(index)
        return tuple(t(img) for t in self.transforms)

    def recipe(self) -> dict[str, Any]:
        return {"preprocess": RECIPE, "crop": self.crop}

    def signature(self) -> str:
        """Sizes and modification times of the files (tar shards once): replaced images show."""
        files = sorted({m.path for m in self.members.values()} | {i for i in self.ids if i not in self.members})
        return file_signature(files)


SOURCE = ImageSource
