"""The machine as a yardstick: which CPU it is, the practical peak TFLOP/s of the dtype a run used, and
the memory layout its convolutions run fastest in.

A CPU's peak is measured, not looked up: the faster of a 2048² matmul and a 3×3 convolution (the
encoder's own kernel) in the run's dtype and thread count, best of a few, timed by the cores' own time
so that other programs running meanwhile do not lower it, once per (CPU model, torch version, threads,
dtype) and cached in the cache folder; a run's share of it is what the run got of this CPU. Both
kernels count because the libraries differ per vendor: MKL multiplies float32 matrices at half speed
on AMD CPUs, while oneDNN's convolutions use every vector unit. GPUs use the published dense
tensor-core peaks.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

CPUINFO = "/proc/cpuinfo"
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # Linux flags of units that multiply bfloat16 natively
CPU_CACHES = "/sys/devices/system/cpu/cpu0/cache"
PEAK_FILE = "peak-tflops.json"
PROBE_REPEATS = 6  # best of: the first call of each kernel warms up (oneDNN builds it) and is not timed

# Dense peaks (TFLOP/s) from the vendors' datasheets: bfloat16/float16 tensor cores, and TF32, which
# float32 convolutions use on these GPUs (torch.backends.cudnn.allow_tf32 is on by default). The
# first name contained in the device's name counts, so specific names come first.
GPU_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756.5, 378.0), ("H100 NVL", 835.5, 417.5), ("H200", 989.4, 494.7), ("H100", 989.4, 494.7),
    ("A100", 312.0, 156.0), ("L40S", 362.1, 183.0), ("L4", 121.0, 60.0), ("A10", 125.0, 62.5),
    ("RTX 4090", 165.2, 82.6),
)

# Whether the encoder's weights go channels-last, per (device type, dtype). CPU entries measured on
# 2 cores with scripts/bench.py --sections layout (AMD EPYC, AVX-512 with bf16: 1.17x float32, 1.19x
# bfloat16 on the SD encoder at 256 px; 1.23x float32 on an AVX2-only EPYC); CUDA entries follow
# cuDNN, whose tensor-core kernels are channels-last. float16 on a CPU is not listed: it has no fast
# kernels there, so its default layout stays.
CHANNELS_LAST = {("cpu", torch.float32): True, ("cpu", torch.bfloat16): True,
                 ("cuda", torch.float32): True, ("cuda", torch.bfloat16): True, ("cuda", torch.float16): True}


# A CPU chunk holds the number of units whose largest intermediate tensor comes closest to this share
# of the last-level cache: the group norms, SiLUs and additions between convolutions then read from the
# cache, not from memory. Measured on the SD encoder, 2 cores with a 32 MB L3 (scripts/bench.py
# --sections chunks): bfloat16 at 256 px 3.06 images/s in chunks of 1 against 2.16 in chunks of 16;
# at 64, 128 and 256 px, in float32 and bfloat16, the best chunk's largest tensor was 16 to 17 MB.
CACHE_SHARE = 0.5


def prefers_channels_last(device: torch.device, dtype: torch.dtype) -> bool:
    """The faster layout for this device type and dtype (CHANNELS_LAST; the default layout elsewhere)."""
    return CHANNELS_LAST.get((device.type, dtype), False)


def memory_format_name(channels_last: bool) -> str:
    """What the result records in run.memory_format."""
    return "channels_last" if channels_last else "contiguous"


def _cpuinfo_field(name: str, cpuinfo: str | None) -> str | None:
    """The first `name : value` of /proc/cpuinfo (None where there is no such file or field)."""
    try:
        text = Path(cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name (Linux), else what the platform says, else the architecture."""
    return _cpuinfo_field("model name", cpuinfo) or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where it cannot tell)."""
    return set((_cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_facts(cpuinfo: str | None = None) -> dict[str, Any]:
    """What decides a CPU's speed here: its name, cores, and the vector units torch can use."""
    flags = cpu_flags(cpuinfo)
    return {"cpu": cpu_model(cpuinfo), "cores": _cores(),
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "bf16_units": not BF16_FLAGS.isdisjoint(flags), "amx": "amx_tile" in flags}


