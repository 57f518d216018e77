"""Buffers reused from one statistics update to the next."""

from __future__ import annotations

import math

import torch


class Workspace:
    """Named buffers that one update after another reuses. On CPU a fresh batch-sized temporary is
    typically handed back to the OS when freed and page-faulted in again by the next update, which
    cost more than the arithmetic done in it (scripts/bench.py, statistics rows)."""

    def __init__(self) -> None:
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A contiguous (uninitialised) tensor; the buffer only grows, so smaller batches reuse it."""
        n = math.prod(shape)
        buf = self._flat.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = self._flat[name] = torch.empty(n, dtype=dtype, device=device)
        return buf[:n].view(shape)

    def rows(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> (B·C, values): one row per unit and channel, whatever the trailing shape; a
        view of a contiguous z (the common case), else a contiguous copy into a buffer."""
        shape = (z.shape[0] * z.shape[1], z[0, 0].numel())
        try:
            return z.view(shape)
        except RuntimeError:
            return self.get("rows", tuple(z.shape), z.dtype, z.device).copy_(z).view(shape)
