"""Reused pinned buffers on CUDA: copies in flight on a side stream land whole, slots are not re-pinned.

Run on the device machine: `pytest -m gpu tests/gpu`. Skipped where torch sees no CUDA device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3engine import Engine
from m3engine.backends.fast import FastBackend
from m3engine.backends.host_ring import HostRing
from m3engine.backends.transfer import HostCopy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_pipelined_copies_through_pinned_slots_keep_their_contents() -> None:
    """Launch i + 2 before collecting i, each copy queued behind a slow product on the device."""
    ring = HostRing(slots=3)
    assert ring.pin
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    slow = torch.randn(4096, 4096, device="cuda")
    in_flight: list[tuple[int, HostCopy]] = []
    results = []
    for k in range(12):
        _ = slow @ slow  # the copy below waits for this on the compute stream
        rows = torch.full((16384, 1024), float(k), device="cuda", dtype=torch.float16)
        in_flight.append((k, HostCopy({"colbert": rows, "dense": rows[:4].float()}, stream, ring)))
        if len(in_flight) > 2:
            k0, copy = in_flight.pop(0)
            results.append((k0, copy.wait()))
    results += [(k, copy.wait()) for k, copy in in_flight]
    assert [k for k, _ in results] == list(range(12))
    for k, host in results:
        assert host["colbert"].dtype == np.float16 and (host["colbert"] == k).all(), k
        assert host["dense"].dtype == np.float32 and (host["dense"] == k).all(), k
    assert ring.grown == 3  # each slot pinned once, then reused


def test_bulk_embed_pins_no_slot_after_the_warmup(bge_m3_dir: Path) -> None:
    engine = Engine.load(str(bge_m3_dir), backend="fast", device="cuda", dtype="bf16", max_batch_tokens=512)
    assert isinstance(engine.backend, FastBackend) and engine.backend.ring is not None
    texts = [f"text {i} " + "word " * (i % 50) for i in range(600)]
    ring = engine.backend.ring
    # the warm-up pinned every slot of both rings at the largest batch's size (even_out)
    assert ring.grown == len(ring.slots) and all(slot.buffer.numel() > 0 for slot in ring.slots)
    inputs = list(engine.backend._stager._hosts)
    first = engine.embed(texts, sparse=True, colbert=True)
    again = engine.embed(texts, sparse=True, colbert=True)
    # Every batch here fits a slot's first size (2 MB), so no slot is pinned after the warm-up
    assert ring.grown == len(ring.slots)
    assert all(a is b for a, b in zip(inputs, engine.backend._stager._hosts, strict=True))
    for a, b in zip(first, again, strict=True):
        assert a.colbert is not None and b.colbert is not None and a.colbert.dtype == np.float16
        np.testing.assert_array_equal(a.colbert, b.colbert)
