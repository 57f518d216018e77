#!/usr/bin/env bash
# The GPU check (docs/speed.md): on a machine with one CUDA GPU and torch, install what latent-scale needs
# and the machine lacks (diffusers, accelerate, PyAV, ...), then measure (scripts/gpu_check.py) and print
# markdown tables.
#
#   bash scripts/gpu_check.sh                      # missing packages from the package registry
#   bash scripts/gpu_check.sh --wheels DIR         # ... from wheels in DIR, offline
#   bash scripts/gpu_check.sh --size 1024          # options after these go to scripts/gpu_check.py
#
# A machine without network: on one with network and the same Python, fetch the wheels first,
#   python -m pip download diffusers accelerate typer av tqdm safetensors -d wheels/
# and carry wheels/ along (or set LATENT_SCALE_WHEELS=DIR). The installed torch is never replaced:
# its version is pinned while installing. latent-scale itself runs from this checkout's src/.
# Exit codes: 0 measured, 2 no GPU (or no torch), anything else: an install or measurement failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${LATENT_SCALE_WHEELS:-}
if [[ "${1:-}" == "--wheels" ]]; then
  WHEELS=${2:?--wheels needs a folder}
  shift 2
fi

if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_check: torch is not installed for $PY; install a CUDA build of torch first" >&2
  exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); run it on a machine" \
       "with an NVIDIA GPU and a CUDA build of torch" >&2
  exit 2
fi

missing=$("$PY" - <<'EOF'
import importlib.util
need = {"diffusers": "diffusers", "accelerate": "accelerate", "safetensors": "safetensors", "tqdm": "tqdm",
        "typer": "typer", "av": "av", "torchvision": "torchvision", "PIL": "pillow", "numpy": "numpy"}
print(" ".join(pkg for module, pkg in need.items() if importlib.util.find_spec(module) is None))
EOF
)
if [[ -n "$missing" ]]; then
  pin=$(mktemp)
  trap 'rm -f "$pin"' EXIT
  "$PY" -c 'import torch; print("torch==" + torch.__version__)' > "$pin"
  echo "gpu_check: installing $missing (torch stays at $(cat "$pin"))" >&2
  if [[ -n "$WHEELS" ]]; then
    # shellcheck disable=SC2086  # one word per package
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" --constraint "$pin" $missing
  else
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet --constraint "$pin" $missing
  fi
fi

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" scripts/gpu_check.py "$@"
