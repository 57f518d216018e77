"""The machine as a yardstick: CPU facts from /proc/cpuinfo, the practical peak measured once and cached
per (CPU, torch, threads, dtype), the share of it a run reached, and the layout the encoder runs in."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from latent_scale import hardware
from latent_scale.report import format_table

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B45
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16
\nprocessor\t: 1
model name\t: AMD EPYC 9B45
"""


@pytest.fixture
def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    monkeypatch.setattr(hardware, "CPUINFO", str(path))
    return path


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[torch.dtype]:
    """Every probe asked for, answered with 0.2 (matmul) and 0.3 (convolution) TFLOP/s."""
    asked: list[torch.dtype] = []

    def probe(dtype: torch.dtype, repeats: int = 0) -> dict[str, float]:
        asked.append(dtype)
        return {"matmul": 0.2, "conv3x3": 0.3}

    monkeypatch.setattr(hardware, "probe_tflops", probe)
    return asked


def test_cpu_facts_come_from_the_first_processor(cpuinfo: Path) -> None:
    facts = hardware.cpu_facts()
    assert facts["cpu"] == "AMD EPYC 9B45" and facts["avx2"] and facts["avx512"] and facts["bf16_units"]
    assert not facts["amx"] and facts["cores"] >= 1
    assert hardware.cpu_flags(str(cpuinfo.parent / "missing")) == set()


