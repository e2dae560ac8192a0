"""A workaround for Triton 3.6's interpreter under NumPy >= 2.3, for the CPU checks of kernels whose
loop bounds are loaded from memory (varlen_attention.py: each sequence's start and end).

The interpreter holds every scalar as a NumPy array of shape (1,) and turns one into a Python int
(a `range` bound) with `int(array)`, which NumPy 2.3 made an error for arrays of ndim > 0. This
swaps in `.item()`, within the interpreter's own patch scope, so it is undone after each launch.
Call `allow_loaded_loop_bounds()` once, in a process that runs with TRITON_INTERPRET=1.
"""

from __future__ import annotations

from typing import Any


def allow_loaded_loop_bounds() -> None:
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_m3engine_fixed", False):
        return

    def patched(tensor: Any, scope: Any) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    patched._m3engine_fixed = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched
