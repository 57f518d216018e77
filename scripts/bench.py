"""Side-by-side benchmark: the classic keep-every-latent script vs `latent-scale estimate`.

Runs offline: the VAEs are built from configs (random weights: speed and memory do not
depend on the weights), the images are real photographs from scikit-image, cropped and
resized, saved as JPEG. Each measurement runs in a fresh subprocess so its peak RSS is
its own. Prints a markdown table (pasted into the README).

    python scripts/bench.py                 # defaults: a few minutes on 2 CPU cores
    python scripts/bench.py --device cuda --size 512 --images 480 --arch sd   # on a GPU
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

import numpy as np
import torch


def build_vae(arch: str, out: Path) -> Path:
    """`sd`: the Stable Diffusion VAE architecture (f/8, 4 channels); `tiny`: f/2 without the
    mid-block attention (quadratic in latent pixels), for memory runs with large latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    if arch == "sd":
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                            sample_size=512, scaling_factor=0.18215)
    else:
        vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                            norm_num_groups=4, sample_size=64, mid_block_add_attention=False)
    path = out / f"vae-{arch}"
    vae.save_pretrained(path)
    return path


def write_images(out: Path, count: int, size: int) -> Path:
    """Random square crops of skimage photographs, resized a little larger than --size, as JPEG."""
    from PIL import Image
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "brick", "grass", "gravel",
             "hubble_deep_field", "immunohistochemistry", "moon"]
    photos = [getattr(data, n)() for n in names]
    rng = np.random.default_rng(0)
    folder = out / f"images-{count}-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        img = photos[k % len(photos)]
        h, w = img.shape[:2]
        s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        side = int(size * 1.25)
        Image.fromarray(img[y:y + s, x:x + s]).convert("RGB").resize((side, side)).save(
            folder / f"{k:05d}.jpg", quality=90)
    return folder


