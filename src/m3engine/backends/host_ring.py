"""A few reused pinned host buffers that device -> host copies land in, instead of a fresh pin each.

Pinning is paid per byte: a fresh 66 MB pinned buffer (one 16k-token batch's ColBERT rows in fp32)
took 26.6 ms to allocate on an H200 host, longer than the device's batch. The caching host
allocator cannot help: the caller keeps the previous results (numpy views of the pinned memory)
alive. So each launch copies all its outputs into one slot of this ring, and `HostCopy.wait`
copies them out into ordinary (pageable) memory, which the caller then owns; the slot goes back to
the ring.

A slot is reused only when
- its owner copied its contents out and released it (which it does after waiting for the copy), or
- its owner was dropped without collecting, and the copy that wrote the slot has finished.
The engine launches batch i + 1 before collecting batch i, so two slots are in flight; when all
slots are taken `acquire` returns None and the caller falls back to a fresh allocation (correct,
only slower). Pinning needs CUDA: without it the slots are ordinary memory, which is how the CPU
tests exercise the ring.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

import torch

ALIGN = 256  # bytes: each output starts on a boundary that suits any dtype and the DMA engine
GRAIN = 2 << 20  # slots grow in steps of 2 MB, with a quarter of headroom (batches vary in size)
SLOTS = 4  # two in flight in the engine's pipeline, two to spare


class Done(Protocol):
    """What a slot needs of a CUDA event: whether the work recorded before it has finished."""

    def query(self) -> bool: ...


class Slot:
    """One reusable buffer (uint8) and what holds it: an owner and the copy that writes it."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.buffer = torch.empty(0, dtype=torch.uint8)
        self.owner: weakref.ref[object] | None = None
        self.copied: Done | None = None  # recorded after the copy into the slot was queued

    def free(self) -> bool:
        if self.owner is None:
            return True
        if self.owner() is not None:
            return False
        return self.copied is None or bool(self.copied.query())  # dropped: once its copy is done

    def fit(self, nbytes: int) -> None:
        if self.buffer.numel() < nbytes:
            self.resize(-(-(nbytes + nbytes // 4) // GRAIN) * GRAIN)

    def resize(self, size: int) -> None:
        self.buffer = torch.empty(0, dtype=torch.uint8)  # the old one goes before the new is pinned
        self.buffer = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin)


class HostRing:
    """`acquire(nbytes, owner)` a slot of at least nbytes (or None: all taken); `release` it after use."""

    def __init__(self, slots: int = SLOTS, pin: bool | None = None) -> None:
        self.pin = torch.cuda.is_available() if pin is None else pin
        self.slots = [Slot(self.pin) for _ in range(slots)]
        self._lock = threading.Lock()  # launches and collections may run on different threads
        self.grown = 0  # slots (re)allocated: how often the ring paid for pinning

    def acquire(self, nbytes: int, owner: object) -> Slot | None:
        with self._lock:
            free = [s for s in self.slots if s.free()]
            if not free:
                return None
            # the smallest slot that fits; else grow the largest (the one nearest to fitting)
            fits = [s for s in free if s.buffer.numel() >= nbytes]
            slot = (
                min(fits, key=lambda s: s.buffer.numel())
                if fits
                else max(free, key=lambda s: s.buffer.numel())
            )
            if not fits:
                slot.fit(nbytes)
                self.grown += 1
            slot.owner, slot.copied = weakref.ref(owner), None
            return slot

    def even_out(self) -> None:
        """Grow every free slot to the largest slot's size: the warm-up's batches ran one at a time,
        so they sized one slot, while a bulk call keeps several in flight; pinning them now keeps
        that cost out of the first bulk call (a 66 MB slot took 26.6 ms to pin: see above)."""
        with self._lock:
            largest = max(s.buffer.numel() for s in self.slots)
            for slot in self.slots:
                if slot.owner is None and slot.buffer.numel() < largest:
                    slot.resize(largest)
                    self.grown += 1

    def release(self, slot: Slot) -> None:
        with self._lock:
            slot.owner, slot.copied = None, None


def layout(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, int], int]:
    """The byte offset of each tensor in a slot (each aligned to ALIGN) and the bytes they need."""
    offsets, end = {}, 0
    for name, tensor in tensors.items():
        offsets[name] = end
        end += -(-tensor.numel() * tensor.element_size() // ALIGN) * ALIGN
    return offsets, end


def view(slot: Slot, offset: int, like: torch.Tensor) -> torch.Tensor:
    """The part of `slot` at `offset` as a contiguous tensor of `like`'s shape and dtype."""
    nbytes = like.numel() * like.element_size()
    return slot.buffer[offset : offset + nbytes].view(like.dtype).view(like.shape)
