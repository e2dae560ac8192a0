"""Python's cyclic garbage collector off for the length of a bulk call.

Measured on an H200 host: a bulk `Engine.embed` of 2,000 passages spent ~18 ms of its ~720 ms in
the collector's generation 0 and 1 passes. The tokenizer threads, the eager launches and the
records keep tens of thousands of container objects alive at once, so a collection starts every
few hundred allocations and walks them, with every Python thread of the process stopped (the one
launching the batches too, so the device waits).

What a bulk call allocates is freed by reference counting when its owner drops it; the collector is
only needed for reference cycles, and a cycle made during the call is still found by the first
collection after it. So the collector is switched off while any bulk call runs (counted: calls on
several threads nest) and back on when the last one ends, if it was on before the first began.
So calls that keep overlapping (several threads embedding corpora without a gap) keep it off until
they stop, and a `gc.disable()` made by other code while a call runs is undone when the last call
ends. Only the pipelined bulk path pauses it (`Engine._bulk`); single texts and small work do not.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # bulk calls running now
_was_enabled = False  # the collector's state when the first of them began


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collection inside the block (process-wide; nested and concurrent blocks counted)."""
    global _depth, _was_enabled
    entered = False
    try:
        with _lock:  # counted and marked together: an interrupt cannot leave the count raised
            if _depth == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _depth += 1
            entered = True
        yield
    finally:
        if entered:
            with _lock:
                _depth -= 1
                if _depth == 0 and _was_enabled:
                    gc.enable()
