"""Side-by-side benchmarks: the classic keep-every-latent scripts vs `latent-scale`.

Runs offline: the VAEs are built from configs (random weights: speed and memory do not depend on
the weights), the images are real photographs from scikit-image, cropped and resized, saved as
JPEG; the videos are pans over them (PyAV); the latent files are seeded noise. Each end-to-end
measurement runs in a fresh subprocess so its peak RSS is its own, and the runs compared with each
other are interleaved, `--repeats` times, so a busy machine slows all of them alike. Prints
markdown tables (pasted into the README).

    python scripts/bench.py --sections stats,speed       # the statistics, then naive vs fp32 vs auto
    python scripts/bench.py --sections latents,video     # --latents vs a torch.load loop; video clips
    python scripts/bench.py --sections sweep,forecast,cli
    python scripts/bench.py --sections stats --stats-against /tmp/old/stats   # before/after (package or stats.py)
    python scripts/bench.py --device cuda --size 512 --images 480 --sections speed   # on a GPU

Sections: stats and cli (seconds), latents, sweep, forecast (a minute or two each), speed, video,
memory and tol (a few minutes each), workers (~5 min).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
STATS_SHAPES = ((4, 32, 32), (4, 64, 64), (16, 64, 64))  # SD at 256 / 512 px, a 16-channel VAE at 512 px
ARCHS = {  # diffusers class and config of each benchmark VAE (random weights)
    # the Stable Diffusion VAE (f/8, 4 channels)
    "sd": ("AutoencoderKL", dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                                 up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                                 sample_size=512, scaling_factor=0.18215)),
    # f/2 without the mid-block attention (quadratic in latent pixels), for runs with many or large latents
    "tiny": ("AutoencoderKL", dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                                   up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                                   norm_num_groups=4, sample_size=64, mid_block_add_attention=False)),
    # Wan 2.1's layout (causal 3-D convolutions, temporal compression 4, spatial 8) at 1/6 of its width
    "wan": ("AutoencoderKLWan", dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                     temperal_downsample=[False, True, True])),
    # Stable Audio Open's Oobleck (44.1 kHz stereo, 2048 samples per latent frame) at 1/8 of its width
    "oobleck": ("AutoencoderOobleck", dict(encoder_hidden_size=16, decoder_channels=16, decoder_input_channels=64,
                                           downsampling_ratios=[2, 4, 4, 8, 8], channel_multiples=[1, 2, 4, 8, 16])),
}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "brick", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "moon")


# --- inputs, built once per run in a temporary folder ---------------------------------------------------

def build_vae(arch: str, out: Path) -> Path:
    """One of ARCHS, saved as a diffusers folder (seeded, so every run gets the same weights)."""
    import diffusers

    path = out / f"vae-{arch}"
    if not path.exists():
        torch.manual_seed(0)
        cls, config = ARCHS[arch]
        getattr(diffusers, cls)(**config).save_pretrained(path)
    return path


def photo(k: int) -> np.ndarray:
    from skimage import data

    return getattr(data, PHOTOS[k % len(PHOTOS)])()


def write_images(out: Path, count: int, size: int) -> Path:
    """Random square crops of skimage photographs, resized a little larger than --size, as JPEG."""
    from PIL import Image

    folder = out / f"images-{count}-{size}"
    if folder.exists():
        return folder
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for k in range(count):
        img = photo(k)
        h, w = img.shape[:2]
        s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        side = int(size * 1.25)
        Image.fromarray(img[y:y + s, x:x + s]).convert("RGB").resize((side, side)).save(
            folder / f"{k:05d}.jpg", quality=90)
    return folder


def write_videos(out: Path, count: int, frames: int, side: int, fps: int = 24) -> Path:
    """Cameras panning across the photographs, H.264 in MP4, 4:3 with the shorter side a little over `side`."""
    import av
    from PIL import Image

    folder = out / f"videos-{count}-{frames}-{side}"
    folder.mkdir(exist_ok=True)
    size = (side * 5 // 3 // 2 * 2, side * 5 // 4 // 2 * 2)  # even, as yuv420p needs
    for k in range(count):
        img = Image.fromarray(photo(k)).convert("RGB")
        w, h = img.size[0] // 2, min(img.size[1], img.size[0] * 3 // 8)
        with av.open(str(folder / f"{k:04d}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            for i in range(frames):
                x = (img.size[0] - w) * i // (frames - 1)
                frame = img.crop((x, 0, x + w, h)).resize(size, Image.BILINEAR)
                container.mux(stream.encode(av.VideoFrame.from_image(frame)))
            container.mux(stream.encode())
    return folder


def write_audio(out: Path, count: int, seconds: float, rate: int = 48000) -> Path:
    """Stereo 16-bit WAVs of seeded tones and noise at 48 kHz, so the audio rows pay for resampling to 44.1 kHz."""
    import wave

    folder, rng = out / f"audio-{count}-{seconds:g}s", np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    t = np.arange(round(seconds * rate)) / rate
    for k in range(count):
        signal = 0.3 * np.sin(2 * np.pi * rng.uniform(50, 2000) * t)[:, None] + 0.05 * rng.standard_normal((len(t), 2))
        with wave.open(str(folder / f"{k:04d}.wav"), "wb") as w:
            w.setnchannels(2), w.setsampwidth(2), w.setframerate(rate)
            w.writeframes(np.round(np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
    return folder


def write_latents(out: Path, count: int, shape: tuple[int, ...]) -> Path:
    """`count` .pt files of one float32 latent each, as a training repo's cache holds them."""
    folder = out / f"latents-{count}-{'x'.join(map(str, shape))}"
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for k in range(count):
        torch.save(torch.randn(shape, generator=g) * 5 + 0.5, folder / f"{k:06d}.pt")
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
    """latent_scale.stats, or another version of it: a folder holding the package (e.g. `git archive REV
    src/latent_scale/stats | tar -x`) or the single stats.py of trees before the package."""
    if path is None:
        from latent_scale import stats

        return stats
    folder = Path(path) if Path(path).is_dir() else None
    spec = importlib.util.spec_from_file_location("stats_against", folder / "__init__.py" if folder else path,
                                                  submodule_search_locations=[str(folder)] if folder else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the package's relative imports find it there
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


def stats_section(args: argparse.Namespace, tmp: Path) -> None:
    """The per-latent cost of the statistics, against another stats.py with --stats-against."""
    versions = {"this tree": load_stats(None)}
    if args.stats_against:
        versions[Path(args.stats_against).name] = load_stats(args.stats_against)
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


# --- what runs in a child process ---------------------------------------------------------------------

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
    latents, first = [], None
    with torch.no_grad():
        for x in loader:
            first = first or process_age()
            latents.append(vae.encode(x.to(device)).latent_dist.sample().cpu())
    return {**kept(torch.cat(latents), start), "startup_s": first, "process_s": process_age()}


def naive_video(model: str, data: str, frames: int, size: int, limit: int, batch_size: int, device: str) -> dict:
    """The throw-away script for video: the first `frames` frames of each file decoded with PyAV, each
    preprocessed like an image, clips of (3, T, H, W) encoded in float32, every latent kept, then .std()."""
    import av
    from diffusers import AutoencoderKLWan

    from latent_scale.sources.images import preprocess

    start, tf = time.perf_counter(), preprocess(size)
    vae = AutoencoderKLWan.from_pretrained(model).to(device).eval()
    clips, latents, first = [], [], None
    paths = sorted(Path(data).glob("*.mp4"))[:limit]
    for path in paths:
        with av.open(str(path)) as container:
            decoded = [f.to_image() for f in itertools.islice(container.decode(video=0), frames)]
        clips.append(torch.stack([tf(img) for img in decoded], dim=1))
        if len(clips) == batch_size or path == paths[-1]:
            first = first or process_age()
            with torch.no_grad():
                latents.append(vae.encode(torch.stack(clips).to(device)).latent_dist.sample().cpu())
            clips = []
    return {**kept(torch.cat(latents), start), "startup_s": first, "process_s": process_age()}


def naive_latents(folder: str) -> dict:
    """What training repos do with a latent cache: torch.load every file, torch.cat, .std()."""
    start = time.perf_counter()
    files = sorted(Path(folder).glob("*.pt"))
    return kept(torch.cat([torch.load(f, weights_only=True)[None] for f in files]), start)


def kept(z: torch.Tensor, start: float) -> dict:
    """The naive scripts' answer: one std over every latent they kept."""
    factor = 1 / z.double().std().item()
    return {"units": len(z), "seconds": time.perf_counter() - start, "factor": factor, "held_mb": z.numel() * 4 / 2**20}


def ours(**options: Any) -> dict:
    """latent_scale.estimate with these options, timed from the call (imports excluded, as for the naive
    scripts); a --size sweep gives each size's factor. Start-up: from the process's start to the first
    batch, plus the float32 twin's load (inside the first batch); `steps` times each step before it."""
    if not options.get("latents"):  # imported here, not inside the model load: timed apart
        from diffusers import AutoencoderKL  # noqa: F401
    imported = process_age()
    from latent_scale import estimation

    marks = {"import_s": process_age()}
    _instrument(estimation, marks)
    start = time.perf_counter()
    out = estimation.estimate(progress=False, seed=0, **options)
    seconds = time.perf_counter() - start
    r, *_ = results = out if isinstance(out, list) else [out]
    steps = {"python, torch, diffusers": imported, "import latent_scale": marks["import_s"] - imported,
             **{k: v for k, v in marks.items() if k.endswith(" s")}}
    return {"units": r.num_images, "seconds": seconds, "factor": r.scale_factor, "held_mb": 0.0,
            "factors": [x.scale_factor for x in results], "ci95": r.scale_factor_ci95,
            "stopped_early": r.run.get("stopped_early"), "dtype": r.recipe.get("dtype"),
            "precision_check": r.run.get("precision_check"), "loop_rate": r.run.get("images_per_s"),
            "unit": r.unit_name,
            "run": {k: r.run.get(k) for k in RUN_KEYS}, "process_s": process_age(), "steps": steps,
            "startup_s": marks.get("first_batch_at", process_age()) + marks.get("float32 twin s", 0.0)}


RUN_KEYS = ("achieved_tflops", "peak_tflops", "fraction_of_peak", "memory_format", "seconds")
TIMED = {"load_model": "model load s", "model_identity": "identity s", "open_source": "listing s",
         "source_named": "listing s"}  # what estimation calls before the first batch, and its step


def _instrument(estimation: ModuleType, marks: dict[str, float]) -> None:
    """Time the steps before the first batch by wrapping what `estimation` calls (the run's own model load
    is the first), mark when the encoder first gets a batch, and time how long the run waits for the
    float32 twin (ChunkedEncoder.float32's first call: its load, or what is left of it)."""
    from latent_scale.encode import ChunkedEncoder

    def timed(fn: Callable, step: str, once: bool = False) -> Callable:
        def wrapper(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            out = fn(*a, **kw)
            if not (once and step in marks):
                marks[step] = marks.get(step, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    for name, step in TIMED.items():
        if hasattr(estimation, name):
            setattr(estimation, name, timed(getattr(estimation, name), step, once=name == "load_model"))
    ChunkedEncoder.float32 = timed(ChunkedEncoder.float32, "float32 twin s", once=True)
    call = ChunkedEncoder.__call__

    def first_call(self: ChunkedEncoder, x: torch.Tensor) -> Any:
        marks.setdefault("first_batch_at", process_age())
        return call(self, x)

    ChunkedEncoder.__call__ = first_call


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere: since this script loaded)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - LOADED


LOADED = time.perf_counter()


CHILDREN: dict[str, Callable[..., dict]] = {"naive": naive, "naive_video": naive_video, "naive_latents": naive_latents,
                                            "ours": ours}


def child(which: str, options: str) -> None:
    """One measurement in this fresh process; prints its result as JSON with its peak RSS."""
    kw = json.loads(options)
    if kw.get("threads"):
        torch.set_num_threads(kw.pop("threads"))
    with tempfile.TemporaryDirectory(prefix="latent-scale-bench-") as cache:
        if kw.pop("empty_cache", False):
            kw["cache_dir"] = cache
        res = CHILDREN[which](**kw)
    res["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(res))


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM, which exec resets. ru_maxrss is not: Linux carries it over
    fork + exec, so every child would report at least the parent's size at the fork."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


# --- running children and showing what they measured ----------------------------------------------------

def measure(which: str, tree: Path | None = None, **kw: object) -> dict:
    """CHILDREN[which](**kw) in a fresh process (None values dropped: the callee's default), importing
    latent_scale from `tree` (a copy of another revision, see --against) where given."""
    options = json.dumps({k: v for k, v in kw.items() if v is not None}, default=str)
    cmd = [sys.executable, __file__, "--child", which, options]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")} if tree else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # with its loader workers
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "cpu_s": cpu}


def interleaved(runs: dict[str, tuple[str, dict]], repeats: int) -> dict[str, list[dict]]:
    """Each named run `repeats` times, round-robin, so machine load hits every run alike."""
    out: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (which, kw) in runs.items():
            out[name].append(measure(which, **kw))
    return out


def rate(r: dict) -> float:
    return r["units"] / r["seconds"]


def rates_text(rs: list[dict]) -> str:
    """Units/s of each repeat."""
    return " / ".join(f"{rate(r):.2f}" for r in rs)


def ratio_text(rs: list[dict], base: list[dict]) -> str:
    """Median over repeats of the rate against the baseline run of the same repeat."""
    return f"{statistics.median(rate(r) / rate(b) for r, b in zip(rs, base, strict=True)):.2f}x"


def table(header: str, rows: list[list[object]]) -> None:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    cols = header.split("|")
    print("\n| " + " | ".join(cols) + " |\n|---|" + "---:|" * (len(cols) - 1))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |", flush=True)


def precision_text(check: dict | None, unit: str = "image") -> str:
    if not check:
        return "–"
    n = check["images"]
    return f"std {check['std_rel_diff']:+.1e} vs float32 ({n} {unit}{'' if n == 1 else 's'})"


def loop_text(rs: list[dict]) -> str:
    rates = [r["loop_rate"] for r in rs if r.get("loop_rate")]
    return " / ".join(f"{v:.2f}" for v in rates) or "–"


# --- the sections ---------------------------------------------------------------------------------------

def speed_section(args: argparse.Namespace, tmp: Path) -> None:
    """The naive script vs latent-scale (float32, the auto dtype, and --against's revision), side by side:
    end to end from each process's start, start-up, and the encode loop's share of this CPU's peak."""
    model, data = build_vae(args.arch, tmp), write_images(tmp, args.images, args.size)
    common = {"model": model, "data": data, "size": args.size, "limit": args.images,
              "batch_size": args.batch_size, "device": args.device}
    runs = {"naive script (fp32, 4 workers)": ("naive", {**common, "workers": 4}),
            "latent-scale --dtype float32": ("ours", {**common, "dtype": "float32"}),
            "latent-scale --dtype auto": ("ours", {**common, "dtype": "auto"})}
    if args.against:
        runs[f"latent-scale --dtype auto at {args.against}"] = ("ours", {**common, "tree": against(args, tmp)})
    peaks = measure_peaks(args.device)
    results = interleaved(runs, args.repeats)
    base = results["naive script (fp32, 4 workers)"]
    print(f"\nSpeed: {args.arch} VAE, {args.size} px, {args.images} images, batch {args.batch_size}, "
          f"{args.device}, {cpu_line()}, {args.repeats} interleaved repeats; peak {peaks}")
    table("run|dtype|layout|end to end s|vs naive|vs naive, CPU time|start-up s|loop images/s|loop TFLOP/s|"
          "share of peak|factor|precision check", [speed_row(name, rs, base) for name, rs in results.items()])
    print("\nend to end: from the process's start (imports included) to the answer, median of the repeats; "
          "vs naive: the naive script's time over this one's, per repeat, median (CPU time: the processes' own "
          "CPU seconds, loader workers included, which other programs on the machine do not inflate); "
          "start-up: before the first "
          "batch, plus the float32 twin's load; loop: latent-scale's own count of its encode loop (batches, "
          "the precision check's float32 encode, the statistics).")


def speed_row(name: str, rs: list[dict], base: list[dict]) -> list[object]:
    """One run's cells: median over its repeats (each against the naive run of the same repeat)."""
    run, med = rs[-1].get("run") or {}, statistics.median
    loop = [r["run"]["achieved_tflops"] for r in rs if (r.get("run") or {}).get("achieved_tflops")]
    share = [r["run"]["fraction_of_peak"] for r in rs if (r.get("run") or {}).get("fraction_of_peak")]
    return [name, rs[-1].get("dtype") or "float32", run.get("memory_format") or "–",
            f"{med(r['process_s'] for r in rs):.1f}",
            f"{med(b['process_s'] / r['process_s'] for r, b in zip(rs, base, strict=True)):.2f}x",
            f"{med(b['cpu_s'] / r['cpu_s'] for r, b in zip(rs, base, strict=True)):.2f}x",
            f"{med(r['startup_s'] for r in rs):.1f}", loop_text(rs),
            f"{med(loop):.3f}" if loop else "–", f"{100 * med(share):.0f} %" if share else "–",
            f"{rs[-1]['factor']:.5f}", precision_text(rs[-1].get("precision_check"), rs[-1].get("unit", "image"))]


def measure_peaks(device: str) -> str:
    """This CPU's practical peak per dtype, measured now (or read from the cache) so no timed run pays it."""
    if device != "cpu":
        return "from the GPU datasheet table"
    from latent_scale.hardware import cpu_peak_tflops
    from latent_scale.sources.images import cache_root

    peaks = {name: cpu_peak_tflops(getattr(torch, name), cache_root()) for name in ("float32", "bfloat16")}
    return ", ".join(f"{name} {tflops:.3f} TFLOP/s" for name, tflops in peaks.items())


def cpu_line() -> str:
    """The CPU model, its cores and vector units: every figure is per CPU model."""
    from latent_scale.hardware import cpu_facts

    f = cpu_facts()
    units = [name for name in ("avx2", "avx512", "bf16_units", "amx") if f[name]]
    return f"{f['cpu']} ({f['cores']} cores, {', '.join(units) or 'no AVX2'})"


def against(args: argparse.Namespace, tmp: Path) -> Path:
    """A folder holding src/ of another latent_scale: --against itself when it is one, else that git
    revision's src/ extracted (git archive: the working tree is untouched)."""
    if (Path(args.against) / "src" / "latent_scale").is_dir():
        return Path(args.against).resolve()
    out = tmp / f"against-{args.against.replace('/', '_')}"
    if not out.exists():
        out.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against, "src"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


STEPS = ("python, torch, diffusers", "import latent_scale", "model load s", "identity s", "listing s",
         "float32 twin s")


def startup_section(args: argparse.Namespace, tmp: Path) -> None:
    """Each step before the first batch, in fresh processes, this tree beside --against's: the first run on
    a machine (empty cache: the weights get hashed) and a later one (cache warm)."""
    model, data = build_vae(args.arch, tmp), write_images(tmp, args.batch_size, args.size)
    common = {"model": model, "data": data, "size": args.size, "limit": args.batch_size,
              "batch_size": args.batch_size, "device": args.device, "dtype": "auto"}
    trees = {"this tree": None, **({args.against: against(args, tmp)} if args.against else {})}
    measure_peaks(args.device)
    runs = {f"{label}, {kind}": ("ours", {**common, "tree": tree, "empty_cache": kind.startswith("first")})
            for label, tree in trees.items() for kind in ("first run (empty cache)", "later run")}
    results = interleaved(runs, args.repeats)
    print(f"\nStart-up: {args.arch} VAE, {args.size} px, dtype auto, {args.device}, {cpu_line()}; seconds before "
          f"the first batch (plus the float32 twin's load), median of {args.repeats} interleaved fresh processes")
    rows = []
    for name, rs in results.items():
        steps = [statistics.median(r["steps"].get(step, 0.0) for r in rs) for step in STEPS]
        total = statistics.median(r["startup_s"] for r in rs)
        rows.append([name, *(f"{v:.2f}" for v in steps), f"{total - sum(steps):.2f}", f"{total:.2f}"])
    table("run|" + "|".join(step.removesuffix(" s") for step in STEPS) + "|other|start-up", rows)


LAYOUTS = {"contiguous (NCHW)": torch.contiguous_format, "channels_last": torch.channels_last}


def layout_section(args: argparse.Namespace, tmp: Path) -> None:
    """The SD encoder in each memory layout and dtype, in this process, interleaved, best of --repeats + 2."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(build_vae("sd", tmp)).eval()
    x = torch.randn(2, 3, args.size, args.size)
    print(f"\nLayout: SD encoder, {args.size} px, batch 2, {args.device}, {cpu_line()}, "
          f"{torch.get_num_threads()} threads (images/s, best of {args.repeats + 2} interleaved)")
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        encoders = {name: layout_encoder(vae, dtype, fmt, args.device) for name, fmt in LAYOUTS.items()}
        best = dict.fromkeys(encoders, float("inf"))
        with torch.inference_mode():
            for _ in range(args.repeats + 2):
                for name, enc in encoders.items():
                    start = time.perf_counter()
                    enc(x.to(args.device, dtype))
                    best[name] = min(best[name], time.perf_counter() - start)
        nchw, last = (len(x) / best[name] for name in LAYOUTS)
        rows.append([str(dtype).removeprefix("torch."), f"{nchw:.3f}", f"{last:.3f}", f"{last / nchw:.2f}x"])
    table("dtype|" + "|".join(LAYOUTS) + "|channels_last speed-up", rows)


def layout_encoder(vae: torch.nn.Module, dtype: torch.dtype, fmt: torch.memory_format,
                   device: str) -> torch.nn.Module:
    """A copy of the encoder half in `dtype`, its convolution weights in `fmt`; warmed up once."""
    import copy

    enc = torch.nn.Sequential(copy.deepcopy(vae.encoder), copy.deepcopy(vae.quant_conv)).to(device, dtype)
    for p in enc.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=fmt)
    with torch.inference_mode():
        enc(torch.zeros(1, 3, 64, 64, device=device, dtype=dtype))
    return enc


CHUNKS = (1, 2, 4, 8, 16)


def chunks_section(args: argparse.Namespace, tmp: Path) -> None:
    """The SD encoder (channels-last) on 16 images in chunks of 1 to 16, per size and dtype, beside the
    chunk --chunk-size auto picks on this machine (images/s, best of --repeats + 1 interleaved)."""
    from diffusers import AutoencoderKL

    from latent_scale.hardware import chunk_budget, last_level_cache_bytes, units_per_chunk
    from latent_scale.models.encoder import LargestTensor

    vae = AutoencoderKL.from_pretrained(build_vae("sd", tmp)).eval()
    budget = chunk_budget(torch.device(args.device)) or 0
    print(f"\nChunks: SD encoder, channels-last, 16 images, {args.device}, {cpu_line()}, last-level cache "
          f"{(last_level_cache_bytes() or 0) >> 20} MB (images/s, best of {args.repeats + 1}; * = auto's chunk)")
    rows = []
    for size in (64, 128, 256):
        for dtype in (torch.float32, torch.bfloat16):
            enc = layout_encoder(vae, dtype, torch.channels_last, args.device)
            x = torch.randn(16, 3, size, size).to(args.device, dtype)
            with torch.inference_mode(), LargestTensor() as largest:
                enc(x[:1])
            auto = units_per_chunk(budget, largest.nbytes, 16)
            rates = [16 / min(_chunked_seconds(enc, x, c) for _ in range(args.repeats + 1)) for c in CHUNKS]
            rows.append([size, str(dtype).removeprefix("torch."), f"{largest.nbytes / 2**20:.1f}",
                         *(f"{r:.2f}{' *' if c == auto else ''}" for c, r in zip(CHUNKS, rates, strict=True))])
    table("size|dtype|largest tensor MB per image|" + "|".join(f"chunk {c}" for c in CHUNKS), rows)


def _chunked_seconds(enc: torch.nn.Module, x: torch.Tensor, chunk: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for part in x.split(chunk):
            enc(part)
    return time.perf_counter() - start


def peak_section(args: argparse.Namespace, tmp: Path) -> None:
    """This CPU's practical peak per dtype: the probe latent-scale runs once and caches, run again now."""
    from latent_scale.hardware import peak_key, probe_tflops

    print(f"\nPeak: {cpu_line()}, {torch.get_num_threads()} threads (TFLOP/s, best of 6 after a warm-up)")
    table("dtype|2048² matmul|3×3 convolution|practical peak|cache key", [
        [name, f"{p['matmul']:.3f}", f"{p['conv3x3']:.3f}", f"{max(p.values()):.3f}",
         peak_key(getattr(torch, name)).replace("|", ", ")]
        for name, p in ((name, probe_tflops(getattr(torch, name))) for name in ("float32", "bfloat16"))])


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
          "dtype auto; at least 3 batches, so loading can overlap encoding)")
    print("\n| model | size | images | batch | " + " | ".join(configs) + " |")
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


def memory_rows(rows: list[tuple[str, dict]]) -> list[list[object]]:
    """Seconds, rate, peak RSS and what the naive script kept, per run."""
    return [[name, r["units"], f"{r['seconds']:.1f}", f"{rate(r):.2f}", f"{r['peak_rss_mb']:.0f}",
             f"{r['held_mb']:.1f}", f"{r['factor']:.5f}"] for name, r in rows]


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
    print("\nMemory: tiny f/2 VAE, 512 px")
    table("run|images|seconds|images/s|peak RSS MB|latents held MB|factor", memory_rows(rows))


LATENT_RUNS = {  # --latents rows: what torch's threads, loader workers and batches change
    "latent-scale --latents": {},
    "latent-scale --latents, 1 thread": {"threads": 1},
    "latent-scale --latents --batch-size 64, 1 thread": {"threads": 1, "batch_size": 64},
    "latent-scale --latents --workers 2": {"workers": 2},
}


def latents_section(args: argparse.Namespace, tmp: Path) -> None:
    """`--latents` vs the naive torch.load + torch.cat + .std() loop on N/4 and N .pt files, side by side."""
    shape = tuple(int(s) for s in args.latent_shape.split("x"))
    runs, base = {}, {}
    for count in (args.latent_files // 4, args.latent_files):
        folder = write_latents(tmp, count, shape)
        base[count] = f"naive loop, {count} files"
        runs[base[count]] = ("naive_latents", {"folder": folder})
        runs.update({f"{name}, {count} files": ("ours", {"latents": folder, **kw}) for name, kw in LATENT_RUNS.items()})
    results = interleaved(runs, args.repeats)
    sizes = {count: folder_mb(write_latents(tmp, count, shape)) for count in base}
    disk = read_speeds(tmp)
    print(f"\n--latents: .pt files of {args.latent_shape} (one latent each), {cpu_line()}, {args.repeats} interleaved "
          "repeats (files/s per repeat, from the call: listing included; MB/s median; peak RSS of the last); this "
          f"disk reads {disk['disk']:.0f} MB/s (a {disk['mb']:.0f} MB file, dropped from the page cache first) "
          f"and the page cache {disk['cache']:.0f} MB/s; the files were just written, so they come from the cache")
    table("run|files|files/s|MB/s|vs naive|peak RSS MB|latents held MB|factor",
          [[name, rs[-1]["units"], rates_text(rs),
            f"{statistics.median(sizes[r['units']] / r['seconds'] for r in rs):.0f}",
            ratio_text(rs, results[base[rs[-1]["units"]]]),
            f"{rs[-1]['peak_rss_mb']:.0f}", f"{rs[-1]['held_mb']:.1f}", f"{rs[-1]['factor']:.9f}"]
           for name, rs in results.items()])
    print("\nlatent-scale computes everything it reports (float64 moments per channel and per latent, "
          "histograms, min/max, the interval); the naive loop one std. Defaults: batch 12, workers 0 on 2 cores.")
    npz_rows(args, tmp)


NPZ_BATCH = (3000, (4, 16, 16))  # latents in one .npz, and their shape


def write_npz(out: Path, compressed: bool) -> Path:
    """One .npz holding a batch of NPZ_BATCH latents, as np.savez or np.savez_compressed writes it."""
    count, shape = NPZ_BATCH
    path = out / f"batch-{'compressed' if compressed else 'stored'}.npz"
    batch = torch.randn((count, *shape), generator=torch.Generator().manual_seed(0)) * 5 + 0.5
    (np.savez_compressed if compressed else np.savez)(path, latents=batch.numpy())
    return path


def npz_rows(args: argparse.Namespace, tmp: Path) -> None:
    """A batch in one .npz, uncompressed (read in place) and compressed (decompressed once, then row by row)."""
    runs = {f"--latents, np.savez{suffix}": ("ours", {"latents": write_npz(tmp, bool(suffix))})
            for suffix in ("", "_compressed")}
    results = interleaved(runs, args.repeats)
    count, shape = NPZ_BATCH
    print(f"\n--latents: one .npz of {count} latents of {'x'.join(map(str, shape))}, {args.repeats} interleaved "
          "repeats (latents/s per repeat, from the call)")
    table("run|latents|latents/s|seconds|factor", [[name, rs[-1]["units"], rates_text(rs), f"{rs[-1]['seconds']:.2f}",
                                                    f"{rs[-1]['factor']:.9f}"] for name, rs in results.items()])


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 1e6


def read_speeds(tmp: Path, mb: int = 512) -> dict[str, float]:
    """MB/s of reading one large file once from the disk (written, synced, then dropped from the page cache
    with posix_fadvise: this file only, nothing else is evicted) and once more from the page cache."""
    path = tmp / "read-speed.bin"
    block = np.random.default_rng(0).bytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    speeds = {"mb": mb * 1.048576}
    for kind in ("disk", "cache"):
        start = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass
        speeds[kind] = speeds["mb"] / (time.perf_counter() - start)
    path.unlink()
    return speeds


def video_section(args: argparse.Namespace, tmp: Path) -> None:
    """Clips/s and peak RSS of a tiny Wan-architecture VAE at N and 4N clips (flat: one batch held), then
    the naive script against latent-scale (float32 and the auto dtype) on 4N clips, side by side."""
    model, n = build_vae("wan", tmp), args.clips
    data = write_videos(tmp, 4 * n, args.frames + 7, args.video_size)
    common = {"model": model, "data": data, "frames": args.frames, "size": args.video_size, "batch_size": 2,
              "device": args.device}
    rows = [measure("ours", **common, limit=count, dtype="float32") for count in (n, 4 * n)]
    print(f"\nVideo: tiny Wan-architecture VAE (AutoencoderKLWan, 1/6 width), {args.frames} frames at "
          f"{args.video_size} px, batch 2, float32, {args.device}")
    scaling_table(rows, "clips")
    runs = {"naive script (fp32)": ("naive_video", {**common, "limit": 4 * n}),
            "latent-scale --dtype float32": ("ours", {**common, "limit": 4 * n, "dtype": "float32"}),
            "latent-scale --dtype auto": ("ours", {**common, "limit": 4 * n, "dtype": "auto"})}
    results = interleaved(runs, args.repeats)
    table("run|dtype|layout|end to end s|vs naive|vs naive, CPU time|start-up s|loop clips/s|loop TFLOP/s|"
          "share of peak|factor|precision check",
          [speed_row(name, rs, results["naive script (fp32)"]) for name, rs in results.items()])


def scaling_table(rows: list[dict], units: str) -> None:
    """Runs of N and 4N units: time, rate end to end and in the loop, the loop's share of this CPU's float32
    peak, start-up, peak RSS (flat when nothing is kept)."""
    print(cpu_line())
    table(f"{units}|seconds|{units}/s|loop {units}/s|share of peak|start-up s|peak RSS MB|factor",
          [[r["units"], f"{r['seconds']:.1f}", f"{rate(r):.3f}", f"{r['loop_rate'] or 0:.3f}", share_text(r),
            f"{r['startup_s']:.1f}", f"{r['peak_rss_mb']:.0f}", f"{r['factor']:.5f}"] for r in rows])


def share_text(r: dict) -> str:
    share = (r.get("run") or {}).get("fraction_of_peak")
    return f"{100 * share:.0f} %" if share else "–"


def audio_section(args: argparse.Namespace, tmp: Path) -> None:
    """Audio clips/s and peak RSS of an Oobleck (Stable Audio) VAE at N and 4N clips of 2 s, decoded and
    resampled from 48 kHz WAVs (flat: one batch held)."""
    model, n = build_vae("oobleck", tmp), args.clips
    rows = [measure("ours", model=model, data=write_audio(tmp, 4 * n, 2.0), seconds=2.0, limit=count, batch_size=2,
                    posterior="mode", dtype="float32", device=args.device) for count in (n, 4 * n)]
    print(f"\nAudio: Oobleck VAE (1/8 width), 2 s stereo clips resampled 48 -> 44.1 kHz, batch 2, float32, "
          f"{args.device}")
    scaling_table(rows, "audio clips")


def sweep_section(args: argparse.Namespace, tmp: Path) -> None:
    """`--size 128,256` in one pass vs one run per size: time, and factors that must agree to 1e-9."""
    n, sizes = args.sweep_images, (128, 256)
    common = {"model": build_vae("tiny", tmp), "data": write_images(tmp, n, max(sizes)), "limit": n,
              "batch_size": args.batch_size, "device": args.device, "dtype": "float32"}
    runs = {"one pass, --size 128,256": ("ours", {**common, "size": ",".join(map(str, sizes))}),
            **{f"separate run, --size {s}": ("ours", {**common, "size": s}) for s in sizes}}
    results = interleaved(runs, args.repeats)
    sweep, *separate = (statistics.median(r["seconds"] for r in rs) for rs in results.values())
    singles = [rs[-1]["factor"] for rs in list(results.values())[1:]]
    worst = max(abs(a / b - 1) for a, b in zip(results["one pass, --size 128,256"][-1]["factors"], singles,
                                                strict=True))
    print(f"\nSweep: tiny f/2 VAE, {n} images, float32 (median seconds of {args.repeats} interleaved repeats)")
    table("run|seconds|factor(s)", [[name, f"{statistics.median(r['seconds'] for r in rs):.1f}",
                                     ", ".join(f"{f:.10f}" for f in rs[-1]["factors"])]
                                    for name, rs in results.items()])
    print(f"\nOne pass {sweep:.1f} s vs separate runs together {sum(separate):.1f} s "
          f"({sum(separate) / sweep:.2f}x); largest relative factor difference {worst:.1e} (target < 1e-9).")


def needed_text(r: dict) -> str:
    """Images a --rel-tol run took, or that it never got there."""
    return str(r["units"]) if r["stopped_early"] else f"> {r['units']} (not reached)"


def within_2x(r: dict, predicted: int) -> str:
    ratio = r["units"] / predicted if r["stopped_early"] else float("nan")
    return f"{ratio:.2f} ({'yes' if 0.5 <= ratio <= 2 else 'no'})"


def forecast_section(args: argparse.Namespace, tmp: Path) -> None:
    """The forecast after 200 images vs the images `--rel-tol` actually needed (target: within 2x): with
    the defaults (--min-images 50, checks after each batch of 12) and where the interval itself crosses."""
    from latent_scale.forecast import forecast

    common = {"model": build_vae("tiny", tmp), "data": write_images(tmp, args.tol_images, 80), "size": 64,
              "device": args.device, "dtype": "float32"}
    first = measure("ours", limit=200, batch_size=args.batch_size, **common)
    half = (first["ci95"][1] - first["ci95"][0]) / 2
    rows = []
    for tol in (1e-2, 3e-3):
        predicted = {floor: forecast(first["units"], first["factor"], half, 0, (tol,), floor=floor)["targets"][-1]
                     ["images"] for floor in (50, 2)}  # what the table shows: never below --min-images
        default = measure("ours", rel_tol=tol, batch_size=args.batch_size, **common)
        crossing = measure("ours", rel_tol=tol, batch_size=1, min_units=2, **common)
        rows.append([f"{tol:g}", predicted[50], needed_text(default), within_2x(default, predicted[50]),
                     predicted[2], needed_text(crossing), within_2x(crossing, predicted[2])])
    print(f"\nForecast: tiny f/2 VAE, 64 px, {args.tol_images} images; forecast from the first 200 (seeded order, "
          "the order every run takes)")
    table("--rel-tol|forecast (--min-images 50)|needed, defaults|needed / forecast|forecast (--min-images 2)|"
          "needed, --min-images 2 --batch-size 1|needed / forecast", rows)


def tol_section(args: argparse.Namespace, tmp: Path) -> None:
    """--rel-tol against a full pass, tiny VAE at 64 px."""
    data = write_images(tmp, args.tol_images, 80)
    common = {"model": build_vae("tiny", tmp), "data": data, "size": 64, "limit": args.tol_images,
              "batch_size": args.batch_size, "device": args.device, "dtype": "float32"}
    full = measure("ours", **common)
    print(f"\n--rel-tol: tiny f/2 VAE, 64 px; full pass {full['units']} images in {full['seconds']:.1f} s, "
          f"factor {full['factor']:.5f}\n")
    for tol in (1e-2, 1e-3):
        r = measure("ours", rel_tol=tol, **common)
        print(f"- --rel-tol {tol:g}: {r['units']} images, {r['seconds']:.1f} s, factor {r['factor']:.5f}")


CLI_COMMANDS = {"--help": ["--help"], "known": ["known"], "--version": ["--version"],
                "estimate --size big (bad option)": ["estimate", "--size", "big"]}


def cli_section(args: argparse.Namespace, tmp: Path) -> None:
    """Wall time of commands that must answer before any model loads, each in a fresh process."""
    exe = str(Path(sys.executable).with_name("latent-scale"))
    times: dict[str, list[float]] = {name: [] for name in CLI_COMMANDS}
    codes = {}
    for _ in range(5):
        for name, argv in CLI_COMMANDS.items():
            start = time.perf_counter()
            codes[name] = subprocess.run([exe, *argv], capture_output=True).returncode
            times[name].append(time.perf_counter() - start)
    print("\nCLI: wall time of `latent-scale ...` in a fresh process (5 interleaved runs; target < 1 s)")
    table("command|exit code|median s|min s|under 1 s", [
        [f"latent-scale {name}", codes[name], f"{statistics.median(ts):.2f}", f"{min(ts):.2f}",
         "yes" if statistics.median(ts) < 1 else "no"] for name, ts in times.items()])


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "peak": peak_section, "layout": layout_section, "chunks": chunks_section, "startup": startup_section,
    "cli": cli_section, "stats": stats_section, "speed": speed_section, "latents": latents_section,
    "video": video_section, "audio": audio_section, "sweep": sweep_section, "forecast": forecast_section,
    "workers": workers_section, "memory": memory_section, "tol": tol_section}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="cli,stats,speed,latents,video,sweep,forecast,memory,tol",
                   help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--arch", default="sd", choices=["sd", "tiny"], help="VAE for the speed rows")
    p.add_argument("--size", type=int, default=256, help="image size for the speed rows")
    p.add_argument("--images", type=int, default=24, help="images for the speed rows")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the compared runs")
    p.add_argument("--worker-images", type=int, default=96, help="images per tiny-VAE workers run (SD: 1/8)")
    p.add_argument("--worker-models", default="tiny,sd", help="VAEs for the workers rows: tiny, sd or both")
    p.add_argument("--mem-images", type=int, default=128, help="N for the memory rows (tiny f/2 VAE, 512 px)")
    p.add_argument("--tol-images", type=int, default=3000, help="images for the tol and forecast rows (64 px)")
    p.add_argument("--latent-files", type=int, default=2000, help="N for the latents rows (and N/4)")
    p.add_argument("--latent-shape", default="4x64x64", help="shape of each latent file")
    p.add_argument("--clips", type=int, default=8, help="N for the video and audio rows (and 4N)")
    p.add_argument("--frames", type=int, default=17, help="frames per clip for the video rows")
    p.add_argument("--video-size", type=int, default=128, help="frame size for the video rows")
    p.add_argument("--sweep-images", type=int, default=48, help="images for the sweep rows")
    p.add_argument("--stats-against", help="another stats package folder (or stats.py) to time beside this tree's")
    p.add_argument("--against", metavar="REV", help="a git revision (or a folder holding src/) whose latent_scale "
                   "runs beside this tree's in the speed and startup sections")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", nargs=2, metavar=("WHICH", "OPTIONS_JSON"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> None:
    args = parse()
    if args.child:
        return child(*args.child)
    chosen = args.sections.split(",")
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown --sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    print(f"torch {torch.__version__}, {cpu_line()}, {torch.get_num_threads()} threads, device {args.device}, "
          f"load average {os.getloadavg()[0]:.1f}; practical peak {measure_peaks(args.device)}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, section in SECTIONS.items():
            if name in chosen:
                section(args, Path(tmp))


if __name__ == "__main__":
    main()