def test_peak_is_the_faster_probe_and_measured_once_per_key(cpuinfo: Path, probes: list, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    assert hardware.cpu_peak_tflops(torch.float32, cache) == 0.3
    assert hardware.cpu_peak_tflops(torch.float32, cache) == 0.3  # from the cache file
    assert probes == [torch.float32]
    saved = json.loads((cache / hardware.PEAK_FILE).read_text())
    threads = torch.get_num_threads()
    isa = torch.backends.cpu.get_cpu_capability()
    key = f"AMD EPYC 9B45|torch {torch.__version__}|{threads} threads|float32|{isa}"
    assert saved == {key: {"tflops": 0.3, "matmul": 0.2, "conv3x3": 0.3}}
    hardware.cpu_peak_tflops(torch.bfloat16, cache)  # another dtype: measured
    torch.set_num_threads(threads + 1)
    try:
        hardware.cpu_peak_tflops(torch.float32, cache)  # another thread count: measured
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    hardware.cpu_peak_tflops(torch.float32, cache)  # oneDNN held to AVX2: measured
    assert probes == [torch.float32, torch.bfloat16, torch.float32, torch.float32]
    assert f"{key}, oneDNN AVX2" in json.loads((cache / hardware.PEAK_FILE).read_text())


def test_a_damaged_cache_is_measured_again_and_float16_is_not_probed(cpuinfo: Path, probes: list,
                                                                     tmp_path: Path) -> None:
    (tmp_path / hardware.PEAK_FILE).write_text('{"AMD EPYC 9B45": ')
    assert hardware.cpu_peak_tflops(torch.float32, tmp_path) == 0.3
    (tmp_path / hardware.PEAK_FILE).write_text(json.dumps({hardware.peak_key(torch.bfloat16): {"tflops": "fast"}}))
    assert hardware.cpu_peak_tflops(torch.bfloat16, tmp_path) == 0.3
    assert hardware.cpu_peak_tflops(torch.float16, tmp_path) is None
    assert probes == [torch.float32, torch.bfloat16]


class Clocks:
    """time.perf_counter and time.process_time that each call to the probed kernel advances by given steps."""

    def __init__(self, steps: list[tuple[float, float]]) -> None:
        self.steps, self.wall, self.cpu = steps, 0.0, 0.0

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def kernel(self) -> None:
        wall, cpu = self.steps.pop(0)
        self.wall, self.cpu = self.wall + wall, self.cpu + cpu


def test_probe_time_is_the_cores_own_when_other_programs_took_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """2 threads. Call 1 warms up; call 2: 1 s wall but 0.5 s CPU (0.25 s per thread: the machine was busy);
    call 3: 0.4 s wall, 0.8 s CPU (idle, both threads busy); call 4: no CPU time read, so its wall time."""
    clocks = Clocks([(9.0, 9.0), (1.0, 0.5), (0.4, 0.8), (0.3, 0.0)])
    monkeypatch.setattr(hardware, "time", clocks)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert hardware._best_seconds(clocks.kernel, 2) == pytest.approx(0.25, rel=1e-12)
    clocks.steps = [(9.0, 9.0), (0.4, 0.8), (0.3, 0.0)]
    assert hardware._best_seconds(clocks.kernel, 2) == pytest.approx(0.3, rel=1e-12)


def test_speed_is_the_share_of_the_peak(cpuinfo: Path, probes: list, tmp_path: Path) -> None:
    """2e11 FLOPs per unit, 10 units in 8 s: 0.25 TFLOP/s, against a 0.3 TFLOP/s peak."""
    out = hardware.speed(2e11, 10, 8.0, torch.device("cpu"), torch.bfloat16, tmp_path)
    assert out["images_per_s"] == 1.25 and out["encoder_gflop_per_image"] == pytest.approx(200)
    assert out["achieved_tflops"] == pytest.approx(0.25, rel=1e-12)
    assert out["peak_tflops"] == 0.3 and out["fraction_of_peak"] == pytest.approx(0.25 / 0.3, rel=1e-12)
    none = hardware.speed(None, 10, 4.0, torch.device("cpu"), torch.float64, tmp_path)
    assert none["achieved_tflops"] is None and none["fraction_of_peak"] is None and probes == [torch.bfloat16]


def test_a_cached_peak_below_what_a_run_reached_is_measured_again(cpuinfo: Path, probes: list,
                                                                  tmp_path: Path) -> None:
    """A peak measured while other work slowed the CPU (0.1 cached) against a run at 0.5: probed again
    (0.3), and the peak is never below what the run reached; a slower run then keeps that peak."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / hardware.PEAK_FILE).write_text(json.dumps({hardware.peak_key(torch.float32): {"tflops": 0.1}}))
    cpu = torch.device("cpu")
    fast = hardware.speed(0.5e12, 1, 1.0, cpu, torch.float32, cache)
    assert probes == [torch.float32] and fast["peak_tflops"] == 0.5 and fast["fraction_of_peak"] == 1.0
    slow = hardware.speed(0.25e12, 1, 1.0, cpu, torch.float32, cache)
    assert probes == [torch.float32] and slow["peak_tflops"] == 0.5 and slow["fraction_of_peak"] == 0.5


@pytest.mark.parametrize(("name", "dtype", "peak"), [
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.4), ("NVIDIA H100 PCIe", torch.bfloat16, 756.5),
    ("NVIDIA H100 80GB HBM3", torch.float32, 494.7), ("NVIDIA A100-SXM4-80GB", torch.float16, 312.0),
    ("NVIDIA L4", torch.bfloat16, 121.0), ("NVIDIA L40S", torch.bfloat16, 362.1), ("Tesla T4", torch.bfloat16, None)])
def test_gpu_peaks_come_from_the_datasheet_table(name: str, dtype: torch.dtype, peak: float | None) -> None:
    assert hardware.gpu_peak_tflops(name, dtype) == peak


def test_channels_last_where_it_measured_faster() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert hardware.prefers_channels_last(cpu, torch.float32) and hardware.prefers_channels_last(cpu, torch.bfloat16)
    assert not hardware.prefers_channels_last(cpu, torch.float16)
    assert all(hardware.prefers_channels_last(cuda, d) for d in (torch.float32, torch.bfloat16, torch.float16))


def test_a_run_records_its_layout_and_share_of_the_peak(vae_dir: Path, photo_dir: Path, tmp_path: Path,
                                                        measure: Callable[..., dict]) -> None:
    """conftest's probe answers 1.0 TFLOP/s (matmul) and 0.5 (convolution): the peak is 1.0."""
    r = measure(vae_dir, photo_dir, limit=4, dtype="float32", cache_dir=str(tmp_path / "cache"))
    run = r["run"]
    assert run["memory_format"] == "channels_last" and run["peak_tflops"] == 1.0
    achieved = run["encoder_gflop_per_image"] * 1e9 * r["num_images"] / run["seconds"] / 1e12
    assert run["achieved_tflops"] == pytest.approx(achieved, rel=1e-9)
    assert run["fraction_of_peak"] == pytest.approx(achieved / 1.0, rel=1e-9)
    assert (tmp_path / "cache" / hardware.PEAK_FILE).is_file()
    shown = " ".join(format_table(r).split())  # as read, wrapped lines joined
    assert f"{100 * run['fraction_of_peak']:.3g}% of this CPU's float32 peak (1 TFLOP/s)" in shown


def _caches(root: Path, sizes: dict[int, str]) -> Path:
    """A sysfs cache folder as Linux lays it out: index*/level and index*/size."""
    for i, (level, size) in enumerate(sizes.items()):
        (root / f"index{i}").mkdir(parents=True)
        (root / f"index{i}" / "level").write_text(f"{level}\n")
        (root / f"index{i}" / "size").write_text(f"{size}\n")
    return root


@pytest.mark.parametrize(("sizes", "expected"), [({1: "48K", 2: "1024K", 3: "32768K"}, 32 << 20),
                                                 ({1: "32K", 2: "2M"}, 2 << 20), ({2: "4194304"}, 4 << 20)])
def test_last_level_cache_is_the_highest_level_sysfs_lists(tmp_path: Path, sizes: dict, expected: int) -> None:
    assert hardware.last_level_cache_bytes(str(_caches(tmp_path / "cache", sizes))) == expected


def test_an_unreadable_cache_size_falls_back_to_libc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware.os, "sysconf", lambda name: 8 << 20)
    assert hardware.last_level_cache_bytes(str(_caches(tmp_path / "cache", {3: "lots"}))) == 8 << 20
    monkeypatch.setattr(hardware.os, "sysconf", lambda name: 0)
    assert hardware.last_level_cache_bytes(str(tmp_path / "missing")) is None
    monkeypatch.setattr(hardware, "last_level_cache_bytes", lambda: None)
    assert hardware.chunk_budget(torch.device("cpu")) is None


