"""Run the presets in configs/ and print each estimate beside the factor its model publishes.

Needs the Hugging Face hub (weights) and the Imagenette download (~1.5 GB, cached once), so it
is not part of CI; offline it says so and exits 0. Examples:

    python scripts/reproduce_published.py                          # every preset, full passes
    python scripts/reproduce_published.py sdxl flux1-schnell --rel-tol 1e-3
    python scripts/reproduce_published.py --limit 500 --device cuda

A factor measured on Imagenette at 512 px need not equal the published one (measured on the
authors' training data and resolution); the ratio column shows how far apart they are.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import latent_scale
from latent_scale.errors import InputError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def hub_unreachable() -> str | None:
    """Why the hub cannot be used from here, or None when it can."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return "HF_HUB_OFFLINE is set"
    try:
        urllib.request.urlopen("https://huggingface.co/api/models/CompVis/stable-diffusion-v1-4", timeout=10)
    except (urllib.error.URLError, OSError) as e:
        return f"https://huggingface.co is not reachable ({getattr(e, 'reason', e)})"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", help="preset names (file stems in configs/); default: all")
    parser.add_argument("--limit", type=int, help="images per preset (default: the full data set)")
    parser.add_argument("--rel-tol", type=float, help="stop each run once its 95%% interval is this tight")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-dir", type=Path, help="write each result JSON here")
    args = parser.parse_args()
    paths = [CONFIGS / f"{p}.toml" for p in args.presets] or sorted(CONFIGS.glob("*.toml"))
    missing = [p.stem for p in paths if not p.is_file()]
    if missing:
        print(f"no preset {', '.join(missing)} in {CONFIGS}", file=sys.stderr)
        return 2
    why = hub_unreachable()
    if why:
        print(f"skipped: {why}; run this where the Hugging Face hub is reachable")
        return 0
    rows = [("preset", "estimate ± 95%", "published", "estimate/published", "images")]
    for path in paths:
        preset = tomllib.loads(path.read_text())
        published = preset["published"]
        output = str(args.output_dir / f"{path.stem}.json") if args.output_dir else None
        try:
            r = latent_scale.estimate(config=str(path), limit=args.limit, rel_tol=args.rel_tol,
                                      device=args.device, output=output)
        except InputError as e:
            rows.append((path.stem, f"skipped: {e}", "", "", ""))
            continue
        half = (r.scale_factor_ci95[1] - r.scale_factor_ci95[0]) / 2
        estimate = f"{r.scale_factor:.5f} ± {half:.5f}"
        shown = f"{published['scaling_factor']:g}"
        if "shift_factor" in published:
            estimate += f" (shift {r.shift_factor:.4f})"
            shown += f" (shift {published['shift_factor']:g})"
        if "classic_script" in published:
            shown += f"; classic script {published['classic_script']:g}"
        rows.append((path.stem, estimate, shown, f"{r.scale_factor / published['scaling_factor']:.4f}",
                     str(r.num_images)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
