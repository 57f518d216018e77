"""The float32 precision check of low-precision runs, and when `--dtype auto` picks bfloat16 on a CPU."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from latent_scale import models
from latent_scale.precision import precision_check, precision_limit, precision_warning


def test_check_of_a_scaled_latent_matches_hand_computed_values() -> None:
    """μ_low = 1.01·μ: the std grows by exactly 1 %; |Δ| = 0.01·|μ| averages 0.025 for μ = 1..4,
    and std(1..4, ddof=1) = sqrt(5/3)."""
    ref = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(2, 1, 1, 2)
    check = precision_check(ref * 1.01, ref, torch.bfloat16)
    assert check["dtype"] == "bfloat16" and check["reference"] == "float32" and check["images"] == 2
    assert check["std_float32"] == pytest.approx((5 / 3) ** 0.5, rel=1e-15)
    assert check["std_rel_diff"] == pytest.approx(0.01, rel=1e-6)
    assert check["mean_abs_diff_in_std"] == pytest.approx(0.025 / (5 / 3) ** 0.5, rel=1e-6)


def test_check_is_signed_and_the_warning_uses_its_size() -> None:
    ref = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    check = precision_check(ref * 0.99, ref, "float16")
    assert check["std_rel_diff"] == pytest.approx(-0.01, rel=1e-6)
    assert "--dtype float32" in precision_warning(check)


def _with_diff(diff: float) -> dict:
    return {"dtype": "bfloat16", "images": 4, "std_rel_diff": diff}


@pytest.mark.parametrize(("rel_tol", "quiet", "loud"), [(None, 0.9e-3, 1.1e-3), (0.01, 0.0024, 0.0026)])
def test_warning_threshold_is_a_quarter_of_rel_tol_else_1e_3(rel_tol: float | None, quiet: float,
                                                           loud: float) -> None:
    assert precision_limit(rel_tol) == (rel_tol / 4 if rel_tol else 1e-3)
    assert precision_warning(_with_diff(quiet), rel_tol) is None
    message = precision_warning(_with_diff(-loud), rel_tol)
    assert "use --dtype float32" in message and f"{loud:.1e}" in message and "first 4 images" in message


def test_check_refuses_chunks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        precision_check(torch.zeros(2, 4, 2, 2), torch.zeros(1, 4, 2, 2), torch.bfloat16)


def test_bf16_tiny_vae_difference_equals_numpy_relative_std_difference(
        vae_dir: Path, photo_set: Callable[..., Path], classic_pixels: Callable[..., torch.Tensor]) -> None:
    """The check on a real bf16 encode: exactly numpy's float64 (std_bf16 - std_fp32) / std_fp32."""
    x = classic_pixels(sorted(photo_set(4).rglob("*.png")))
    fp32 = AutoencoderKL.from_pretrained(vae_dir).eval()
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    with torch.inference_mode():
        mu32 = fp32.encode(x).latent_dist.mean
        mu16 = bf16.encode(x.to(torch.bfloat16)).latent_dist.mean
    check = precision_check(mu16, mu32, mu16.dtype)
    a, b = mu16.double().numpy(), mu32.double().numpy()
    expected = (a.std(ddof=1) - b.std(ddof=1)) / b.std(ddof=1)
    assert check["std_rel_diff"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert check["mean_abs_diff_in_std"] == pytest.approx(np.abs(a - b).mean() / b.std(ddof=1), rel=1e-9)
    assert check["images"] == 4 and 0 < check["mean_abs_diff_in_std"] < 0.05  # bf16: ~3 significant digits


# --- --dtype auto on a CPU ------------------------------------------------------------------------------

CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: Some CPU
flags\t\t: fpu vme sse sse2 avx avx2 avx512f {extra}
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu vme sse sse2 avx avx2 avx512f {extra}
"""


@pytest.mark.parametrize(("extra", "native"), [("", False), ("avx512_bf16", True), ("amx_tile amx_bf16", True),
                                               ("avx512_fp16 amx_int8", False), ("avx512_bf16x", False)])
def test_cpu_bf16_detection_reads_the_cpuinfo_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str,
                                                    native: bool) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")  # torch may use them
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(vendor="GenuineIntel", extra=extra))
    assert models.cpu_has_native_bf16(str(info)) is native


def test_cpu_bf16_units_held_back_by_aten_cpu_capability_are_not_used(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """ATEN_CPU_CAPABILITY=avx2 (as when timing an AVX2-only CPU on a newer one): float32 by default."""
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO.format(vendor="AuthenticAMD", extra="avx512_bf16"))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert models.cpu_has_native_bf16(str(info)) is False
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert models.cpu_has_native_bf16(str(info)) is True


def test_cpu_bf16_detection_is_false_where_it_cannot_tell(tmp_path: Path) -> None:
    """No /proc/cpuinfo (macOS, Windows), or one without an x86 flags line (ARM's `Features`)."""
    assert models.cpu_has_native_bf16(str(tmp_path / "missing")) is False
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert models.cpu_has_native_bf16(str(arm)) is False


@pytest.mark.parametrize("native", [False, True])
def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(models.device, "cpu_has_native_bf16", lambda: native)
    expected = torch.bfloat16 if native else torch.float32
    assert models.resolve_dtype("auto", torch.device("cpu")) == expected
    assert models.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert models.resolve_dtype("auto", torch.device("meta")) == torch.float32
    assert models.resolve_dtype("float32", torch.device("cpu")) == torch.float32  # forcing still wins


def test_every_low_precision_run_carries_its_check_and_warns_past_the_limit(
        vae_dir: Path, photo_dir: Path, measure: Callable[..., dict],
        classic_pixels: Callable[..., torch.Tensor]) -> None:
    """The first 4 units encoded again by a true float32 model; the reported difference is the numpy
    float64 relative std difference of the two encodes; a --rel-tol below 4x that difference warns."""
    from latent_scale.sources.base import order

    assert measure(vae_dir, photo_dir, limit=6)["run"]["precision_check"] is None  # float32: nothing to check
    with pytest.warns(UserWarning, match="use --dtype float32"):
        r = measure(vae_dir, photo_dir, limit=6, dtype="bfloat16", batch_size=6, rel_tol=1e-9)
    check = r["run"]["precision_check"]
    assert check["dtype"] == "bfloat16" and check["images"] == 4
    files = sorted(str(p) for p in photo_dir.rglob("*.png"))
    x = classic_pixels([files[i] for i in order(len(files), 0, 6)[:4]])
    low, high = (models.load_model(str(vae_dir), device="cpu", dtype=d) for d in ("bfloat16", "float32"))
    a, b = (m.posterior(x)[0].double().numpy().std(ddof=1) for m in (low, high))
    assert check["std_rel_diff"] == pytest.approx((a - b) / b, rel=1e-6)


def test_the_warning_names_the_runs_unit() -> None:
    """An audio run's warning counts audio clips, not images."""
    message = precision_warning(_with_diff(0.01), None, "audio clips")
    assert "on the first 4 audio clips," in message and "images" not in message
    assert "on the first audio clip," in precision_warning({**_with_diff(0.01), "images": 1}, None, "audio clips")
