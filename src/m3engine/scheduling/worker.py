"""The worker: runs formed batches on the backend, one at a time, and fans results out.

Failure policy, per batch:
- an out-of-memory error splits the batch in two, once, and retries each half (a half that fails
  again fails only its own requests);
- any other exception fails the requests of that batch only; the loop carries on;
- an exception that escapes the loop itself (a bug, or a BaseException from the backend) ends it;
  the supervisor then marks the worker dead, fails everything queued with 503, and /ready turns 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from m3engine.backends.base import Backend
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
from m3engine.scheduling.sequences import pack
from m3engine.tasks import postprocess
from m3engine.types import BatchOutputs

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
    def __init__(self, name: str, backend: Backend, former: BatchFormer, metrics: Metrics) -> None:
        self.name, self.backend, self.former, self.metrics = name, backend, former, metrics
        # One thread: backends are called from one thread at a time (base.Backend's contract).
        self._forward = ForwardThread(f"forward-{name}")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.alive = False
        self._running: list[Item] = []
        # Labelled children looked up once: .labels() costs a dict lookup and a lock per call.
        self._queue_depth = metrics.queue_depth.labels(model=name)
        self._tokens = metrics.tokens.labels(model=name)
        self._depth_shown = -1
        self.on_tokens: Callable[[int, float], None] | None = None  # (tokens, seconds) per batch
        self.on_death: Callable[[], None] | None = None  # e.g. make the process exit, to be restarted

    def start(self) -> None:
        self.alive = True
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"worker-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._forward.shutdown()

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
            self._fail_all(NotReadyError(f"the worker of model {self.name} stopped; the server is not ready"))
            if self.on_death is not None:
                self.on_death()

    def _fail_all(self, error: M3EngineError) -> None:
        for item in self._running:  # the batch that was on the backend when the loop died
            if not item.job.done:
                item.job.future.set_exception(error)
        for lane in (self.former.short, self.former.long):
            for item in lane:
                if not item.job.done:
                    item.job.future.set_exception(error)
            lane.clear()

    async def _loop(self) -> None:
        while True:
            for job in self.former.expired(time.monotonic()):
                job.future.set_exception(DeadlineExceededError(_deadline_message()))
            batch = self.former.next_batch()
            if self.former.pending != self._depth_shown:  # a gauge write is an mmap write here
                self._depth_shown = self.former.pending
                self._queue_depth.set(self._depth_shown)
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._running = batch
            await self._run(batch, may_split=True)
            self._running = []

    async def _run(self, batch: list[Item], may_split: bool) -> None:
        now = time.monotonic()
        for item in batch:
            if not item.job.started:
                item.job.started, item.job.started_at = True, now
        packed = pack([(it.job.encoded, it.index) for it in batch])
        try:
            out = await self._forward.run(self.backend.forward, packed, batch[0].job.heads)
        except Exception as error:
            if may_split and len(batch) > 1 and is_oom(error):
                self.metrics.oom_splits.inc()
                log.warning("out of memory; splitting the batch", extra={"tokens": packed.num_tokens})
                half = len(batch) // 2
                await self._run(batch[:half], may_split=False)
                await self._run(batch[half:], may_split=False)
                return
            self._fail(batch, error, packed.num_tokens)
            return
        elapsed = time.monotonic() - now
        self.metrics.batch_size.observe(packed.num_seqs)
        self.metrics.batch_tokens.observe(packed.num_tokens)
        self._tokens.inc(packed.num_tokens)
        if self.on_tokens is not None:
            self.on_tokens(packed.num_tokens, elapsed)
        self._fan_out(batch, out, elapsed)

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
                job.future.set_result(postprocess.gather(job.parts, len(job.encoded)))


def _deadline_message() -> str:
    return (
        "the request waited past its deadline before a batch could run it; retry later, raise "
        "X-Request-Timeout up to the server's --deadline-s, or send fewer inputs"
    )