@pytest.mark.parametrize(("cache_images", "chunk"), [(3.4, 3), (3.6, 4), (0.4, 1), (100.0, 8)])
def test_cpu_chunks_hold_the_images_closest_to_half_the_cache(vae_dir: Path, photo_dir: Path, measure: Callable,
                                                              monkeypatch: pytest.MonkeyPatch, largest_tensor: Callable,
                                                              cache_images: float, chunk: int) -> None:
    """A cache of 2 x `cache_images` images' largest tensors: chunks of `cache_images` rounded, at least 1,
    at most the batch; the statistics are those of one image per chunk."""
    reference = measure(vae_dir, photo_dir, batch_size=8, chunk_size="1")
    monkeypatch.setattr(hardware, "last_level_cache_bytes", lambda: int(2 * cache_images * largest_tensor(32)))
    r = measure(vae_dir, photo_dir, batch_size=8)
    assert r.run["chunk_size"] == chunk and r.num_images == reference.num_images == 24
    for post in ("sample", "mode"):
        assert r.estimates[post]["std"] == pytest.approx(reference.estimates[post]["std"], rel=1e-6)


@pytest.mark.filterwarnings("ignore:bfloat16 moved the latent std")
def test_the_precision_check_covers_one_chunk_at_most_4_units(vae_dir: Path, photo_dir: Path, measure: Callable,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              largest_tensor: Callable) -> None:
    """bfloat16 chunks hold twice as many images as float32 ones under the same cache."""
    monkeypatch.setattr(hardware, "last_level_cache_bytes", lambda: largest_tensor(32) * 2)  # 2 bf16 images
    r = measure(vae_dir, photo_dir, batch_size=8, limit=8, dtype="bfloat16")
    assert r.run["chunk_size"] == 2 and r.run["precision_check"]["images"] == 2
    monkeypatch.setattr(hardware, "last_level_cache_bytes", lambda: largest_tensor(32) * 40)
    r = measure(vae_dir, photo_dir, batch_size=8, limit=8, dtype="bfloat16")
    assert r.run["chunk_size"] == 8 and r.run["precision_check"]["images"] == 4
