"""The fallback of `--fallback cpu`: when its standby worker takes batches, and devices coming back.

The fallback backend (Engine.fallback) has a worker of its own that pulls from the model's one batch
former, as the workers of the primary devices do, but it takes a batch only while
- no primary device is healthy (each was taken out after a device error, or its worker died), or
- the oldest queued sequence has waited past --fallback-after-s (the primary is stuck or overloaded),
and it forms its batches under its own budget (--fallback-batch-tokens): a CPU pass of the GPU's
budget would hold its requests for seconds. While it serves, the model is degraded: /ready stays 200
and says why, /info says who serves. A batch that fails on the last primary device with a device
error goes back to the queue once, and the fallback runs it (scheduler.py's failover).

A device taken out after a device error is probed every --device-probe-s with a one-text forward
pass on its own launch thread; once one succeeds its worker starts again, and the fallback stops
taking new batches (those it holds finish).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from m3engine.scheduling.devices import DeviceHealth
from m3engine.scheduling.former import BatchFormer
from m3engine.scheduling.submitter import PRIMARY, Serving
from m3engine.scheduling.worker import Worker
from m3engine.types import Encoded, HeadRequest, PackedBatch

log = logging.getLogger("m3engine.fallback")


class Standby:
    """The rule of the fallback's worker (its `hold`), and what /ready and /info say of it."""

    def __init__(
        self, primaries: Sequence[Worker], former: BatchFormer, health: DeviceHealth, after_s: float
    ) -> None:
        self.primaries, self.former, self.health, self.after_s = primaries, former, health, after_s

    @property
    def primary_alive(self) -> bool:
        return any(w.alive for w in self.primaries)

    def hold(self) -> float:
        """Seconds until the fallback may take a batch: 0 now; else it looks again then (or woken)."""
        if not self.primary_alive:
            return 0.0
        return max(0.0, self.after_s - self.former.waited(time.monotonic()))

    def serving(self) -> Serving:
        if not self.primary_alive:
            out = [f"{d['device']}: {d['reason']}" for d in self.health.describe() if not d["healthy"]]
            return Serving("fallback", f"no primary device is healthy ({'; '.join(out) or 'stopped'})")
        waited = self.former.waited(time.monotonic())
        if waited >= self.after_s:
            return Serving(
                "primary+fallback",
                f"the oldest queued text waited {waited:.1f} s, past --fallback-after-s {self.after_s:g}",
            )
        return PRIMARY


async def probe_until_back(worker: Worker, heads: HeadRequest, every_s: float) -> None:
    """Returns once a one-text forward pass succeeds on the worker's backend; tries every `every_s`."""
    batch = PackedBatch.from_encoded([Encoded(ids=[0, 5, 2])])  # any in-vocabulary ids
    while True:
        await asyncio.sleep(every_s)
        try:
            await worker.probe(batch, heads)
            return
        except Exception as error:  # the device still fails: look again later
            log.info("device still failing", extra={"device": worker.device, "error": type(error).__name__})
