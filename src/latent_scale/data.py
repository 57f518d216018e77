"""Image sources -> ordered list of paths -> decoded, preprocessed tensors.

The order is the sorted path list (for tar shards: shard order, then member
order), then a permutation seeded by --seed, so a prefix (--limit, --rel-tol) is
a fair random sample and every split of the work (batches, workers, shards,
ranks, resume) sees the same images with the same identity (their index in the
list, which also seeds their noise).
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from .errors import InputError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
SAMPLES_DIR = Path(__file__).parent / "samples"
RECIPE = "classic-v1"  # PIL RGB, Resize(size, bilinear, antialias), CenterCrop(size), ToTensor, Normalize(0.5, 0.5)
TAR_SEP = "::"  # a tar member's id: "path/to/shard.tar::key.jpg"


@dataclass(frozen=True)
class TarMember:
    """Where one image's bytes lie inside an uncompressed tar, found once when the shard is indexed.

    `error` marks a part of the shard that could not be indexed; reading it fails with that reason,
    so it is skipped (or stops --strict) like any other unreadable image.
    """

    tar: str
    offset: int
    size: int
    error: str | None = None

    @property
    def end(self) -> int:
        return self.offset + self.size

    def read(self) -> io.BytesIO:
        if self.error:
            raise OSError(self.error)
        with open(self.tar, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) < self.size:
            raise OSError(f"tar member is truncated ({len(data)} of {self.size} bytes)")
        return io.BytesIO(data)


class ImageList(list):
    """Image ids in dataset order (a plain list of str to everyone else); tar members also carry
    their TarMember, so workers read them by offset without extracting or re-scanning the shard."""

    def __init__(self, ids: Iterable[str] = (), members: dict[str, TarMember] | None = None) -> None:
        super().__init__(ids)
        self.members: dict[str, TarMember] = members or {}

    def open(self, index: int) -> Image.Image:
        """Decode image `index` (a file, or a member of a tar shard) with open_rgb."""
        name = self[index]
        member = self.members.get(name)
        return open_rgb(member.read() if member else name)


def cache_root(cache_dir: str | None = None) -> Path:
    """--cache-dir, else $XDG_CACHE_HOME/latent-scale, else ~/.cache/latent-scale."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latent-scale"


