"""Side-by-side benchmarks: the classic keep-every-latent script vs `latent-scale estimate`.

Runs offline: the VAEs are built from configs (random weights: speed and memory do not depend on
the weights), the images are real photographs from scikit-image, cropped and resized, saved as
JPEG. Each end-to-end measurement runs in a fresh subprocess so its peak RSS is its own, and the
runs compared with each other are interleaved, `--repeats` times, so a busy machine slows all of
them alike. Prints markdown tables (pasted into the README).

    python scripts/bench.py --sections stats,speed       # the statistics, then naive vs fp32 vs auto
    python scripts/bench.py --sections workers           # worker processes x image size x model size
    python scripts/bench.py --sections stats --stats-against /tmp/old_stats.py   # before/after
    python scripts/bench.py --device cuda --size 512 --images 480 --sections speed   # on a GPU

Sections: stats (seconds), speed (SD architecture, a few minutes on 2 cores), workers (~5 min),
memory and tol (a few minutes each).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

SECTIONS = ("stats", "speed", "workers", "memory", "tol")
STATS_SHAPES = ((4, 32, 32), (4, 64, 64), (16, 64, 64))  # SD at 256 / 512 px, a 16-channel VAE at 512 px


def build_vae(arch: str, out: Path) -> Path:
    """`sd`: the Stable Diffusion VAE architecture (f/8, 4 channels); `tiny`: f/2 without the
    mid-block attention (quadratic in latent pixels), for memory runs with large latents."""
    from diffusers import AutoencoderKL

    path = out / f"vae-{arch}"
    if path.exists():
        return path
    torch.manual_seed(0)
    if arch == "sd":
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                            sample_size=512, scaling_factor=0.18215)
    else:
        vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                            norm_num_groups=4, sample_size=64, mid_block_add_attention=False)
    vae.save_pretrained(path)
    return path


def write_images(out: Path, count: int, size: int) -> Path:
    """Random square crops of skimage photographs, resized a little larger than --size, as JPEG."""
    from PIL import Image
    from skimage import data

    folder = out / f"images-{count}-{size}"
    if folder.exists():
        return folder
    names = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "brick", "grass", "gravel",
             "hubble_deep_field", "immunohistochemistry", "moon"]
    photos = [getattr(data, n)() for n in names]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
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


# --- the statistics alone -----------------------------------------------------------------------------

def load_stats(path: str | None) -> ModuleType:
    """latent_scale.stats, or another version of that file (e.g. `git show REV:src/latent_scale/stats.py`)."""
    if path is None:
        from latent_scale import stats

        return stats
    spec = importlib.util.spec_from_file_location("stats_against", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stats_inputs(shape: tuple[int, ...], batch: int) -> tuple[torch.Tensor, ...]:
    """What the pipeline hands over: float64 μ and σ laid out channels-last (the encoder's layout), float32 ε."""
    g = torch.Generator().manual_seed(0)
    mu, sigma = (torch.randn(batch, *shape, generator=g, dtype=torch.float64) * 5 for _ in range(2))
    mu, sigma = (t.contiguous(memory_format=torch.channels_last) for t in (mu, sigma.abs()))
    return mu, sigma, torch.randn(batch, *shape, generator=g)


def stats_costs(versions: dict[str, ModuleType], shape: tuple[int, ...], batch: int = 12,
                rounds: int = 7) -> list[float]:
    """Milliseconds per latent of PosteriorStats.update (moments, per-image moments, histograms, sample
    and σ²) for each version; rounds alternate between versions, and the best round counts."""
    inputs = stats_inputs(shape, batch)
    accs = [m.PosteriorStats(shape[0], True, m.histogram_edges(1 / 0.18215)) for m in versions.values()]
    best = [float("inf")] * len(accs)
    for _ in range(rounds):
        for k, acc in enumerate(accs):
            start = time.perf_counter()
            for _ in range(5):
                acc.update(*inputs)
            best[k] = min(best[k], (time.perf_counter() - start) / 5 / batch * 1e3)
    return best


def stats_section(against: str | None) -> None:
    versions = {"this tree": load_stats(None)}
    if against:
        versions[Path(against).name] = load_stats(against)
    default = torch.get_num_threads()
    print("\nStatistics per latent (PosteriorStats.update, float64, batch 12)\n")
    print("| latent | threads | " + " | ".join(f"{name} ms" for name in versions) + " |")
    print("|---|---:|" + "---:|" * len(versions))
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        for shape in STATS_SHAPES:
            cells = " | ".join(f"{ms:.3f}" for ms in stats_costs(versions, shape))
            print(f"| {'x'.join(map(str, shape))} | {threads} | {cells} |")
    torch.set_num_threads(default)


# --- end to end, in subprocesses ----------------------------------------------------------------------

def naive(model: str, data: str, size: int, limit: int, batch_size: int, workers: int, device: str) -> dict:
    """The classic throw-away script: fp32, 4 loader workers, every latent kept, then .std().
    Timed from loading the model, as latent-scale's run is."""
    from diffusers import AutoencoderKL
    from torch.utils.data import DataLoader

    from latent_scale.sources.images import open_rgb, preprocess

    start = time.perf_counter()
    vae = AutoencoderKL.from_pretrained(model).to(device).eval()
    tf = preprocess(size)
    paths = sorted(Path(data).glob("*.jpg"))[:limit]
    loader = DataLoader(paths, batch_size=batch_size, num_workers=workers,
                        collate_fn=lambda ps: torch.stack([tf(open_rgb(p)) for p in ps]))
    latents = []
    with torch.no_grad():
        for x in loader:
            latents.append(vae.encode(x.to(device)).latent_dist.sample().cpu())
    z = torch.cat(latents)
    factor = 1 / z.double().std().item()
    seconds = time.perf_counter() - start
    return {"images": len(z), "seconds": seconds, "factor": factor, "held_mb": z.numel() * 4 / 2**20}


def ours(model: str, data: str, size: int, limit: int, batch_size: int, workers: int | None, device: str,
         rel_tol: float | None = None, dtype: str = "auto") -> dict:
    import latent_scale

    start = time.perf_counter()
    r = latent_scale.estimate(model=model, data=data, size=size, limit=limit, batch_size=batch_size,
                              workers=workers, device=device, rel_tol=rel_tol, dtype=dtype, progress=False,
                              seed=0)
    return {"images": r.num_images, "seconds": time.perf_counter() - start, "factor": r.scale_factor,
            "held_mb": 0.0, "stopped_early": r.run.get("stopped_early"), "dtype": r.recipe.get("dtype"),
            "precision_check": r.run.get("precision_check"), "loop_rate": r.run.get("images_per_s")}


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints JSON with its peak RSS."""
    if args.threads:
        torch.set_num_threads(args.threads)
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
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interleaved(runs: dict[str, tuple[str, dict]], repeats: int) -> dict[str, list[dict]]:
    """Each named run `repeats` times, round-robin, so machine load hits every run alike."""
    out: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (which, kw) in runs.items():
            out[name].append(measure(which, **kw))
    return out


def rate(r: dict) -> float:
    return r["images"] / r["seconds"]


def precision_text(check: dict | None) -> str:
    if not check:
        return "–"
    return f"std {check['std_rel_diff']:+.1e} vs float32 ({check['images']} images)"


def loop_text(rs: list[dict]) -> str:
    rates = [r["loop_rate"] for r in rs if r.get("loop_rate")]
    return " / ".join(f"{v:.2f}" for v in rates) or "–"


def speed_section(args: argparse.Namespace, tmp: Path) -> None:
    """The naive script vs latent-scale in float32 vs latent-scale with the auto dtype, side by side."""
    model, data = build_vae(args.arch, tmp), write_images(tmp, args.images, args.size)
    common = {"model": model, "data": data, "size": args.size, "limit": args.images,
              "batch_size": args.batch_size, "device": args.device}
    runs = {"naive script (fp32, 4 workers)": ("naive", {**common, "workers": 4}),
            "latent-scale --dtype float32": ("ours", {**common, "dtype": "float32"}),
            "latent-scale --dtype auto": ("ours", {**common, "dtype": "auto"})}
    results = interleaved(runs, args.repeats)
    base = [rate(r) for r in results["naive script (fp32, 4 workers)"]]
    flops = encoder_flops(str(model), args.size)
    print(f"\nSpeed: {args.arch} VAE, {args.size} px, {args.images} images, batch {args.batch_size}, "
          f"{args.device}, {args.repeats} interleaved repeats (images/s per repeat)\n")
    print("| run | dtype | images/s | vs naive | TFLOP/s | loop images/s | factor | precision check |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, rs in results.items():
        ratios = [rate(r) / b for r, b in zip(rs, base, strict=True)]
        print(f"| {name} | {rs[-1].get('dtype') or 'float32'} | {' / '.join(f'{rate(r):.2f}' for r in rs)} | "
              f"{statistics.median(ratios):.2f}x | {flops * statistics.median(map(rate, rs)) / 1e12:.3f} | "
              f"{loop_text(rs)} | {rs[-1]['factor']:.5f} | {precision_text(rs[-1].get('precision_check'))} |")
    print("\nimages/s: the whole job (model loading, the float32 twin of a precision check, FLOP counting, "
          "every batch); loop images/s: latent-scale's own count of its encode loop.")


def worker_configs(cores: int) -> dict[str, dict[str, int | None]]:
    """Loader processes, and the encoder's threads left at torch's default or set to the cores left over."""
    left = max(1, cores - 1)
    return {"0 workers": {"workers": 0}, f"0 workers, {left} thread(s)": {"workers": 0, "threads": left},
            "1 worker": {"workers": 1}, f"1 worker, {left} thread(s)": {"workers": 1, "threads": left},
            "2 workers": {"workers": 2}}


def workers_section(args: argparse.Namespace, tmp: Path) -> None:
    """images/s for each worker configuration, per model and image size; the best per row in bold."""
    cores = os.cpu_count() or 1
    configs = worker_configs(cores)
    print(f"\nWorkers on {cores} cores (encode-loop images/s, median of {args.repeats} interleaved repeats; "
          "dtype auto; at least 3 batches, so loading can overlap encoding)\n")
    print("| model | size | images | batch | " + " | ".join(configs) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(configs))
    for arch in args.worker_models.split(","):
        model, count = build_vae(arch, tmp), args.worker_images if arch == "tiny" else max(4, args.worker_images // 8)
        for size in (128, 256, 512):
            n = count if arch == "tiny" or size < 512 else max(4, count // 2)
            batch = max(1, min(args.batch_size, n // 3))
            common = {"model": model, "data": write_images(tmp, n, size), "size": size, "limit": n,
                      "batch_size": batch, "device": args.device}
            runs = {name: ("ours", {**common, **cfg}) for name, cfg in configs.items()}
            rates = {name: statistics.median(r.get("loop_rate") or rate(r) for r in rs)
                     for name, rs in interleaved(runs, args.repeats).items()}
            cells = [f"**{v:.2f}**" if v == max(rates.values()) else f"{v:.2f}" for v in rates.values()]
            print(f"| {arch} | {size} | {n} | {batch} | " + " | ".join(cells) + " |", flush=True)


def memory_section(args: argparse.Namespace, tmp: Path) -> None:
    """Peak RSS of the naive script (every latent kept) vs latent-scale, tiny f/2 VAE at 512 px."""
    model, n = build_vae("tiny", tmp), args.mem_images
    data = write_images(tmp, 4 * n, 512)
    rows = []
    for count in (n, 4 * n):
        common = {"model": model, "data": data, "size": 512, "limit": count, "batch_size": args.batch_size,
                  "device": args.device, "workers": 4}
        rows.append((f"naive script, {count} images", measure("naive", **common)))
        rows.append((f"latent-scale float32, {count} images", measure("ours", dtype="float32", **common)))
    rows.append((f"latent-scale bfloat16, {4 * n} images", measure("ours", dtype="bfloat16", **common)))
    print("\nMemory: tiny f/2 VAE, 512 px\n")
    print("| run | images | seconds | images/s | peak RSS MB | latents held MB | factor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['images']} | {r['seconds']:.1f} | {rate(r):.2f} | {r['peak_rss_mb']:.0f} | "
              f"{r['held_mb']:.1f} | {r['factor']:.5f} |")


def tol_section(args: argparse.Namespace, tmp: Path) -> None:
    """--rel-tol against a full pass, tiny VAE at 64 px."""
    data = write_images(tmp, args.tol_images, 80)
    common = {"model": build_vae("tiny", tmp), "data": data, "size": 64, "limit": args.tol_images,
              "batch_size": args.batch_size, "device": args.device, "dtype": "float32"}
    full = measure("ours", **common)
    print(f"\n--rel-tol: tiny f/2 VAE, 64 px; full pass {full['images']} images in {full['seconds']:.1f} s, "
          f"factor {full['factor']:.5f}\n")
    for tol in (1e-2, 1e-3):
        r = measure("ours", rel_tol=tol, **common)
        print(f"- --rel-tol {tol:g}: {r['images']} images, {r['seconds']:.1f} s, factor {r['factor']:.5f}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="stats,speed,memory,tol", help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--arch", default="sd", choices=["sd", "tiny"], help="VAE for the speed rows")
    p.add_argument("--size", type=int, default=256, help="image size for the speed rows")
    p.add_argument("--images", type=int, default=24, help="images for the speed rows")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the compared runs")
    p.add_argument("--worker-images", type=int, default=96, help="images per tiny-VAE workers run (SD: 1/8)")
    p.add_argument("--worker-models", default="tiny,sd", help="VAEs for the workers rows: tiny, sd or both")
    p.add_argument("--mem-images", type=int, default=128, help="N for the memory rows (tiny f/2 VAE, 512 px)")
    p.add_argument("--tol-images", type=int, default=3000, help="images for the --rel-tol rows (tiny VAE, 64 px)")
    p.add_argument("--stats-against", help="another stats.py to time beside this tree's")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", choices=["naive", "ours"], help=argparse.SUPPRESS)
    for hidden in ("model", "data"):
        p.add_argument(f"--{hidden}", help=argparse.SUPPRESS)
    for hidden in ("limit", "workers", "threads"):
        p.add_argument(f"--{hidden}", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rel-tol", type=float, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    args = parse()
    if args.child:
        return child(args)
    chosen = args.sections.split(",")
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown --sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"device {args.device}, load average {os.getloadavg()[0]:.1f}")
    if "stats" in chosen:
        stats_section(args.stats_against)
    runners: dict[str, Any] = {"speed": speed_section, "workers": workers_section, "memory": memory_section,
                               "tol": tol_section}
    with tempfile.TemporaryDirectory() as tmp:
        for name in SECTIONS[1:]:
            if name in chosen:
                runners[name](args, Path(tmp))


if __name__ == "__main__":
    main()
