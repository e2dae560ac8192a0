"""The engine process's side of `serve --frontends N`: the models' schedulers, answering frontends.

HTTP frontend processes connect over a unix socket (scheduler/remote.py is the other side). They
send tokenized jobs; the jobs of every frontend go into the one batch former of their model, so a
forward pass batches across all frontends, and the worker runs as in the single-process server.
A frontend's cancel (its client disconnected) marks the job done, so its sequences are dropped
before any batch runs them; a deadline that passes before the job's batch starts fails it with
503, as `Scheduler._wait` does in one process. A frontend that goes away has its jobs cancelled.

    >>> service = EngineService.build(engines, settings, metrics)
    >>> await service.start("/tmp/m3engine-x/engine.sock", warmup=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from m3engine.errors import BackendError, DeadlineExceededError, M3EngineError, NotReadyError
from m3engine.metrics import Metrics
from m3engine.scheduler.admission import Admission
from m3engine.scheduler.batcher import Job
from m3engine.scheduler.scheduler import Scheduler
from m3engine.scheduler.wire import (
    Cancel,
    EngineStatus,
    Failure,
    Hello,
    ModelDescription,
    Result,
    Submit,
    Welcome,
    read_frame,
    write_frame,
)
from m3engine.scheduler.worker import _deadline_message
from m3engine.settings import ServerSettings

if TYPE_CHECKING:
    from m3engine.engine import Engine

log = logging.getLogger("m3engine.engine_service")
TICK_S = 0.5  # status frames to every frontend and the metric gauges of this process, this often


class EngineService:
    def __init__(
        self,
        schedulers: list[Scheduler],
        models: list[ModelDescription],
        admission: Admission,
        metrics: Metrics,
    ) -> None:
        self.schedulers, self.models, self.admission, self.metrics = schedulers, models, admission, metrics
        self.stopping = False
        self.on_fatal: Callable[[], None] | None = None  # a worker died
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, engines: Sequence[Engine], settings: ServerSettings, metrics: Metrics) -> EngineService:
        # Admission is decided in the frontends; this one only carries the throughput for Retry-After.
        admission = Admission(1, 1)
        metrics.track_gpu()
        schedulers = [
            Scheduler(
                e.spec.name, e, admission, metrics, None, short_query_tokens=settings.short_query_tokens
            )
            for e in engines
        ]
        models = [ModelDescription(e.spec.name, e.spec, e.settings, e.info(), e.tokenizer) for e in engines]
        return cls(schedulers, models, admission, metrics)

    def status(self) -> EngineStatus:
        alive = tuple(s.alive for s in self.schedulers)
        return EngineStatus(self.admission.tokens_per_s, alive, self.stopping)

    @property
    def ready(self) -> bool:
        return not self.stopping and all(s.alive for s in self.schedulers)

    async def start(self, socket_path: str, warmup: bool = True) -> None:
        for scheduler in self.schedulers:
            await scheduler.start(warmup=warmup)
            scheduler.worker.on_death = self._worker_died
        self._server = await asyncio.start_unix_server(self._serve, path=socket_path)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        self.stopping = True
        self._broadcast_status()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        for scheduler in self.schedulers:
            await scheduler.stop()

    def _worker_died(self) -> None:
        self._broadcast_status()  # every frontend's /ready turns 503 with this frame
        self.metrics.ready.set(0)
        if self.on_fatal is not None:
            self.on_fatal()

    def _broadcast_status(self) -> None:
        for connection in self._connections:
            connection.flush_soon()

    async def _tick(self) -> None:
        while True:
            self.metrics.ready.set(1 if self.ready else 0)
            self.metrics.refresh()
            self._broadcast_status()
            await asyncio.sleep(TICK_S)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, writer)
        self._connections.add(connection)
        try:
            while True:
                for message in await read_frame(reader):
                    connection.handle(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the frontend exited (or was killed)
        finally:
            self._connections.discard(connection)
            connection.close()


class _Connection:
    """One frontend: its jobs in flight, and the messages due to it in this loop tick."""

    def __init__(self, service: EngineService, writer: asyncio.StreamWriter) -> None:
        self.service, self.writer = service, writer
        self.loop = asyncio.get_running_loop()
        self.jobs: dict[int, tuple[Job, asyncio.TimerHandle]] = {}
        self.outbox: list[object] = []
        self.frontend: int | None = None
        self._flush_scheduled = False

    def handle(self, message: object) -> None:
        if isinstance(message, Submit):
            self._submit(message)
        elif isinstance(message, Cancel):
            entry = self.jobs.get(message.job)
            if entry is not None:
                entry[0].future.cancel()  # marks it done: the former drops its sequences
        elif isinstance(message, Hello):
            self.frontend = message.frontend
            log.info("frontend connected", extra={"frontend": message.frontend, "pid": message.pid})
            self.send(Welcome(self.service.models))

    def _submit(self, message: Submit) -> None:
        scheduler = self.service.schedulers[message.model]
        if not scheduler.alive:
            error = NotReadyError(
                f"model {scheduler.name} is not ready (its worker is not running); retry later"
            )
            self.send(Failure(message.job, error))
            return
        job = scheduler.enqueue(message.encoded, message.heads, message.deadline)
        timer = self.loop.call_at(message.deadline, _expire, job)  # loop.time() is time.monotonic()
        self.jobs[message.job] = (job, timer)
        job.future.add_done_callback(functools.partial(self._done, message.job))

    def _done(self, job_id: int, future: asyncio.Future[object]) -> None:
        entry = self.jobs.pop(job_id, None)
        if entry is None or future.cancelled():
            return  # cancelled by the frontend, or the frontend is gone: nobody waits for it
        job, timer = entry
        timer.cancel()
        error = future.exception()
        if error is None:
            queue_s = (job.started_at or job.enqueued_at) - job.enqueued_at
            self.send(Result(job_id, job.future.result(), queue_s, job.forward_s))
        elif isinstance(error, M3EngineError):
            self.send(Failure(job_id, error))
        else:
            self.send(Failure(job_id, BackendError("inference failed for this batch")))

    def send(self, message: object) -> None:
        self.outbox.append(message)
        self.flush_soon()

    def flush_soon(self) -> None:
        """One frame per loop tick: every job a forward pass finished goes out in one write."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        messages, self.outbox = self.outbox, []
        if self.writer.is_closing():
            return
        try:
            write_frame(self.writer, (self.service.status(), messages))
        except Exception:  # e.g. an output that does not pickle: fail those jobs, keep the connection
            log.exception("could not send results to a frontend")
            failed = [m.job for m in messages if isinstance(m, Result)]
            for job_id in failed:
                self.outbox.append(
                    Failure(job_id, BackendError("the result could not be sent to the frontend"))
                )
            if failed:
                self.flush_soon()

    def close(self) -> None:
        for job, timer in self.jobs.values():
            timer.cancel()
            job.future.cancel()
        self.jobs.clear()
        with contextlib.suppress(Exception):
            self.writer.close()


def _expire(job: Job) -> None:
    """The deadline passed: a job whose batch has not started fails; a started one finishes."""
    if not job.started and not job.done:
        job.future.set_exception(DeadlineExceededError(_deadline_message()))
