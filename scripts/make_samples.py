"""Regenerate src/latent_scale/samples/: real photographs from scikit-image's bundled data.

Two square crops of each photograph (they are public domain or CC0; see skimage.data's
README), saved as JPEG quality 85 so the whole folder stays under 2 MB.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "camera", "coins", "moon", "brick", "grass", "gravel", "page", "text", "clock", "microaneurysms", "cell"]
OUT = Path(__file__).resolve().parents[1] / "src" / "latent_scale" / "samples"


def crops(img: np.ndarray) -> list[np.ndarray]:
    h, w = img.shape[:2]
    s = min(h, w, 384)
    return [img[:s, :s], img[h - s:, w - s:]]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.glob("*.jpg"):
        f.unlink()
    images = {name: getattr(data, name)() for name in PHOTOS}
    left, right = data.stereo_motorcycle()[:2]
    images.update(motorcycle_left=left, motorcycle_right=right)
    for name, img in images.items():
        if img.dtype != np.uint8:
            img = (np.clip(img, 0, 1) * 255).astype(np.uint8) if img.dtype.kind == "f" else img.astype(np.uint8)
        for k, crop in enumerate(crops(img)):
            Image.fromarray(crop).convert("RGB").save(OUT / f"{name}_{k}.jpg", quality=85)
    total = sum(f.stat().st_size for f in OUT.glob("*.jpg"))
    print(f"{len(list(OUT.glob('*.jpg')))} images, {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main()
