"""Video clips through a tiny Wan-architecture VAE: clips/s and peak RSS at N and 4N clips.

Offline: the VAE is AutoencoderKLWan's architecture (causal 3-D convolutions, temporal compression
4, spatial 8) at a small width with random weights; the videos are pans over real photographs from
scikit-image, written with PyAV. Each measurement runs in a fresh subprocess (source + encoder
loop), so its peak RSS is its own: it should not grow with the clip count.

    python scripts/bench_video.py --clips 8 --frames 17 --size 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import av
import skimage.data
import torch
from PIL import Image

WAN_TINY = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                temperal_downsample=[False, True, True])  # Wan 2.1's layout at 1/6 of its width
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def write_pan(path: Path, photo: str, frames: int, size: tuple[int, int] = (160, 120), fps: int = 24) -> None:
    """A camera panning across a photograph, H.264 in MP4."""
    img = Image.fromarray(getattr(skimage.data, photo)()).convert("RGB")
    w, h = img.size[0] // 2, img.size[0] * 3 // 8
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            x = (img.size[0] - w) * i // (frames - 1)
            frame = img.crop((x, 0, x + w, h)).resize(size, Image.BILINEAR)
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode())


def child(data: str, frames: int, size: int, batch: int) -> dict[str, float]:
    """One measurement: every clip of `data` loaded by VideoSource and encoded by Encoder.posterior."""
    from diffusers import AutoencoderKLWan

    from latent_scale.models import FAMILIES, Encoder
    from latent_scale.sources.video import VideoSource

    torch.manual_seed(0)
    encoder = Encoder(AutoencoderKLWan(**WAN_TINY).eval(), FAMILIES["AutoencoderKLWan"], torch.device("cpu"),
                      torch.float32)
    source = VideoSource.open(data, SimpleNamespace(frames=frames, fps=None, clips_per_video=1, sizes=(size,),
                                                    crop=True))
    start = time.perf_counter()
    for first in range(0, len(source), batch):
        x = torch.stack([source.load(i)[0] for i in range(first, min(first + batch, len(source)))])
        encoder.posterior(x)  # the latents are dropped at once, as the streaming statistics do
    seconds = time.perf_counter() - start
    return {"clips": len(source), "seconds": seconds, "clips_per_s": len(source) / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(data: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", data, "--frames", str(args.frames), "--size", str(args.size),
           "--batch", str(args.batch)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="N; the second run has 4N clips")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2, help="clips per encode call")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(1)
        print(json.dumps(child(args.child, args.frames, args.size, args.batch)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = [root / f"v{i:03d}.mp4" for i in range(4 * args.clips)]
        for i, path in enumerate(paths):
            write_pan(path, PHOTOS[i % len(PHOTOS)], args.frames + 7)
        (root / "n.txt").write_text("\n".join(str(p) for p in paths[: args.clips]))
        print(f"tiny Wan-architecture VAE, {args.frames} frames at {args.size} px, batch {args.batch}, 1 thread\n")
        print("| clips | seconds | clips/s | peak RSS (MB) |\n|---:|---:|---:|---:|")
        for data in (str(root / "n.txt"), str(root)):
            r = measure(data, args)
            print(f"| {r['clips']} | {r['seconds']:.1f} | {r['clips_per_s']:.2f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