def scan_folder(root: Path) -> list[str]:
    """Every image below root (class folders optional), extensions case-insensitive, sorted."""
    return sorted(
        str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def _read_list(path: Path) -> list[str]:
    """A .txt list: one path per line, relative paths are relative to the list file."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(str(p if p.is_absolute() else path.parent / p))
    return out


def _imagenette(cache_dir: str | None) -> list[str]:
    """Imagenette train+val at full size, as the classic experiment used; downloaded once."""
    from torchvision.datasets import Imagenette

    root = cache_root(cache_dir) / "imagenette"
    try:
        for split in ("train", "val"):
            Imagenette(str(root), split=split, size="full", download=True)
    except Exception as e:  # noqa: BLE001 - urllib, tarfile and md5 failures all mean the same to the user
        raise InputError(
            f"could not download Imagenette into {root} ({str(e).splitlines()[0][:160]}); "
            "without network access pass --data FOLDER, a .txt list, or --data samples"
        ) from e
    return scan_folder(root / "imagenette2")


def index_tar(tar: str) -> ImageList:
    """The image members of one WebDataset shard (`key.jpg`, ...), in archive order, read once.

    Only uncompressed tars are accepted, because members are later read by offset. Damage that
    hides later members (a corrupt header, a file cut at a member boundary) becomes one unreadable
    entry `shard.tar::@BYTE`, so the loss is skipped and reported like a bad image, never silent.
    """
    images = ImageList()
    try:
        with tarfile.open(tar, "r:") as tf:
            try:
                for m in tf:
                    if m.isfile() and Path(m.name).suffix.lower() in IMAGE_EXTENSIONS:
                        images.append(f"{tar}{TAR_SEP}{m.name}")
                        images.members[images[-1]] = TarMember(tar, m.offset_data, m.size)
                error = None
            except tarfile.ReadError as e:  # the file ends where the next header should be
                error = str(e)
            end = tf.offset
    except (tarfile.ReadError, OSError) as e:
        raise InputError(f"cannot read {tar} as an uncompressed tar shard ({e}); "
                         "WebDataset shards must be plain .tar files") from None
    with open(tar, "rb") as f:  # tarfile stops silently at a corrupt header; a real end is zero blocks
        f.seek(end)
        if error is None and f.read(512).strip(b"\0"):
            error = "corrupt tar header"
        cut_in_last = bool(images) and images.members[images[-1]].end > f.seek(0, os.SEEK_END)
    if error and not cut_in_last:  # a member cut short already reports the damage itself
        name = f"{tar}{TAR_SEP}@{end}"
        images.append(name)
        images.members[name] = TarMember(tar, end, 0, f"{error} at byte {end}; the rest of this shard is lost")
    return images


def _expand(matches: Sequence[str]) -> ImageList:
    """Glob matches in sorted order: tar shards (members in archive order), folders, image files."""
    images = ImageList()
    for m in sorted(matches):
        if m.lower().endswith(".tar"):
            shard = index_tar(m)
            images.extend(shard)
            images.members.update(shard.members)
        elif os.path.isdir(m):
            images.extend(scan_folder(Path(m)))
        elif Path(m).suffix.lower() in IMAGE_EXTENSIONS:
            images.append(m)
    return images


def list_images(data: str, cache_dir: str | None = None) -> ImageList:
    """Resolve --data to the ordered list of image ids (file paths, or `shard.tar::member`)."""
    if data == "imagenette":
        paths = ImageList(_imagenette(cache_dir))
    elif data == "samples":
        paths = ImageList(scan_folder(SAMPLES_DIR))
    else:
        p = Path(data).expanduser()
        if p.is_dir():
            paths = ImageList(scan_folder(p))
        elif p.is_file() and p.suffix.lower() == ".txt":
            paths = ImageList(_read_list(p))
        elif p.is_file() and p.suffix.lower() == ".tar":
            paths = index_tar(str(p))
        elif p.is_file():
            raise InputError(f"--data {data} is a file but not a .txt list of image paths nor a .tar shard")
        elif any(c in data for c in "*?["):
            paths = _expand(glob.glob(str(p), recursive=True))
        else:
            raise InputError(f"--data {data} does not exist; pass a folder, a .txt list, .tar shards "
                             "(glob allowed), imagenette or samples")
    if not paths:
        raise InputError(f"--data {data} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return paths


def order(num_images: int, seed: int, limit: int | None = None) -> list[int]:
    """The seeded permutation of image indices; its prefix is a fair sample."""
    perm = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm if limit is None else perm[:limit]


class CenterCropToMultiple:
    """--no-crop keeps the aspect ratio but trims each side to a multiple of `multiple` (at most
    31 pixels), so every autoencoder (f/8 up to DC-AE's f/32) sees whole latent pixels."""

    def __init__(self, multiple: int = 32) -> None:
        self.multiple = multiple

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        m = self.multiple
        return transforms.functional.center_crop(img, [max(m, h // m * m), max(m, w // m * m)])


def preprocess(size: int, crop: bool = True) -> transforms.Compose:
    """The classic recipe (named RECIPE in every result); crop=False keeps the aspect ratio."""
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
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", message="Palette images with Transparency")
        try:
            img = Image.open(path)
        except UnidentifiedImageError:  # PIL's message names a file object for tar members
            raise UnidentifiedImageError("cannot identify image file (not an image PIL can read)") from None
        with img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
                if img.mode == "F":
                    top = 1.0
                img = Image.fromarray(np.clip(np.round(arr / top * 255), 0, 255).astype(np.uint8))
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            return img.convert("RGB")


class ImageDataset(Dataset):
    """Yields (index, tensor, None) or (index, None, reason) so bad files never stop a worker."""

    def __init__(self, paths: Sequence[str], positions: Sequence[int], size: int, crop: bool = True) -> None:
        self.paths = paths if isinstance(paths, ImageList) else ImageList(paths)
        self.positions = positions
        self.transform = preprocess(size, crop)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | None, str | None]:
        index = self.positions[k]
        try:
            return index, self.transform(self.paths.open(index)), None
        except Exception as e:  # noqa: BLE001 - any decode failure is reported per file
            return index, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()


def collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> dict[str, Any]:
    good = [(i, x) for i, x, _ in items if x is not None]
    return {
        "index": torch.tensor([i for i, _ in good], dtype=torch.long),
        "images": torch.stack([x for _, x in good]) if good else None,
        "errors": [(i, err) for i, x, err in items if x is None],
    }


def loader(paths: Sequence[str], positions: Sequence[int], size: int, batch_size: int,
           workers: int, pin_memory: bool, crop: bool = True) -> DataLoader:
    """Batches in the given order; workers decode while the encoder runs. Uncropped images
    differ in shape, so they go one by one."""
    return DataLoader(
        ImageDataset(paths, positions, size, crop),
        batch_size=batch_size if crop else 1,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers > 0 else None,  # bounded memory: 2 batches per worker in flight
        persistent_workers=False,
    )
