"""Outputs on their way to the host: a launched batch that is collected later.

A backend that can launch a batch without waiting for it (the fast backend's optional `launch`)
returns a `Pending`: its device work and its device -> host copies are queued, and `result()` waits
for the copies and builds the BatchOutputs on the host. The engine launches batch i + 1 before it
collects batch i, so the host's share of a batch (staging the next one, building sparse vectors and
ColBERT splits) runs while the device computes.

On CUDA the copies run on a side stream: they wait for an event recorded after the heads on the
compute stream, so the next batch's kernels (queued on the compute stream) run while the copies
travel over the link. Each source tensor is recorded on the side stream, so the caching allocator
does not hand its memory to the next batch before the copy has read it. A source must never be a
view of a CUDA graph's static buffers: the next replay would overwrite it mid-copy. The copies land
in a reused pinned buffer (host_ring.py), not a fresh one per launch: pinning costs more than the
device's batch at ColBERT's sizes.

Copying out of the ring writes fresh memory, and a 16 k-token batch's ColBERT rows (32 MB) fault in
their pages as the copy first touches them: ~0.9 us per token on the H200 hosts, most of the copy's
10-15 ms, which for the last batch of a call comes after the device's last work. So `wait()` takes
its destination arrays and touches each of their pages *before* it waits for the device
(`PREFAULT`), while the collecting thread would otherwise sit idle, and then copies into memory that
is already mapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from m3engine import host_ring
from m3engine.host_ring import HostRing
from m3engine.types import BatchOutputs

Host = dict[str, np.ndarray]  # the copied tensors by name, as numpy arrays on the host

PREFAULT = True  # fault in the copy-out's destination before waiting for the device (probes switch it)
PAGE = 4096  # bytes: touching one byte per page maps it (a huge page maps with its first touch)


class Pending(Protocol):
    def done(self) -> bool:
        """Whether `result()` would return without waiting on the device."""
        ...

    def result(self) -> BatchOutputs: ...


class Ready:
    """A batch already computed (a backend without `launch`, or a forward run synchronously)."""

    def __init__(self, outputs: BatchOutputs) -> None:
        self._outputs = outputs

    def done(self) -> bool:
        return True

    def result(self) -> BatchOutputs:
        return self._outputs


class HostCopy:
    """Start copying `tensors` to the host now; `wait()` returns them once they have arrived.

    With a `ring` (host_ring.py) the copies land in one reused pinned slot and `wait()` copies them
    out into memory the caller owns, then frees the slot; without one, or when every slot is taken,
    each tensor gets a fresh pinned buffer, handed to the caller as it is. CPU tensors need no copy
    unless a ring is given (the CPU tests of the ring).
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        stream: torch.cuda.Stream | None = None,
        ring: HostRing | None = None,
    ) -> None:
        self._event: torch.cuda.Event | None = None
        self._ring = ring
        self._slot: host_ring.Slot | None = None
        self._out: Host | None = None
        cuda = [t for t in tensors.values() if t.device.type == "cuda"]
        if not cuda and ring is None:
            self._host = tensors
            return
        offsets, nbytes = host_ring.layout(tensors)
        self._slot = ring.acquire(nbytes, self) if ring is not None else None
        slot = self._slot
        self._host = {
            name: host_ring.view(slot, offsets[name], t)
            if slot is not None
            else torch.empty(t.shape, dtype=t.dtype, pin_memory=bool(cuda))
            for name, t in tensors.items()
        }
        if not cuda:
            for name, tensor in tensors.items():
                self._host[name].copy_(tensor)
            return
        device = cuda[0].device
        copy_stream = stream if stream is not None else torch.cuda.current_stream(device)
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        ready.record(torch.cuda.current_stream(device))  # after every kernel that wrote `tensors`
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_event(ready)
            for name, tensor in tensors.items():
                self._host[name].copy_(tensor, non_blocking=True)
                if tensor.device.type == "cuda":
                    tensor.record_stream(copy_stream)
            self._event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            self._event.record(copy_stream)
        if slot is not None:
            slot.copied = self._event

    def done(self) -> bool:
        return self._event is None or bool(self._event.query())  # type: ignore[no-untyped-call]

    def wait(self) -> Host:
        if self._out is not None:
            return self._out
        fresh = {}
        if self._slot is not None:  # the copy-out's destinations, mapped while the device works
            fresh = {name: destination(tensor, PREFAULT) for name, tensor in self._host.items()}
        if self._event is not None:
            self._event.synchronize()
        if self._slot is None:
            self._out = {name: tensor.numpy() for name, tensor in self._host.items()}
        else:
            self._out = {name: copy_out(tensor, fresh[name]) for name, tensor in self._host.items()}
            assert self._ring is not None
            self._ring.release(self._slot)  # its contents are out: the next launch may overwrite it
            self._slot = None
        self._host = {}
        return self._out


def destination(tensor: torch.Tensor, prefault: bool) -> np.ndarray:
    """An uninitialised pageable array shaped as the host tensor, with its pages mapped if `prefault`.

    One byte per page is written (numpy releases the GIL for the loop, so the launching thread runs
    meanwhile); the copy then overwrites it.
    """
    out = np.empty(tuple(tensor.shape), dtype=tensor.numpy().dtype)
    if prefault and out.nbytes > PAGE:
        out.reshape(-1).view(np.uint8)[::PAGE] = 0
    return out


def copy_out(tensor: torch.Tensor, out: np.ndarray) -> np.ndarray:
    """The host tensor copied into `out` (fresh pageable memory, which the caller then owns).

    numpy's copy (one thread). torch's (empty + copy_, threaded) was faster alone on an H200 host
    (66 MB: 3.2 against 15.9 ms, docs/bench/round7/call2-host-copy.log), but not in the pipeline:
    tools/host_copy_probe.py's same-process A/B gave passages all three 652 k (numpy) against
    548 k (torch) in call 7, and 755 k against 762 k in call 8, with collection on its own thread.
    """
    np.copyto(out, tensor.numpy())
    return out


class PendingOutputs:
    """A HostCopy and how to build the batch's outputs from the copied arrays."""

    def __init__(self, copy: HostCopy, build: Callable[[Host], BatchOutputs]) -> None:
        self._copy, self._build = copy, build

    def done(self) -> bool:
        return self._copy.done()

    def result(self) -> BatchOutputs:
        return self._build(self._copy.wait())
