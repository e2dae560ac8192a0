"""Several devices behind one queue: which are healthy, and the bulk path's dispatcher.

`--devices 0,1` (EngineSettings.devices) loads one backend per device. The server runs a worker per
device, all pulling batches from the one batch former (scheduler.py), so a device takes a batch as
soon as it has room: the device with the fewest queued tokens gets the next one. The in-process bulk
path (Engine.embed and the others) sends each batch to the healthy device with the fewest queued
tokens through `DevicePool.launch`, which the pipeline calls in place of one backend's `launch`.

Failover is the same in both: a batch that fails with a device error (`is_device_error`) takes its
device out, and the batch is retried once on another healthy device; any other error stays the
batch's own (it would fail on every device alike). With no healthy device left, the error stands.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from m3engine.backends.base import Backend, Pending
from m3engine.errors import DeviceError
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch

log = logging.getLogger("m3engine.devices")

# What torch and the CUDA driver say when the device, not the batch, is at fault. An out-of-memory
# error is not one: the worker splits that batch instead (worker.is_oom).
_DEVICE_MARKERS = (
    "cuda error",
    "cudaerror",
    "device-side assert",
    "illegal memory access",
    "uncorrectable ecc",
    "device not ready",
    "unspecified launch failure",
    "no cuda gpus are available",
    "nccl error",
)


def is_device_error(error: BaseException) -> bool:
    """Whether `error` says the device failed (DeviceError, or a CUDA runtime error's message)."""
    if isinstance(error, DeviceError):
        return True
    text = str(error).lower()
    return "out of memory" not in text and any(marker in text for marker in _DEVICE_MARKERS)


def device_labels(backends: Sequence[Backend]) -> list[str]:
    """One distinct label per device: its name, with `#i` where two engines share one (cpu,cpu)."""
    names = [b.info.device for b in backends]
    return [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]


@dataclass
class DeviceHealth:
    """Which devices still take batches, shared by the server's workers, the bulk path and /info."""

    labels: list[str]
    healthy: list[bool]
    reasons: list[str | None]

    @classmethod
    def of(cls, backends: Sequence[Backend]) -> DeviceHealth:
        return cls(device_labels(backends), [True] * len(backends), [None] * len(backends))

    def take_out(self, index: int, error: BaseException) -> None:
        if self.healthy[index]:
            self.healthy[index] = False
            self.reasons[index] = f"{type(error).__name__}: {str(error)[:200]}"
            log.error("device taken out", extra={"device": self.labels[index], "error": self.reasons[index]})

    def bring_back(self, index: int) -> None:
        """A forward pass succeeded on a device taken out (scheduling/fallback.py's probe)."""
        if not self.healthy[index]:
            self.healthy[index], self.reasons[index] = True, None
            log.warning("device back", extra={"device": self.labels[index]})

    @property
    def any_healthy(self) -> bool:
        return any(self.healthy)

    def describe(self) -> list[dict[str, object]]:
        return [
            {"device": label, "healthy": ok, "reason": reason}
            for label, ok, reason in zip(self.labels, self.healthy, self.reasons, strict=True)
        ]


class _Dispatched:
    """A batch launched on one device's thread (pipeline.Launch's Pending); collecting it recovers
    from a device error raised by the launch or by the collection (CUDA reports most at a sync)."""

    def __init__(self, pool: DevicePool, index: int, batch: PackedBatch, heads: HeadRequest) -> None:
        self._pool, self._index, self._batch, self._heads = pool, index, batch, heads
        launch = pool.backends[index].launch
        self._launched: Future[Pending] = pool.threads[index].submit(launch, batch, heads)

    def done(self) -> bool:
        if not self._launched.done():
            return False
        return self._launched.exception() is not None or self._launched.result().done()

    def result(self) -> BatchOutputs:
        try:
            return self._launched.result().result()
        except Exception as error:
            return self._pool.recover(self._index, self._batch, self._heads, error)
        finally:
            self._pool.finished(self._index, self._batch.num_tokens)


class DevicePool:
    """The bulk path's `launch` over several backends: the least-loaded healthy device takes a batch.

    Each device has one thread that launches its batches (a backend is launched from one thread at
    a time), so devices work in parallel whether their backend queues work (CUDA: the launch returns
    at once and the pipeline's collecting thread waits) or computes as it is launched (the CPU).
    """

    def __init__(self, backends: Sequence[Backend], health: DeviceHealth) -> None:
        self.backends, self.health = list(backends), health
        self.threads = [ThreadPoolExecutor(1, thread_name_prefix=f"m3engine-{d}") for d in health.labels]
        self._queued = [0] * len(self.backends)  # tokens sent to each device and not yet collected
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        """Batches the pipeline should keep in flight: one running and one waiting per device."""
        return 2 * len(self.backends) - 1

    def launch(self, batch: PackedBatch, heads: HeadRequest) -> _Dispatched:
        index = self._pick(exclude=None)
        with self._lock:
            self._queued[index] += batch.num_tokens
        return _Dispatched(self, index, batch, heads)

    def finished(self, index: int, tokens: int) -> None:
        with self._lock:
            self._queued[index] -= tokens

    def recover(self, index: int, batch: PackedBatch, heads: HeadRequest, error: Exception) -> BatchOutputs:
        """A batch failed on device `index`: a device error takes the device out and runs the batch
        once on another healthy device; any other error is the batch's own and is raised."""
        if not is_device_error(error):
            raise error
        self.health.take_out(index, error)
        other = self._pick(exclude=index)  # raises DeviceError when none is left
        backend = self.backends[other]
        return self.threads[other].submit(backend.forward, batch, heads).result()

    def _pick(self, exclude: int | None) -> int:
        with self._lock:
            healthy = [i for i, ok in enumerate(self.health.healthy) if ok and i != exclude]
            if not healthy:
                reasons = "; ".join(f"{d['device']}: {d['reason']}" for d in self.health.describe())
                raise DeviceError(f"no healthy device is left ({reasons}); restart with working devices")
            return min(healthy, key=self._queued.__getitem__)

    def close(self) -> None:
        for thread in self.threads:
            thread.shutdown(wait=True)
