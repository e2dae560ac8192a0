"""The worker: runs formed batches on the backend and fans results out.

Batches run as in the in-process pipeline (scheduling/pipeline.py): batch i + 1 is launched before
batch i is collected. Launches run on one thread (backends are launched from one thread at a time),
collections (waiting for the device, building outputs on the host) on another, so the host's share
of one batch overlaps the device's work on the next.

Failure policy, per batch:
- an out-of-memory error splits the batch in two, once, and retries each half (a half that fails
  again fails only its own requests);
- any other exception fails the requests of that batch only; the loop carries on;
- an exception that escapes the loop itself (a bug, or a BaseException from the backend) ends it;
  the supervisor then marks the worker dead, fails everything queued with 503, and /ready turns 503.

With several devices (`--devices`), one worker per device pulls from the one former, and `failover`
(set by the scheduler) gets a batch whose device failed, or the batches of a worker that died: the
other workers take them over, and only what cannot be retried fails (see scheduler.py). The worker
of `--fallback` is a standby: `hold` keeps it from taking batches while the primary serves alone, and
it forms its batches under its own token budget (scheduling/fallback.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from m3engine.backends.base import Backend, Pending
from m3engine.errors import (
    BackendError,
    DeadlineExceededError,
    M3EngineError,
    NotReadyError,
    OutOfMemoryError,
)
from m3engine.metrics import Metrics
from m3engine.scheduling.former import BatchFormer, Item, Job
from m3engine.scheduling.forward_thread import ForwardThread
from m3engine.tasks import postprocess
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch

# (worker, items of its failed batch, the error) -> the items to fail here, or None: no other device
# can take them, the single-device policy applies.
Failover = Callable[["Worker", list[Item], BaseException], "list[Item] | None"]

log = logging.getLogger("m3engine.worker")


def is_oom(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, MemoryError, or our own OutOfMemoryError."""
    if isinstance(error, OutOfMemoryError | MemoryError):
        return True
    return type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower()


def select_rows(out: BatchOutputs, rows: list[int]) -> BatchOutputs:
    """The outputs of some sequences of a batch, in the order given."""
    # float32 as postprocess.gather makes them, for a job whose rows skip the reassembly
    return BatchOutputs(
        dense=None if out.dense is None else out.dense[rows].astype(np.float32, copy=False),
        sparse=None if out.sparse is None else [out.sparse[r] for r in rows],
        colbert=None if out.colbert is None else [out.colbert[r] for r in rows],
        logits=None if out.logits is None else out.logits[rows].astype(np.float32, copy=False),
    )