def _size_bytes(text: str) -> int | None:
    """sysfs cache sizes: '32768K', '2M' or plain bytes."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text.rstrip("KMG")
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None


def last_level_cache_bytes(caches: str | None = None) -> int | None:
    """The size of the CPU's largest cache level (Linux sysfs; else what libc says; None if unknown)."""
    sizes: dict[int, int] = {}
    for index in Path(caches or CPU_CACHES).glob("index*"):
        try:
            level, size = int((index / "level").read_text()), _size_bytes((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if size:
            sizes[level] = size
    if sizes:
        return sizes[max(sizes)]
    try:
        return os.sysconf("SC_LEVEL3_CACHE_SIZE") or None
    except (ValueError, OSError, AttributeError):
        return None


def chunk_budget(device: torch.device) -> int | None:
    """Bytes the largest tensor of one auto-sized chunk aims at: on a CPU, CACHE_SHARE of its
    last-level cache; None elsewhere (GPUs run whole batches, halved only on out-of-memory)."""
    cache = last_level_cache_bytes() if device.type == "cpu" else None
    return int(cache * CACHE_SHARE) if cache else None


def units_per_chunk(budget: int, largest: int, most: int) -> int:
    """The chunk whose largest tensor (`largest` bytes per unit) comes closest to `budget`: 1 to `most`."""
    return max(1, min(most, int(budget / max(1, largest) + 0.5)))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """The kernel's seconds on an otherwise idle machine: per call, the wall time or, when other programs
    took turns on the cores, the process's CPU time per thread (each thread's time on a core, so a busy
    moment does not lower the peak that is cached for good); the best of `repeats` after a warm-up."""
    fn()
    best, threads = float("inf"), torch.get_num_threads()
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        wall, on_cores = time.perf_counter() - start, (time.process_time() - cpu) / threads
        best = min(best, wall, on_cores if on_cores > 0 else wall)
    return best


def probe_tflops(dtype: torch.dtype, repeats: int = PROBE_REPEATS) -> dict[str, float]:
    """TFLOP/s of a 2048² matmul and of a 3×3 convolution (256 channels, 128², channels-last) in
    `dtype` with torch's current threads, each the best of `repeats` after a warm-up call."""
    side = 2048
    a, b = (torch.randn(side, side).to(dtype) for _ in range(2))
    x = torch.randn(1, 256, 128, 128).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        mm = 2 * side**3 / _best_seconds(lambda: a @ b, repeats)
        conv = 2 * 256 * 256 * 9 * 128 * 128 / _best_seconds(
            lambda: torch.nn.functional.conv2d(x, w, padding=1), repeats)
    return {"matmul": mm / 1e12, "conv3x3": conv / 1e12}


def peak_key(dtype: torch.dtype, threads: int | None = None) -> str:
    """What the measured peak depends on: CPU model, torch version, threads, dtype, and the vector
    instructions torch and oneDNN may use (ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA can lower them)."""
    threads = threads or torch.get_num_threads()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return (f"{cpu_model()}|torch {torch.__version__}|{threads} threads|{str(dtype).removeprefix('torch.')}|"
            f"{torch.backends.cpu.get_cpu_capability()}" + (f", oneDNN {isa}" if isa else ""))


def cpu_peak_tflops(dtype: torch.dtype, cache_dir: Path, at_least: float = 0.0) -> float | None:
    """This CPU's practical peak for `dtype` (float32 and bfloat16; None for others), measured once and
    cached in `cache_dir`; an unreadable or unwritable cache only costs a new measurement. A cached peak
    below `at_least` (a rate a run just reached) was measured while other work slowed the CPU: it is
    measured again, and the peak is never below what a run reached."""
    if dtype not in (torch.float32, torch.bfloat16):
        return None
    from .outputs import write_json
    from .reading import read_json

    path, key = Path(cache_dir) / PEAK_FILE, peak_key(dtype)
    try:
        saved = read_json(path) if path.is_file() else {}
    except InputError:  # a damaged cache is measured again, never trusted
        saved = {}
    saved = saved if isinstance(saved, dict) else {}
    entry = saved.get(key)
    cached = entry.get("tflops") if isinstance(entry, dict) else None
    if isinstance(cached, float) and cached > 0 and cached >= at_least:
        return cached
    probes = probe_tflops(dtype)
    saved[key] = {"tflops": max(*probes.values(), at_least), **probes}
    try:
        write_json(path, saved)
    except (InputError, OSError):
        pass  # a read-only cache folder: measured again next time
    return saved[key]["tflops"]


def gpu_peak_tflops(name: str, dtype: torch.dtype) -> float | None:
    """The datasheet's dense peak for this GPU and dtype (TF32 for float32), None where not listed."""
    for part, low, tf32 in GPU_PEAKS:
        if part in name:
            return tf32 if dtype == torch.float32 else low
    return None


def peak_tflops(device: torch.device, dtype: torch.dtype, cache_dir: Path, at_least: float = 0.0) -> float | None:
    """The practical peak a run is measured against: the GPU's datasheet, or the CPU's measured one
    (never below `at_least`, the rate the run reached)."""
    if device.type == "cuda":
        return gpu_peak_tflops(torch.cuda.get_device_name(device), dtype)
    return cpu_peak_tflops(dtype, cache_dir, at_least) if device.type == "cpu" else None


def speed(flops_per_unit: float | None, units: int, seconds: float, device: torch.device, dtype: torch.dtype,
          cache_dir: Path) -> dict[str, Any]:
    """Units/s and the encoder's TFLOP/s, with the share of the device's practical peak it reached."""
    rate = units / seconds if seconds > 0 else None
    tflops = flops_per_unit * rate / 1e12 if flops_per_unit and rate else None
    peak = peak_tflops(device, dtype, cache_dir, tflops) if tflops else None
    return {"images_per_s": rate, "encoder_gflop_per_image": flops_per_unit / 1e9 if flops_per_unit else None,
            "achieved_tflops": tflops, "peak_tflops": peak,
            "fraction_of_peak": tflops / peak if tflops and peak else None}