def encoder_flops(model: str, size: int) -> float:
    """FLOPs of one encode of one image, counted once with torch's flop counter."""
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    vae = AutoencoderKL.from_pretrained(model).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        vae.encode(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def naive(model: str, data: str, size: int, limit: int, batch_size: int, workers: int, device: str) -> dict:
    """The classic throw-away script: fp32, 4 loader workers, every latent kept, then .std()."""
    from diffusers import AutoencoderKL
    from torch.utils.data import DataLoader

    from latent_scale.sources.images import list_images, open_rgb, preprocess

    vae = AutoencoderKL.from_pretrained(model).to(device).eval()
    tf = preprocess(size)
    paths = list_images(data)[:limit]
    loader = DataLoader(paths, batch_size=batch_size, num_workers=workers,
                        collate_fn=lambda ps: torch.stack([tf(open_rgb(p)) for p in ps]))
    start = time.perf_counter()
    latents = []
    with torch.no_grad():
        for x in loader:
            latents.append(vae.encode(x.to(device)).latent_dist.sample().cpu())
    z = torch.cat(latents)
    factor = 1 / z.double().std().item()
    seconds = time.perf_counter() - start
    return {"images": len(z), "seconds": seconds, "factor": factor, "held_mb": z.numel() * 4 / 2**20}


def ours(model: str, data: str, size: int, limit: int, batch_size: int, workers: int, device: str,
         rel_tol: float | None = None, dtype: str = "auto") -> dict:
    import latent_scale

    start = time.perf_counter()
    r = latent_scale.estimate(model=model, data=data, size=size, limit=limit, batch_size=batch_size,
                              workers=workers, device=device, rel_tol=rel_tol, dtype=dtype, progress=False,
                              seed=0)
    return {"images": r.num_images, "seconds": time.perf_counter() - start, "factor": r.scale_factor,
            "held_mb": 0.0, "stopped_early": r.run["stopped_early"]}


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints JSON with its peak RSS."""
    torch.set_num_threads(args.threads) if args.threads else None
    fn = naive if args.child == "naive" else ours
    kw = {"rel_tol": args.rel_tol, "dtype": args.dtype} if args.child == "ours" else {}
    res = fn(args.model, args.data, args.size, args.limit, args.batch_size, args.workers, args.device, **kw)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res))


def measure(which: str, **kw: object) -> dict:
    cmd = [sys.executable, __file__, "--child", which]
    for k, v in kw.items():
        if v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sd", choices=["sd", "tiny"], help="VAE for the speed rows")
    p.add_argument("--size", type=int, default=256, help="image size for the speed rows")
    p.add_argument("--images", type=int, default=24, help="N: images for the speed rows")
    p.add_argument("--mem-images", type=int, default=128, help="N for the memory rows (tiny f/2 VAE, 512 px)")
    p.add_argument("--tol-images", type=int, default=3000, help="images for the --rel-tol rows (tiny VAE, 64 px)")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", choices=["naive", "ours"], help=argparse.SUPPRESS)
    for hidden in ("model", "data"):
        p.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    p.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rel-tol", type=float, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        speed_model = build_vae(args.arch, tmp)
        speed_data = write_images(tmp, args.images, args.size)
        encoder_flops_per_image = encoder_flops(str(speed_model), args.size)
        common = {"model": speed_model, "data": speed_data, "size": args.size, "limit": args.images,
                  "batch_size": args.batch_size, "device": args.device}
        nv = measure("naive", workers=4, **common)
        eq = measure("ours", workers=4, **common)
        df = measure("ours", workers=None, **common)
        rows.append(("speed", f"naive script (fp32, 4 workers; {args.arch} VAE {args.size}px)", nv))
        rows.append(("speed", "latent-scale, same settings (4 workers)", eq))
        rows.append(("speed", "latent-scale, default workers", df))
        if args.device.startswith("cuda"):
            rows.append(("speed", "latent-scale, float32", measure("ours", workers=None, dtype="float32", **common)))

        mem_model = build_vae("tiny", tmp)
        n = args.mem_images
        mem_data = write_images(tmp, 4 * n, 512)
        for count in (n, 4 * n):
            mcommon = {"model": mem_model, "data": mem_data, "size": 512, "limit": count,
                       "batch_size": args.batch_size, "device": args.device, "workers": 4}
            rows.append(("memory", f"naive script, tiny f/2 VAE 512px, {count} images", measure("naive", **mcommon)))
            rows.append(("memory", f"latent-scale, tiny f/2 VAE 512px, {count} images", measure("ours", **mcommon)))
        bf16 = measure("ours", **{**mcommon, "limit": n, "dtype": "bfloat16"})
        rows.append(("dtype", f"latent-scale bfloat16, tiny f/2 VAE 512px, {n} images", bf16))
        tol_data = write_images(tmp, args.tol_images, 80)
        tcommon = {"model": mem_model, "data": tol_data, "size": 64, "limit": args.tol_images,
                   "batch_size": args.batch_size, "device": args.device}
        full = measure("ours", **tcommon)
        rows.append(("rel-tol", f"latent-scale full pass, tiny f/2 VAE 64px, {args.tol_images} images", full))
        for tol in (1e-2, 1e-3):
            rows.append(("rel-tol", f"latent-scale --rel-tol {tol:g}, same data",
                         measure("ours", rel_tol=tol, **tcommon)))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}\n")
    print("| what | run | images | seconds | images/s | peak RSS MB | latents held MB | factor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, name, r in rows:
        print(f"| {kind} | {name} | {r['images']} | {r['seconds']:.1f} | {r['images'] / r['seconds']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['held_mb']:.1f} | {r['factor']:.5f} |")
    flops = encoder_flops_per_image
    print(f"\nencoder: {flops / 1e9:.1f} GFLOP per {args.size}px image; achieved "
          + ", ".join(f"{name} {flops * r['images'] / r['seconds'] / 1e12:.3f} TFLOP/s"
                      for kind, name, r in rows if kind == "speed"))
    print(f"speed ratio, same settings: {nv['seconds'] / eq['seconds']:.2f}x; "
          f"default workers: {nv['seconds'] / df['seconds']:.2f}x (latent-scale vs naive, >1 = faster)")
    fp32 = [r for k, name, r in rows if k == "memory" and "latent-scale" in name][0]
    print(f"bfloat16 vs float32 factor (same {fp32['images']} images): {bf16['factor']:.6f} vs "
          f"{fp32['factor']:.6f}, relative difference {bf16['factor'] / fp32['factor'] - 1:+.2e}")
    for kind, name, r in rows:
        if kind == "rel-tol" and r is not full:
            print(f"{name}: {r['images']} images, {r['seconds']:.1f} s vs full pass {full['images']} images "
                  f"{full['seconds']:.1f} s; factor {r['factor']:.5f} vs {full['factor']:.5f}")


if __name__ == "__main__":
    main()
