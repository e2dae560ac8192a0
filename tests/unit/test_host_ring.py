"""The reused host buffers of device -> host copies (host_ring.py), exercised on the CPU.

On the CPU a copy into a slot is synchronous, so a slot handed out again too early shows up as an
earlier result's contents overwritten by a later launch.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from m3engine.backends.host_ring import ALIGN, HostRing, layout
from m3engine.backends.transfer import HostCopy
from m3engine.models.heads import M3Heads
from m3engine.types import HeadRequest
from tests.heads import run_heads


def _outputs(k: int, rows: int = 300) -> dict[str, torch.Tensor]:
    """Outputs of mixed dtypes and sizes whose every value says which launch made them."""
    return {
        "dense": torch.full((3, 8), float(k)),
        "colbert": torch.full((rows, 16), float(k), dtype=torch.float16),
        "ids": torch.arange(5, dtype=torch.int64) + 100 * k,
    }


def _check(host: dict[str, np.ndarray], k: int, rows: int = 300) -> None:
    assert host["dense"].dtype == np.float32 and (host["dense"] == k).all()
    assert host["colbert"].dtype == np.float16 and host["colbert"].shape == (rows, 16)
    assert (host["colbert"] == k).all()
    assert host["ids"].tolist() == [100 * k + i for i in range(5)]


def test_copies_in_flight_are_collected_in_order_with_their_own_contents() -> None:
    """The engine's pipeline: launch i + 1 (and i + 2) before collecting i."""
    ring = HostRing(slots=2, pin=False)
    in_flight = [HostCopy(_outputs(k), ring=ring) for k in range(3)]  # a third while two hold slots
    assert sum(not s.free() for s in ring.slots) == 2  # the third fell back to its own memory
    for k, copy in enumerate(in_flight):
        _check(copy.wait(), k)


def test_a_collected_result_survives_the_reuse_of_its_slot() -> None:
    ring = HostRing(slots=1, pin=False)
    first = HostCopy(_outputs(1), ring=ring).wait()
    later = [HostCopy(_outputs(k), ring=ring) for k in (2, 3)]  # 2 reuses the slot, 3 falls back
    assert ring.grown == 1  # one slot, allocated once
    _check(first, 1)  # copied out: not a view of the slot that launch 2 overwrote
    for k, copy in zip((2, 3), later, strict=True):
        _check(copy.wait(), k)
    assert all(s.free() for s in ring.slots)


def test_a_slot_is_not_reused_while_its_owner_holds_it() -> None:
    ring = HostRing(slots=2, pin=False)
    held = HostCopy(_outputs(1), ring=ring)
    for k in range(2, 6):  # launched and collected one at a time: always the other slot
        _check(HostCopy(_outputs(k), ring=ring).wait(), k)
    _check(held.wait(), 1)
    assert ring.grown == 2


class _Owner:
    """Anything that can be weakly referenced (a HostCopy in the backends)."""


class _Copy:
    """A CUDA event's `query` for a copy that is still running (done=False) or finished."""

    def __init__(self) -> None:
        self.done = False

    def query(self) -> bool:
        return self.done


def test_a_dropped_owner_frees_its_slot_only_once_its_copy_has_finished() -> None:
    ring = HostRing(slots=1, pin=False)
    owner = _Owner()
    slot = ring.acquire(1000, owner)
    assert slot is not None
    copy = _Copy()
    slot.copied = copy
    assert ring.acquire(10, _Owner()) is None  # held
    del owner
    gc.collect()
    assert ring.acquire(10, _Owner()) is None  # dropped, but the device may still be writing it
    copy.done = True
    assert ring.acquire(10, _Owner()) is slot


def test_slots_grow_with_headroom_and_the_smallest_that_fits_is_taken() -> None:
    ring = HostRing(slots=2, pin=False)
    a, b = _Owner(), _Owner()
    big = ring.acquire(5_000_000, a)
    small = ring.acquire(1000, b)
    assert big is not None and small is not None and big is not small
    assert big.buffer.numel() >= 5_000_000 * 5 // 4
    ring.release(big)
    ring.release(small)
    assert ring.acquire(1000, a) is small  # the big slot stays for a big batch
    assert ring.acquire(5_000_000, b) is big
    assert ring.grown == 2


def test_even_out_grows_every_free_slot_to_the_largest() -> None:
    """The warm-up's batches ran one at a time and sized one slot; a bulk call keeps two in flight."""
    ring = HostRing(slots=3, pin=False)
    first, held = _Owner(), _Owner()
    big, small = ring.acquire(5_000_000, first), ring.acquire(1000, held)
    assert big is not None and small is not None and ring.grown == 2
    ring.release(big)
    largest = big.buffer.numel()
    ring.even_out()
    assert ring.grown == 3  # the free empty slot, not the held one
    assert sorted(s.buffer.numel() for s in ring.slots) == sorted([small.buffer.numel(), largest, largest])
    ring.release(small)
    a, b = _Owner(), _Owner()
    in_flight = [ring.acquire(5_000_000, a), ring.acquire(5_000_000, b)]
    assert all(slot is not None for slot in in_flight) and ring.grown == 3  # no pinning for either


def test_layout_aligns_every_output() -> None:
    offsets, nbytes = layout({"a": torch.zeros(3, dtype=torch.float16), "b": torch.zeros(5, 7)})
    assert offsets == {"a": 0, "b": ALIGN} and nbytes == ALIGN + ALIGN  # 140 bytes round up to 256


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_heads_through_a_ring_equal_heads_without(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    heads = M3Heads(hidden_size=16, colbert_dim=8)
    ring = HostRing(slots=2, pin=False)
    request = HeadRequest(dense=True, sparse=True, colbert=True)
    batches = [torch.randn(7, 16).to(dtype) for _ in range(3)]
    args = (np.array([0, 7, 9, 2, 0, 5, 2]), torch.tensor([0, 4, 7]), (4, 3), request, "cls", heads)
    with torch.inference_mode():
        plain = [run_heads(h, *args, np.array([0, 1, 2, 3]), 16).result() for h in batches]
        pending = [run_heads(h, *args, np.array([0, 1, 2, 3]), 16, ring=ring) for h in batches]
        ringed = [p.result() for p in pending]
    for want, got in zip(plain, ringed, strict=True):
        assert want.dense is not None and got.dense is not None
        np.testing.assert_array_equal(want.dense, got.dense)
        assert want.colbert is not None and got.colbert is not None
        for w, g in zip(want.colbert, got.colbert, strict=True):
            assert w.dtype == g.dtype
            np.testing.assert_array_equal(w, g)
        assert want.sparse is not None and got.sparse is not None
        assert [v.to_dict() for v in want.sparse] == [v.to_dict() for v in got.sparse]
