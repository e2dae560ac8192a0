"""A frontend's side of `serve --frontends N`: the connection to the engine process, and the
`RemoteScheduler` that the routes submit to as they would to a local `Scheduler`.

Admission and tokenization stay in the frontend, so a refusal (429) costs no round trip and the
engine process spends its one event loop on batching; only token ids go over the socket, and only
the model outputs come back (`finish` shapes them here).

    >>> client, models = await EngineClient.connect(path, frontend=0)
    >>> scheduler = RemoteScheduler(0, models[0], client, admission, tokenize_pool)
    >>> records = await scheduler.submit(lambda t: t.embed(texts), [len(x) for x in texts], deadline_s=30)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from m3engine.errors import NotReadyError
from m3engine.models.spec import ModelSpec
from m3engine.scheduler.admission import Admission, estimate_tokens
from m3engine.scheduler.submitter import Timings
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
from m3engine.settings import EngineSettings
from m3engine.tasks import Prepared, TaskBuilder
from m3engine.tokenization import TextTokenizer
from m3engine.types import Encoded, HeadRequest

R = TypeVar("R")


class EngineClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: EngineStatus
    ) -> None:
        self._reader, self._writer, self.status = reader, writer, status
        self.connected = True
        self._pending: dict[int, asyncio.Future[Result]] = {}
        self._ids = itertools.count()
        self._outbox: list[object] = []
        self._task: asyncio.Task[None] | None = None
        self.on_status: Callable[[EngineStatus], None] | None = None
        self.on_lost: Callable[[], None] | None = None  # the engine process went away

    @classmethod
    async def connect(cls, path: str, frontend: int) -> tuple[EngineClient, list[ModelDescription]]:
        """Connect, say hello, and receive the served models (specs, settings, tokenizers)."""
        reader, writer = await asyncio.open_unix_connection(path)
        write_frame(writer, [Hello(frontend, os.getpid())])
        await writer.drain()
        while True:  # status-only frames may come before the welcome
            status, messages = await read_frame(reader)
            welcome = next((m for m in messages if isinstance(m, Welcome)), None)
            if welcome is not None:
                return cls(reader, writer, status), welcome.models

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._read_loop(), name="engine-client")

    async def close(self) -> None:
        self.on_lost = None  # closing it ourselves is not losing it
        if self._task is not None:
            self._task.cancel()
        self._writer.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(
        self, model: int, encoded: list[Encoded], heads: HeadRequest, deadline: float
    ) -> tuple[int, asyncio.Future[Result]]:
        if not self.connected:
            raise NotReadyError("this frontend lost its engine process; retry on another replica")
        job = next(self._ids)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending[job] = future
        self._send(Submit(job, model, encoded, heads, deadline))
        return job, future

    def cancel(self, job: int) -> None:
        if self._pending.pop(job, None) is not None and self.connected:
            self._send(Cancel(job))

    def _send(self, message: object) -> None:
        self._outbox.append(message)
        if len(self._outbox) == 1:  # the first of this tick: one frame carries the tick's messages
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if messages and not self._writer.is_closing():
            write_frame(self._writer, messages)

    async def _read_loop(self) -> None:
        try:
            while True:
                status, messages = await read_frame(self._reader)
                self.status = status
                if self.on_status is not None:
                    self.on_status(status)
                for message in messages:
                    future = self._pending.pop(message.job, None)
                    if future is None or future.done():
                        continue  # cancelled here meanwhile
                    if isinstance(message, Failure):
                        future.set_exception(message.error)
                    else:
                        future.set_result(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.connected = False
            lost = NotReadyError("this frontend lost its engine process; retry on another replica")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            self._pending.clear()
            if self.on_lost is not None:
                self.on_lost()


@dataclass
class ModelView:
    """A served model as the routes see it (server/state.py's ServedEngine), without its weights."""

    spec: ModelSpec
    tokenizer: TextTokenizer
    settings: EngineSettings
    max_length: int
    details: dict[str, Any]

    def info(self) -> dict[str, Any]:
        return self.details


class RemoteScheduler:
    """The `Submitter` of a frontend: admit and tokenize here, batch and run in the engine process."""

    def __init__(
        self,
        index: int,
        model: ModelDescription,
        client: EngineClient,
        admission: Admission,
        tokenize_pool: Executor,
    ) -> None:
        self.index, self.name, self.client, self.admission = index, model.name, client, admission
        self._pool = tokenize_pool
        self._tasks = TaskBuilder(model.spec, model.tokenizer, model.settings)
        self.view = ModelView(model.spec, model.tokenizer, model.settings, self._tasks.max_length, model.info)

    @property
    def tasks(self) -> TaskBuilder:
        return self._tasks

    @property
    def alive(self) -> bool:
        status = self.client.status
        return self.client.connected and not status.stopping and status.alive[self.index]

    async def start(self, warmup: bool = True) -> None:
        """Nothing to start: the engine process warmed the model up before this frontend existed."""

    async def stop(self) -> None:
        """The engine process stops the worker; the client closes with the frontend."""

    async def submit(
        self,
        prepare: Callable[[TaskBuilder], Prepared[R]],
        char_counts: Sequence[int],
        *,
        deadline_s: float,
        timings: Timings | None = None,
    ) -> R:
        if not self.alive:
            raise NotReadyError(f"model {self.name} is not ready (its worker is not running); retry later")
        timings = timings if timings is not None else Timings()
        start = time.monotonic()
        permit = self.admission.reserve(estimate_tokens(char_counts, self._tasks.spec.max_length))
        try:
            task = await asyncio.get_running_loop().run_in_executor(self._pool, prepare, self._tasks)
            timings.tokenize = time.monotonic() - start
            timings.tokens = task.num_tokens
            permit.resize(task.num_tokens)
            job, future = self.client.submit(self.index, task.encoded, task.heads, start + deadline_s)
            try:
                result = await future
            except asyncio.CancelledError:  # the client disconnected: drop the job before it runs
                self.client.cancel(job)
                raise
            timings.queue, timings.forward = result.queue_s, result.forward_s
            return task.finish(result.outputs)
        finally:
            permit.release()