class Worker:
    def __init__(
        self,
        name: str,
        backend: Backend,
        former: BatchFormer,
        metrics: Metrics,
        device: str | None = None,
        *,
        standby: bool = False,
    ) -> None:
        self.name, self.backend, self.former, self.metrics = name, backend, former, metrics
        self.device = device or backend.info.device
        self._launcher = ForwardThread(f"launch-{name}-{self.device}")
        self._collector = ForwardThread(f"collect-{name}-{self.device}")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.alive = False
        self._in_flight: deque[asyncio.Task[None]] = deque()  # collections, oldest first
        self._running: dict[int, list[Item]] = {}  # batches launched and not yet fanned out
        self._fatal: BaseException | None = None  # a BaseException of a collection ends the loop
        self._last_done = 0.0  # when the previous batch was collected
        # Labelled children looked up once: .labels() costs a dict lookup and a lock per call.
        self._queue_depth = metrics.queue_depth.labels(model=name)
        self._tokens = metrics.tokens.labels(model=name)
        self._device_tokens = metrics.device_tokens.labels(model=name, device=self.device)
        self._depth_shown = -1
        # A standby (the fallback) counts what it serves, and takes batches only while `hold`
        # returns 0; else it looks again after the seconds returned, or when woken.
        self._served = (
            (metrics.fallback_batches.labels(model=name), metrics.fallback_sequences.labels(model=name))
            if standby
            else None
        )
        self.hold: Callable[[], float] | None = None
        self.batch_tokens: int | None = None  # a batch budget of its own; None: the former's
        self.on_tokens: Callable[[int, float], None] | None = None  # (tokens, seconds) per batch
        self.on_death: Callable[[], None] | None = None  # e.g. make the process exit, to be restarted
        self.failover: Failover | None = None

    def start(self) -> None:
        """Start the loop, or restart it once its device is back (a loop that has not ended yet, still
        waiting to be woken, simply carries on)."""
        self.alive = True
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._supervise(), name=f"worker-{self.name}")

    async def probe(self, batch: PackedBatch, heads: HeadRequest) -> None:
        """One forward pass on the launch thread, while the loop is stopped (scheduling/fallback.py)."""
        await self._launcher.run(self.backend.forward, batch, heads)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._launcher.shutdown()
        self._collector.shutdown()

    def wake(self) -> None:
        self._wake.set()

    async def _supervise(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            self.alive = False
            raise
        except BaseException as error:  # the loop must never end silently (infinity #483)
            self.alive = False
            log.error("worker loop died", extra={"model": self.name, "error": type(error).__name__})
            running = [item for batch in self._running.values() for item in batch]
            rest = None if self.failover is None else self.failover(self, running, error)
            if rest is None:
                self._fail_all(
                    NotReadyError(f"the worker of model {self.name} stopped; the server is not ready")
                )
            else:  # the other devices carry on with the queue and these batches
                self._running.clear()
                if rest:
                    self._fail(rest, BackendError(f"device {self.device} stopped"), 0)
            if self.on_death is not None:
                self.on_death()

    def _fail_all(self, error: M3EngineError) -> None:
        for batch in self._running.values():  # batches on the backend when the loop died
            for item in batch:
                if not item.job.done:
                    item.job.future.set_exception(error)
        for lane in (self.former.short, self.former.long):
            for item in lane:
                if not item.job.done:
                    item.job.future.set_exception(error)
            lane.clear()

    async def _loop(self) -> None:
        while self.alive:  # False once its device is taken out (scheduler.py's failover)
            if self._fatal is not None:
                raise self._fatal
            if self.hold is not None and (wait := self.hold()) > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            for job in self.former.expired(time.monotonic()):
                job.future.set_exception(DeadlineExceededError(_deadline_message()))
            batch = self.former.next_batch(self.batch_tokens, self.backend.info.padded)
            if self.former.pending != self._depth_shown:  # a gauge write is an mmap write here
                self._depth_shown = self.former.pending
                self._queue_depth.set(self._depth_shown)
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._launch(batch, may_split=True)
            while len(self._in_flight) > 1:  # collect batch i - 1 before forming batch i + 1
                await self._in_flight.popleft()

    async def _launch(self, batch: list[Item], may_split: bool) -> asyncio.Task[None] | None:
        """Launch `batch` and queue its collection (the task returned); a failed launch is handled here."""
        now = time.monotonic()
        for item in batch:
            if not item.job.started:
                item.job.started, item.job.started_at = True, now
        packed = PackedBatch.concat([(it.job.encoded, it.index) for it in batch])
        self._running[id(batch)] = batch
        try:
            pending = await self._launcher.run(self.backend.launch, packed, batch[0].job.heads)
        except Exception as error:
            self._running.pop(id(batch), None)
            await self._failed(batch, packed, error, may_split)
            return None
        task = asyncio.get_running_loop().create_task(self._collect(batch, packed, pending, now, may_split))
        self._in_flight.append(task)
        return task

    async def _collect(
        self, batch: list[Item], packed: PackedBatch, pending: Pending, started: float, may_split: bool
    ) -> None:
        try:
            out = await self._collector.run(pending.result)
        except Exception as error:
            self._running.pop(id(batch), None)
            await self._failed(batch, packed, error, may_split)
            return
        except BaseException as error:  # not a batch's failure: the loop ends (see the docstring)
            self._fatal = error
            self._wake.set()
            return
        self._running.pop(id(batch), None)
        done = time.monotonic()
        elapsed = done - max(started, self._last_done)  # the device's time on this batch alone
        self._last_done = done
        self.metrics.batch_size.observe(packed.num_seqs)
        self.metrics.batch_tokens.observe(packed.num_tokens)
        self._tokens.inc(packed.num_tokens)
        self._device_tokens.inc(packed.num_tokens)
        if self._served is not None:
            self._served[0].inc()
            self._served[1].inc(packed.num_seqs)
        if self.on_tokens is not None:
            self.on_tokens(packed.num_tokens, elapsed)
        self._fan_out(batch, out, elapsed)

    async def _failed(
        self, batch: list[Item], packed: PackedBatch, error: Exception, may_split: bool
    ) -> None:
        if may_split and len(batch) > 1 and is_oom(error):
            self.metrics.oom_splits.inc()
            log.warning("out of memory; splitting the batch", extra={"tokens": packed.num_tokens})
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):  # one after the other: each needs the memory
                task = await self._launch(part, may_split=False)
                if task is not None:
                    await task
            return
        if self.failover is not None and not is_oom(error):
            rest = self.failover(self, batch, error)
            if rest is not None:
                if rest:
                    self._fail(rest, error, packed.num_tokens)
                return
        self._fail(batch, error, packed.num_tokens)

    def _fail(self, batch: list[Item], error: Exception, tokens: int) -> None:
        wrapped = (
            error if isinstance(error, BackendError) else BackendError("inference failed for this batch")
        )
        if is_oom(error) and not isinstance(error, OutOfMemoryError):
            wrapped = OutOfMemoryError(
                "the device ran out of memory for this batch; send fewer or shorter inputs"
            )
        self.metrics.batch_failures.labels(error=wrapped.label).inc()
        log.error("batch failed", extra={"error": type(error).__name__, "tokens": tokens, "model": self.name})
        for item in batch:
            if not item.job.done:
                item.job.future.set_exception(wrapped)

    def _fan_out(self, batch: list[Item], out: BatchOutputs, elapsed: float) -> None:
        rows_by_job: dict[int, tuple[Job, list[int], list[int]]] = {}
        for row, item in enumerate(batch):
            entry = rows_by_job.get(id(item.job))
            if entry is None:
                rows_by_job[id(item.job)] = (item.job, [item.index], [row])
            else:
                entry[1].append(item.index)
                entry[2].append(row)
        for job, indices, rows in rows_by_job.values():
            if job.future.done():  # cancelled or failed meanwhile: its results are dropped
                continue
            job.forward_s += elapsed
            job.remaining -= len(indices)
            if job.remaining == 0 and not job.parts:  # all of it in this batch: no reassembly
                order = sorted(range(len(rows)), key=indices.__getitem__)
                job.future.set_result(select_rows(out, [rows[i] for i in order]))
                continue
            job.parts.append((indices, select_rows(out, rows)))
            if job.remaining == 0:
                job.future.set_result(postprocess.gather(job.parts, job.encoded.num_seqs))


def _deadline_message() -> str:
    return (
        "the request waited past its deadline before a batch could run it; retry later, raise "
        "X-Request-Timeout up to the server's --deadline-s, or send fewer inputs"
    )
