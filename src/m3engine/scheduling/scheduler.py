"""The one path every request takes: admit -> tokenize (pool) -> queue -> batch -> finish.

    >>> scheduler = Scheduler("bge-m3", engine, admission, metrics, tokenize_pool)
    >>> await scheduler.start()
    >>> records = await scheduler.submit(lambda tasks: tasks.embed(texts), [len(t) for t in texts])

Admission is decided before tokenization, from an upper bound on the tokens (see admission.py).
With several devices (`--devices`), one worker per device pulls batches from the one former: a
device takes the next batch as soon as it has room, so the least-loaded device gets it. A batch
that fails with a device error takes its device out and goes back to the head of the queue, once,
for the other devices; the scheduler is alive while one worker is. A device taken out is probed
every --device-probe-s and takes batches again once it answers. With `--fallback cpu` a standby
worker on the CPU backend takes batches while no device can (scheduling/fallback.py).

Tokenization runs in a thread pool (the Rust tokenizer releases the GIL), so it overlaps the forward
pass of earlier batches. Cancelling the awaiting coroutine (a disconnected client) releases the
permit and marks the job done, so its sequences are dropped before any batch runs them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from m3engine.backends.base import Backend
from m3engine.errors import DeadlineExceededError
from m3engine.metrics import Metrics
from m3engine.models.spec import ModelSpec
from m3engine.scheduling.admission import Admission
from m3engine.scheduling.devices import DeviceHealth, is_device_error
from m3engine.scheduling.fallback import Standby, probe_until_back
from m3engine.scheduling.former import BatchFormer, Item, Job
from m3engine.scheduling.submitter import PRIMARY, Serving, Submitter
from m3engine.scheduling.timings import Timings
from m3engine.scheduling.worker import Worker, _deadline_message
from m3engine.settings import EngineSettings
from m3engine.tasks.builder import Prepared, TaskBuilder
from m3engine.types import BatchOutputs


class Model(Protocol):
    """What a scheduler needs of a loaded model (m3engine.Engine is one)."""

    spec: ModelSpec
    settings: EngineSettings
    backend: Backend
    backends: list[Backend]  # one per device; backends[0] is `backend`
    fallback: Backend | None  # --fallback's standby backend
    health: DeviceHealth
    tasks: TaskBuilder
    max_length: int


log = logging.getLogger("m3engine.scheduler")

__all__ = ["Scheduler", "Timings"]


class Scheduler(Submitter):
    """One model's queue and worker; admission and the tokenizer pool are shared by all models."""

    def __init__(
        self,
        name: str,
        engine: Model,
        admission: Admission,
        metrics: Metrics,
        tokenize_pool: Executor | None,
        *,
        short_query_tokens: int = 64,
    ) -> None:
        self.name, self.engine, self.admission, self.metrics = name, engine, admission, metrics
        self.tokenize_pool = tokenize_pool
        s = engine.settings
        self.former = BatchFormer(
            s.batch_tokens, s.max_batch_size, engine.backend.info.padded, short_query_tokens
        )
        self.health = engine.health
        self.workers = [
            Worker(name, backend, self.former, metrics, device=label)
            for backend, label in zip(engine.backends, self.health.labels, strict=True)
        ]
        self.worker = self.workers[0]
        self._healthy = [metrics.device_healthy.labels(model=name, device=w.device) for w in self.workers]
        self.standby: Worker | None = None
        self._rule: Standby | None = None
        if engine.fallback is not None:
            label = f"{engine.fallback.info.device}-fallback"
            self.standby = Worker(name, engine.fallback, self.former, metrics, device=label, standby=True)
            self._rule = Standby(self.workers, self.former, self.health, s.fallback_after_s)
            self.standby.hold, self.standby.batch_tokens = self._rule.hold, s.fallback_batch_tokens
            self.standby.on_tokens = self._observe_throughput
            self.standby.on_death = self._worker_died
            self.standby.failover = self._failover
        for index, worker in enumerate(self.workers):
            worker.on_tokens = self._observe_throughput
            worker.on_death = self._worker_died
            if len(self.workers) > 1 or self.standby is not None:
                worker.failover = self._failover
            self._healthy[index].set(1 if self.health.healthy[index] else 0)
        self._probes: set[asyncio.Task[None]] = set()  # devices taken out, tried again (fallback.py)
        self.on_death: Callable[[], None] | None = None  # the last worker stopped

    @property
    def tasks(self) -> TaskBuilder:
        return self.engine.tasks

    @property
    def alive(self) -> bool:
        return any(w.alive for w in self.workers) or (self.standby is not None and self.standby.alive)

    @property
    def serving(self) -> Serving:
        return PRIMARY if self._rule is None else self._rule.serving()

    async def start(self) -> None:
        """Start the workers (the engine warmed its backends up at load: EngineSettings.warmup)."""
        for index, worker in enumerate(self.workers):
            if self.health.healthy[index]:
                worker.start()
        if self.standby is not None:
            self.standby.start()

    async def stop(self) -> None:
        for probe in self._probes:
            probe.cancel()
        for worker in [*self.workers, *([self.standby] if self.standby else [])]:
            await worker.stop()

    def _worker_died(self) -> None:
        if not self.alive and self.on_death is not None:
            self.on_death()

    def _failover(self, worker: Worker, batch: list[Item], error: BaseException) -> list[Item] | None:
        """Worker's `Failover`: a device error (or a dead worker) with another device alive takes the
        device out and sends the batch back to the queue, once; the items to fail here are returned."""
        died = not worker.alive  # the worker loop itself ended
        if not died and not is_device_error(error):
            return None  # the batch's own fault: it would fail on any device
        others = [w for w in self.workers if w is not worker and w.alive]
        if worker is self.standby:  # its own device errors fail its batch; its death leaves the queue
            if not died or not others:
                return None
        else:
            if self.standby is not None and self.standby.alive:
                others.append(self.standby)
            if not others:
                return None
            self._take_out(worker, error, probe=not died)
        again = [it for it in batch if not it.job.done and it.retried]  # failed on two devices: fails
        retry = [it for it in batch if not it.job.done and not it.retried]
        for item in retry:
            item.retried = True
        self.former.requeue(retry)
        log.warning(
            "device taken out; its batch goes to the other devices",
            extra={"model": self.name, "device": worker.device, "sequences": len(retry)},
        )
        for other in others:
            other.wake()
        return again

    def _take_out(self, worker: Worker, error: BaseException, probe: bool) -> None:
        index = self.workers.index(worker)
        worker.alive = False
        worker.wake()  # a loop waiting for work ends now, not at the next request
        self.health.take_out(index, error)
        self._healthy[index].set(0)
        if probe:  # a device error: the device may come back
            task = asyncio.get_running_loop().create_task(self._bring_back(index))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def _bring_back(self, index: int) -> None:
        """Probe a device taken out until it answers, then let its worker take batches again."""
        worker = self.workers[index]
        heads = self.engine.tasks.head_requests()[0]  # the one that runs every head
        await probe_until_back(worker, heads, self.engine.settings.device_probe_s)
        self.health.bring_back(index)
        self._healthy[index].set(1)
        worker.start()
        worker.wake()
        if self.standby is not None:
            self.standby.wake()  # back to waiting on the queue-wait rule

    async def run(self, task: Prepared[Any], deadline: float, timings: Timings) -> Any:
        future: asyncio.Future[BatchOutputs] = asyncio.get_running_loop().create_future()
        job = Job(task.encoded, task.heads, deadline, future)
        self.enqueue(job)
        try:
            outputs = await self._wait(job, future, deadline)
        finally:
            if not future.done():
                future.cancel()  # the former drops its remaining items
        timings.queue = (job.started_at or job.enqueued_at) - job.enqueued_at
        timings.forward = job.forward_s
        return task.finish(outputs)

    def enqueue(self, job: Job) -> None:
        """Queue a job's tokenized sequences for the shared batches; its outcome gets their outputs.

        `job.deadline` is a time.monotonic() value (one clock for every process of the host)."""
        self.former.add(job)
        for worker in self.workers:
            worker.wake()
        # while a primary serves, the standby wakes on its own timer (fallback.py), not per request
        if self.standby is not None and not any(w.alive for w in self.workers):
            self.standby.wake()

    async def _wait(self, job: Job, future: asyncio.Future[BatchOutputs], deadline: float) -> BatchOutputs:
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            if job.started:  # already on the device: it finishes soon, and dropping it would waste it
                return await future
            future.cancel()  # marks it done: the former drops its items
            raise DeadlineExceededError(_deadline_message()) from None

    def _observe_throughput(self, tokens: int, seconds: float) -> None:
        if seconds > 0:
            # each device reports its own batches: the server's rate is theirs together
            rate = tokens / seconds * max(1, sum(w.alive for w in self.workers))
            previous = self.admission.tokens_per_s
            self.admission.tokens_per_s = rate if previous == 0 else 0.8 * previous + 0.2 * rate
