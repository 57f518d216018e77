"""Where and in which precision the encoder runs: the device asked for (or the one present), and
bfloat16 where the hardware multiplies it natively, float32 elsewhere."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..hardware import BF16_FLAGS, cpu_flags


def resolve_device(device: str) -> torch.device:
    """auto: cuda when available, else cpu; an unknown or unavailable device is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise InputError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return dev


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (AMX-BF16 or AVX512-BF16 in the Linux
    flags), where a bf16 encode runs ~2x faster than float32; False where it cannot tell, and where
    torch was held to AVX2 or less (ATEN_CPU_CAPABILITY), which leaves those units unused."""
    held = torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2")
    return not held and not BF16_FLAGS.isdisjoint(cpu_flags(cpuinfo))


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on CUDA and on CPUs with native bf16 units (bf16 has fp32's range, so
    force_upcast does not apply; a float32 precision check measures its effect), else float32."""
    if dtype == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if native else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise InputError(f"unknown --dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]
