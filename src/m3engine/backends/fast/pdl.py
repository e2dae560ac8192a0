"""Programmatic dependent launch (PDL, compute capability >= 9.0): a kernel starts as the one before drains.

One text of 128 tokens is ~170 small kernels in a row (7 per layer); in a graph replay each one is
scheduled only after the one before has finished and flushed its writes, a few microseconds per
boundary with SMs idle. A kernel launched with PDL may be scheduled once every program of the kernel
before it has called `gdc_launch_dependents` (or exited); it then blocks in `gdc_wait` until that
kernel has completed and its memory is visible. What it does before the wait overlaps the previous
kernel's tail: its launch, its programs' start, and in the matrix products (small_gemm.py) an L2
prefetch of the program's weight slice, which no kernel of the forward writes.

The rule every Triton kernel of the encoder keeps, so that PDL is safe whatever runs before it:
it takes `USE_PDL: tl.constexpr` and, when set, calls `tl.extra.cuda.gdc_wait()` before it loads
an activation or stores anything, then `gdc_launch_dependents()`. `options()` returns the constexpr
and the launch flag together, so the flag is never set without the wait compiled in. Kernels that
are not ours (cuBLAS) are launched as usual and keep the full ordering on both sides.

Whether launches use it is a context (`enabled(True)` around a forward, and around a CUDA graph's
capture, which records the programmatic edges), so two backends in one process do not share a switch.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("m3engine_pdl", default=False)


def supported(device: torch.device) -> bool:
    """PDL needs a CUDA device of compute capability 9.0 or newer (Hopper, Blackwell)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


@contextlib.contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Launch the encoder's Triton kernels with PDL (`on`) or as usual, inside this block."""
    token = _ON.set(on)
    try:
        yield
    finally:
        _ON.reset(token)


def options() -> dict[str, bool]:
    """Keyword arguments for a Triton launch: the kernel's USE_PDL and, with it, the launch flag."""
    if _ON.get():
        return {"USE_PDL": True, "launch_pdl": True}
    return {"USE_PDL": False}
