"""The engine process's side of `serve --frontends N`: the models' schedulers, answering frontends.

HTTP frontend processes connect over a unix socket (remote.py is the other side). They
send tokenized jobs; the jobs of every frontend go into the one batch former of their model, so a
forward pass batches across all frontends, and the worker runs as in the single-process server.
A frontend's cancel (its client disconnected) marks the job done, so its sequences are dropped
before any batch runs them; a deadline that passes before the job's batch starts fails it with
503, as `Scheduler._wait` does in one process. A frontend that goes away has its jobs cancelled.

This process's event loop is the server's one serial resource (every request of every frontend
passes through it), so a job costs as little of it as it can: no asyncio future or timer per job
(a `_Reply` writes the outcome to the frontend's outbox the moment the worker sets it; one timer
serves every deadline), and the connection is a Protocol fed raw bytes.

    >>> service = EngineService.build(engines, settings, metrics)
    >>> await service.start("/tmp/m3engine-x/engine.sock")
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from m3engine.errors import BackendError, DeadlineExceededError, M3EngineError, NotReadyError
from m3engine.metrics import Metrics
from m3engine.process.loopwatch import LoopWatch
from m3engine.scheduling.admission import Admission
from m3engine.scheduling.former import Job
from m3engine.scheduling.scheduler import Scheduler
from m3engine.scheduling.worker import _deadline_message
from m3engine.server.multiproc.wire import (
    CANCEL,
    FAILURE,
    HELLO,
    RESULT,
    SERVING,
    SUBMIT,
    WELCOME,
    FrameReader,
    Message,
    ModelDescription,
    batch_from_wire,
    encode_outputs,
    heads_of,
    write_frame,
)
from m3engine.settings import ServerSettings
from m3engine.types import BatchOutputs

if TYPE_CHECKING:
    from m3engine.engine import Engine

log = logging.getLogger("m3engine.engine_service")
TICK_S = 0.5  # status frames to every frontend and the metric gauges of this process, this often
# The loop runs a timer this close to its time (asyncio's clock resolution); the deadline check does too.
_RESOLUTION = time.get_clock_info("monotonic").resolution


class EngineService:
    def __init__(
        self,
        schedulers: list[Scheduler],
        models: list[ModelDescription],
        admission: Admission,
        metrics: Metrics,
        frontends: int = 1,
    ) -> None:
        self.schedulers, self.models, self.admission, self.metrics = schedulers, models, admission, metrics
        self.frontends = frontends  # how many will connect; /ready waits until each has served
        self._serving: set[int] = set()
        self.stopping = False
        self.on_fatal: Callable[[], None] | None = None  # a worker died
        self.deadlines = _Deadlines()
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._watch = LoopWatch(metrics.loop_sink("main"))

    @classmethod
    def build(cls, engines: Sequence[Engine], settings: ServerSettings, metrics: Metrics) -> EngineService:
        # Admission is decided in the frontends; this one only carries the throughput for Retry-After.
        admission = Admission(1, 1)
        metrics.track_gpu()
        for e in engines:  # the models run in this process: only it knows their precision verdicts
            fell_back = e.precision is not None and e.precision.fell_back
            metrics.precision_fallback.labels(model=e.spec.name).set(1 if fell_back else 0)
        schedulers = [
            Scheduler(
                e.spec.name, e, admission, metrics, None, short_query_tokens=settings.short_query_tokens
            )
            for e in engines
        ]
        models = [ModelDescription(e.spec.name, e.spec, e.settings, e.info(), e.tokenizer) for e in engines]
        return cls(schedulers, models, admission, metrics, settings.frontends or 1)

    def status(self) -> tuple[Any, ...]:
        """An `EngineStatus`, as the plain tuple that goes in every frame."""
        alive = tuple(s.alive for s in self.schedulers)
        devices = tuple(tuple(s.health.reasons) for s in self.schedulers)
        serving = tuple((now.by, now.degraded) for now in (s.serving for s in self.schedulers))
        return self.admission.tokens_per_s, alive, self.stopping, devices, serving, self.frontends_serving

    @property
    def frontends_serving(self) -> int:
        return min(len(self._serving), self.frontends)

    def frontend_serving(self, index: int) -> None:
        """A frontend accepts connections. Until every one has, each frontend's /ready says 503: the
        kernel spreads connections only over the sockets that listen, so a client that opened its
        connections as soon as the first frontend was ready kept them on a few processes."""
        before = self.frontends_serving
        self._serving.add(index)
        if before < self.frontends <= len(self._serving):
            log.info("every frontend serves", extra={"frontends": self.frontends})
        self._broadcast_status()

    @property
    def ready(self) -> bool:
        return (
            not self.stopping
            and all(s.alive for s in self.schedulers)
            and self.frontends_serving >= self.frontends
        )

    async def start(self, socket_path: str) -> None:
        for scheduler in self.schedulers:
            await scheduler.start()
            scheduler.on_death = self._worker_died
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), path=socket_path)
        self._ticker = loop.create_task(self._tick())
        self._watch.start()

    async def stop(self) -> None:
        self.stopping = True
        self._broadcast_status()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.close()
        self.deadlines.clear()
        for scheduler in self.schedulers:
            await scheduler.stop()
        await self._watch.stop()

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


class _Connection(asyncio.Protocol):
    """One frontend: its jobs in flight, and the messages due to it in this loop tick."""

    def __init__(self, service: EngineService) -> None:
        self.service = service
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.jobs: dict[int, _Reply] = {}
        self.outbox: list[Message] = []
        self.frontend: int | None = None
        self._reader = FrameReader(self._handle)
        self._flush_scheduled = False

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance check).
        self.transport = cast(asyncio.Transport, transport)
        self.service._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service._connections.discard(self)  # the frontend exited (or was killed)
        self.close()

    # ---- messages
    def _handle(self, messages: list[Message]) -> None:
        for message in messages:
            kind = message[0]
            if kind == SUBMIT:
                self._submit(message)
            elif kind == CANCEL:
                reply = self.jobs.get(message[1])
                if reply is not None:
                    reply.cancel()  # marks it done: the former drops its sequences
            elif kind == HELLO:
                _, self.frontend, pid = message
                log.info("frontend connected", extra={"frontend": self.frontend, "pid": pid})
                self.send((WELCOME, self.service.models))
            elif kind == SERVING:
                self.service.frontend_serving(message[1])

    def _submit(self, message: Message) -> None:
        _, job_id, model, sequences, heads, deadline = message
        scheduler = self.service.schedulers[model]
        if not scheduler.alive:
            error = NotReadyError(
                f"model {scheduler.name} is not ready (its worker is not running); retry later"
            )
            self.send((FAILURE, job_id, error))
            return
        reply = _Reply(self, job_id)
        reply.job = Job(batch_from_wire(sequences), heads_of(heads), deadline, reply)
        self.jobs[job_id] = reply
        self.service.deadlines.add(deadline, reply)
        scheduler.enqueue(reply.job)

    def send(self, message: Message) -> None:
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
        if self.transport is None or self.transport.is_closing():
            return
        try:
            write_frame(self.transport, (self.service.status(), messages))
        except Exception:  # e.g. an error that does not pickle: fail those jobs, keep the connection
            log.exception("could not send results to a frontend")
            failed = [m[1] for m in messages if m[0] == RESULT]
            for job_id in failed:
                self.outbox.append(
                    (FAILURE, job_id, BackendError("the result could not be sent to the frontend"))
                )
            if failed:
                self.flush_soon()

    def close(self) -> None:
        for reply in list(self.jobs.values()):
            reply.cancel()
        self.jobs.clear()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()


class _Reply:
    """The outcome of one frontend job (the `Outcome` of its `Job`): the worker's result or error
    goes straight into the connection's outbox, with no future and no callback through the loop."""

    __slots__ = ("_done", "connection", "id", "job")

    def __init__(self, connection: _Connection, job_id: int) -> None:
        self.connection, self.id = connection, job_id
        self.job: Job | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancel(self) -> bool:
        """The frontend cancelled it, or went away: nobody waits for it, nothing is sent."""
        return self._finish()

    def set_result(self, result: BatchOutputs, /) -> None:
        job = self.job
        if not self._finish() or job is None:
            return
        queue_s = (job.started_at or job.enqueued_at) - job.enqueued_at
        try:
            message: Message = (RESULT, self.id, encode_outputs(result), queue_s, job.forward_s)
        except Exception:
            log.exception("could not encode a result for a frontend")
            message = (FAILURE, self.id, BackendError("the result could not be sent to the frontend"))
        self.connection.send(message)

    def set_exception(self, exception: BaseException, /) -> None:
        if not self._finish():
            return
        if not isinstance(exception, M3EngineError):
            exception = BackendError("inference failed for this batch")
        self.connection.send((FAILURE, self.id, exception))

    def _finish(self) -> bool:
        if self._done:
            return False
        self._done = True
        self.job = None  # the deadline heap may hold this reply a while: not the job and its outputs
        self.connection.jobs.pop(self.id, None)
        return True

    def expire(self) -> None:
        """The deadline passed: a job whose batch has not started fails; a started one finishes."""
        if self.job is not None and not self.job.started:
            self.set_exception(DeadlineExceededError(_deadline_message()))


class _Deadlines:
    """Every job's deadline on one timer, armed for the earliest deadline still in flight.

    A timer handle per job would cost a heap push, a cancel and the loop's clean-up of cancelled
    handles for each request, though nearly every job finishes long before its deadline. Here a job
    is a heap entry, and entries of finished jobs are popped whenever they reach the top, so the
    timer fires only when a job is still in flight at the earliest deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Reply]] = []
        self._order = itertools.count()  # ties: never compare replies
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")

    def add(self, deadline: float, reply: _Reply) -> None:
        heap = self._heap
        while heap and heap[0][2]._done:
            heapq.heappop(heap)
        heapq.heappush(heap, (deadline, next(self._order), reply))
        if deadline < self._armed_at:
            self._arm(deadline)

    def clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._heap.clear()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # loop.time() is time.monotonic(), the clock of every deadline
        self._timer = asyncio.get_running_loop().call_at(when, self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        self._timer, self._armed_at = None, float("inf")
        heap, now = self._heap, asyncio.get_running_loop().time() + _RESOLUTION
        while heap and (heap[0][0] <= now or heap[0][2]._done):
            heapq.heappop(heap)[2].expire()
        if heap:
            self._arm(heap[0][0])
