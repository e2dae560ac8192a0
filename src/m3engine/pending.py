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
view of a CUDA graph's static buffers: the next replay would overwrite it mid-copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from m3engine.types import BatchOutputs

Host = dict[str, np.ndarray]  # the copied tensors by name, as numpy arrays on the host


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
    """Start copying `tensors` to the host now; `wait()` returns them once they have arrived."""

    def __init__(self, tensors: dict[str, torch.Tensor], stream: torch.cuda.Stream | None = None) -> None:
        self._event: torch.cuda.Event | None = None
        cuda = [t for t in tensors.values() if t.device.type == "cuda"]
        if not cuda:
            self._host = tensors
            return
        device = cuda[0].device
        copy_stream = stream if stream is not None else torch.cuda.current_stream(device)
        ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
        ready.record(torch.cuda.current_stream(device))  # after every kernel that wrote `tensors`
        self._host = {}
        with torch.cuda.stream(copy_stream):
            copy_stream.wait_event(ready)
            for name, tensor in tensors.items():
                host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                host.copy_(tensor, non_blocking=True)
                tensor.record_stream(copy_stream)
                self._host[name] = host
            self._event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            self._event.record(copy_stream)

    def done(self) -> bool:
        return self._event is None or bool(self._event.query())  # type: ignore[no-untyped-call]

    def wait(self) -> Host:
        if self._event is not None:
            self._event.synchronize()
        return {name: tensor.numpy() for name, tensor in self._host.items()}


class PendingOutputs:
    """A HostCopy and how to build the batch's outputs from the copied arrays."""

    def __init__(self, copy: HostCopy, build: Callable[[Host], BatchOutputs]) -> None:
        self._copy, self._build = copy, build

    def done(self) -> bool:
        return self._copy.done()

    def result(self) -> BatchOutputs:
        return self._build(self._copy.wait())
