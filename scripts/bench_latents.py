"""Side-by-side benchmark for --latents: the naive torch.load + torch.cat + .std() loop vs LatentSource +
PosteriorStats (float64 moments, per-image moments and histograms), and peak memory at N and 4N files.

Each measurement runs in a fresh subprocess so its peak RSS is its own. Prints a markdown table.

    python scripts/bench_latents.py                  # 2,000 .pt files of 4x64x64; memory at 500 and 2,000
    python scripts/bench_latents.py --files 8000 --shape 4,32,32
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

import torch


def write_files(folder: Path, count: int, shape: tuple[int, ...]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for k in range(count):
        torch.save(torch.randn(shape, generator=g) * 5 + 0.5, folder / f"{k:06d}.pt")
    return folder


def naive(folder: Path) -> dict[str, float]:
    """What training repos do: every latent in memory, one std."""
    files = sorted(folder.glob("*.pt"))
    z = torch.cat([torch.load(f, weights_only=True)[None] for f in files])
    return {"std": float(z.double().std()), "units": len(files), "listing": 0.0}


def ours(folder: Path) -> dict[str, float]:
    """LatentSource + the loop's Accumulate: everything an --latents run reports, streaming."""
    from types import SimpleNamespace

    from latent_scale.loop import Accumulate, Run
    from latent_scale.sources.base import loader, order
    from latent_scale.sources.latents import LatentSource
    from latent_scale.stats import histogram_edges

    opts = SimpleNamespace(moments=False, key=None, input_scale=None, column=None)
    start = time.perf_counter()
    source = LatentSource.open(str(folder), opts)
    listing = time.perf_counter() - start
    run = Run.empty(1)
    step = Accumulate(run, source, source.posterior, seed=0, strict=False, edges=histogram_edges(5.0),
                      stochastic=False)
    for batch in loader(source, order(len(source), 0), 64, 0, False):
        step(batch)
    est = run.stats[0].estimates()["mode"]
    return {"std": est["std"], "units": est["num_images"], "listing": listing}


def cache_write(folder: Path) -> dict[str, float]:
    """--save-latents: LatentCache.add per unit (one safetensors key each), flushed at the end."""
    from latent_scale.latent_cache import LatentCache

    files = sorted(folder.glob("*.pt"))
    with tempfile.TemporaryDirectory() as out:
        cache = LatentCache(out, 0, 1, moments=False)
        for k, f in enumerate(files):
            cache.add(k, f.name, torch.load(f, weights_only=True), None)
        cache.flush()
    return {"std": float("nan"), "units": len(files), "listing": 0.0}


def one(method: str, folder: Path) -> None:
    """Child process: run one method, print seconds (imports excluded), peak RSS and the std as JSON."""
    torch.set_num_threads(1)
    if method != "naive":
        import latent_scale.latent_cache  # noqa: F401
        import latent_scale.loop  # noqa: F401
        import latent_scale.sources.latents  # noqa: F401
    start = time.perf_counter()
    out = {"naive": naive, "ours": ours, "cache": cache_write}[method](folder)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**out, "seconds": time.perf_counter() - start, "peak_rss_mb": rss}))


def measure(method: str, folder: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--one", method, "--folder", str(folder)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--shape", default="4,64,64")
    ap.add_argument("--one", choices=["naive", "ours", "cache"])
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.one:
        return one(args.one, Path(args.folder))
    shape = tuple(int(s) for s in args.shape.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        small = write_files(Path(tmp) / "n", args.files // 4, shape)
        large = write_files(Path(tmp) / "4n", args.files, shape)
        print(f"| method | files of {args.shape} | seconds | of which listing | files/s | peak RSS (MB) | std |")
        print("|---|---|---|---|---|---|---|")
        for method, folder in [("naive", small), ("naive", large), ("ours", small), ("ours", large),
                               ("cache", large)]:
            r = measure(method, folder)
            print(f"| {method} | {int(r['units'])} | {r['seconds']:.2f} | {r['listing']:.2f} | "
                  f"{r['units'] / r['seconds']:.0f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['std']:.9f} |")


if __name__ == "__main__":
    main()
