"""The GPU check: one command that measures latent-scale on one CUDA GPU and prints tables for the docs.

    bash scripts/gpu_check.sh            # installs what is missing, then runs this
    python scripts/gpu_check.py          # when diffusers & co. are already installed

Measures, on the Stable Diffusion encoder architecture (AutoencoderKL, SD 1.x config, random weights:
speed does not depend on the weights) at 512 px:
- the encoder alone on tensors already on the GPU, bfloat16 and float32, contiguous and channels-last:
  images/s, TFLOP/s and the share of the GPU's datasheet peak (bf16 tensor cores; TF32 for float32);
- a bf16 matmul (8192²) as the practical peak this GPU reaches;
- `latent-scale estimate` end to end on JPEG photographs (the package's samples, cropped): images/s,
  TFLOP/s, share of peak, the layout that ran, and the float32 precision check of its first chunk;
- `--latents` on .pt files: files/s and MB/s, against this disk's read speed.
Exits with code 2 and one sentence when no CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import bench  # scripts/bench.py: the benchmark VAE, latent files, read speeds, markdown tables

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def require_gpu(device: str) -> None:
    """One clear sentence and exit code 2 where there is no GPU to measure."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); run it on a "
              "machine with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        sys.exit(2)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: object, device: str, repeats: int) -> float:
    """Best seconds of `repeats` calls after one warm-up (cuDNN picks its kernels on the first)."""
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def encoder_rows(model: Path, args: argparse.Namespace) -> list[list[object]]:
    """The encoder half alone, per dtype and layout, on a batch already on the device."""
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from latent_scale.hardware import gpu_peak_tflops

    vae = AutoencoderKL.from_pretrained(model).eval()
    rows: list[list[object]] = []
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    for dtype in (torch.bfloat16, torch.float32):
        for layout, fmt in LAYOUTS.items():
            enc = copy.deepcopy(torch.nn.Sequential(vae.encoder, vae.quant_conv)).to(args.device, dtype)
            if not rows:  # FLOPs per image, counted once (on the device: a CPU would take seconds)
                with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                    enc(torch.zeros(1, 3, args.size, args.size, device=args.device, dtype=dtype))
                flops = counter.get_total_flops()
            for p in enc.parameters():
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=fmt)
            x = torch.randn(args.batch, 3, args.size, args.size, device=args.device, dtype=dtype)
            with torch.inference_mode():
                seconds = timed(lambda enc=enc, x=x: enc(x), args.device, args.repeats)
            rate, peak = args.batch / seconds, gpu_peak_tflops(name, dtype)
            tflops = flops * rate / 1e12
            rows.append([str(dtype).removeprefix("torch."), layout, f"{rate:.1f}", f"{tflops:.1f}",
                         f"{100 * tflops / peak:.0f} % of {peak:g}" if peak else "not listed"])
            del enc, x
    return rows


def matmul_tflops(device: str, dtype: torch.dtype = torch.bfloat16) -> float:
    """The practical peak: a large matmul (8192² on a GPU; 1024² when trying the script on a CPU), best of 5."""
    side = 8192 if device.startswith("cuda") else 1024
    a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
    return 2 * side**3 / timed(lambda: a @ b, device, 5) / 1e12


def write_photos(out: Path, count: int, size: int) -> Path:
    """`count` JPEGs: seeded random square crops of the package's sample photographs, a little larger
    than `size` (no scikit-image needed)."""
    import numpy as np
    from PIL import Image

    folder, rng = out / f"photos-{count}-{size}", np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    samples = sorted((ROOT / "src" / "latent_scale" / "samples").glob("*.jpg"))
    for k in range(count):
        img = Image.open(samples[k % len(samples)]).convert("RGB")
        s = int(rng.integers(min(img.size) // 2, min(img.size) + 1))
        x, y = (int(rng.integers(0, d - s + 1)) for d in img.size)
        img.crop((x, y, x + s, y + s)).resize((size * 5 // 4,) * 2).save(folder / f"{k:05d}.jpg", quality=90)
    return folder


def end_to_end(model: Path, data: Path, args: argparse.Namespace) -> dict:
    """`latent-scale estimate` with its defaults on this device (bf16 on CUDA), timed from the call."""
    from latent_scale import estimate

    start = time.perf_counter()
    r = estimate(model=str(model), data=str(data), size=args.size, limit=args.images, device=args.device,
                 progress=False, batch_size=args.batch)
    return {"seconds": time.perf_counter() - start, "units": r.num_images, "run": r.run, "dtype": r.recipe["dtype"]}


def latents_rate(tmp: Path, args: argparse.Namespace) -> dict:
    """`--latents` on .pt files of one SD latent at 512 px each (4×64×64 float32), median of 3."""
    folder = bench.write_latents(tmp, args.latent_files, (4, 64, 64))
    from latent_scale import estimate

    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        estimate(latents=str(folder), progress=False)
        seconds.append(time.perf_counter() - start)
    s = statistics.median(seconds)
    return {"files": args.latent_files, "files_s": args.latent_files / s, "mb_s": bench.folder_mb(folder) / s}


def report(args: argparse.Namespace, tmp: Path) -> None:
    """Measure everything and print the tables."""
    model = bench.build_vae("sd", tmp)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"# GPU check: {name}, torch {torch.__version__}, SD-architecture encoder at {args.size} px\n")
    print(f"bf16 matmul: {matmul_tflops(args.device):.1f} TFLOP/s (the practical peak)")
    bench.table("dtype|layout|images/s|TFLOP/s|share of datasheet peak", encoder_rows(model, args))
    e2e = end_to_end(model, write_photos(tmp, args.images, args.size), args)
    run, check = e2e["run"], e2e["run"].get("precision_check") or {}
    share = run.get("fraction_of_peak")
    bench.table("end to end|value", [
        ["images", e2e["units"]], ["dtype, layout", f"{e2e['dtype']}, {run.get('memory_format')}"],
        ["seconds from the call", f"{e2e['seconds']:.1f}"], ["loop images/s", f"{run['images_per_s']:.1f}"],
        ["loop TFLOP/s", f"{run.get('achieved_tflops') or 0:.1f}"],
        ["share of peak", f"{100 * share:.0f} % of {run['peak_tflops']:.3g}" if share else "not listed"],
        ["precision check", f"std {check['std_rel_diff']:+.1e} vs float32 ({check['images']} images)"
         if check else "none (float32 run)"]])
    lat, disk = latents_rate(tmp, args), bench.read_speeds(tmp)
    bench.table("--latents|value", [
        ["files (4×64×64 float32 .pt)", lat["files"]], ["files/s", f"{lat['files_s']:.0f}"],
        ["MB/s", f"{lat['mb_s']:.0f}"], ["disk read MB/s (cold)", f"{disk['disk']:.0f}"],
        ["page cache read MB/s", f"{disk['cache']:.0f}"]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="image size")
    p.add_argument("--batch", type=int, default=32, help="images per encode")
    p.add_argument("--images", type=int, default=512, help="photos for the end-to-end run")
    p.add_argument("--latent-files", type=int, default=2000, help=".pt files for the --latents rows")
    p.add_argument("--repeats", type=int, default=10, help="timed encodes per encoder row (best counts)")
    p.add_argument("--device", default="cuda", help="cuda (cpu only to try the script itself, small sizes)")
    args = p.parse_args()
    require_gpu(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        report(args, Path(tmp))


if __name__ == "__main__":
    main()
