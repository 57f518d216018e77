"""Tensor files as their libraries read them: .npy/.npz (numpy's header reader), .safetensors (the
library's header rules), .pt/.pth (torch.load with weights_only=True; plain tensors read in place).

Each format lists a file's tensors from its header alone and reads one tensor, or one row of a
batch, never at an offset or length its library would refuse. A unit's bytes are a `window.Span`
(a whole file, or a member of a tar shard), re-checked against the file as listed when it is opened.
Importing this package is cheap; the readers (numpy, torch) load on the first `formats()` call.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Format

SUFFIXES = frozenset({".npy", ".npz", ".safetensors", ".pt", ".pth"})


@functools.cache
def formats() -> dict[str, Format]:
    """The reader of each suffix in SUFFIXES."""
    from .numpy_files import NPY, NPZ
    from .safetensors_files import SAFETENSORS
    from .torch_files import PT

    return {".npy": NPY, ".npz": NPZ, ".safetensors": SAFETENSORS, ".pt": PT, ".pth": PT}
