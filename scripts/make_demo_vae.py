"""Build the demo VAE the README's examples use: `python scripts/make_demo_vae.py demo-vae`.

A random-weight AutoencoderKL with Stable Diffusion's layout (four levels, f/8, 4 latent channels,
attention in the mid-block, scaling_factor 0.18215) at a quarter of its width, so the 40 shipped
photographs at 128 px encode in seconds on a CPU and the folder is about 20 MB. Its weights are
random (seeded: the same folder on every machine), so its factor says nothing about Stable
Diffusion; it is there to try every command offline. `--full-width` gives SD's own width (335 MB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

SEED = 0
WIDTHS = {"demo": (32, 64, 128, 128), "full": (128, 256, 512, 512)}  # SD 1.x/2.x/XL: (128, 256, 512, 512)


def sd_config(width: str = "demo") -> dict:
    """The AutoencoderKL config of SD's VAE, with block widths `WIDTHS[width]`."""
    return dict(block_out_channels=WIDTHS[width], down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                norm_num_groups=32, sample_size=512, scaling_factor=0.18215)


def make_demo_vae(out_dir: str | Path, width: str = "demo") -> Path:
    """Save the seeded random-weight VAE into `out_dir` (diffusers' save_pretrained layout)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(SEED)
    out = Path(out_dir)
    AutoencoderKL(**sd_config(width)).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="Folder to write (config.json and diffusion_pytorch_model.safetensors).")
    parser.add_argument("--full-width", action="store_true", help="SD's own block widths (335 MB, ~16x slower).")
    args = parser.parse_args(argv)
    out = make_demo_vae(args.out_dir, "full" if args.full_width else "demo")
    print(f"wrote {out} (random weights, SD layout); try: latent-scale estimate --model {out} --data samples "
          "--size 128")


if __name__ == "__main__":
    main()
