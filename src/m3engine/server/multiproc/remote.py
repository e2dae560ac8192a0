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
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from m3engine.errors import NotReadyError
from m3engine.models.spec import ModelSpec
from m3engine.scheduling.admission import Admission
from m3engine.scheduling.submitter import PRIMARY, Serving, Submitter
from m3engine.scheduling.timings import Timings
from m3engine.server.multiproc.wire import (
    CANCEL,
    FAILURE,
    HELLO,
    SERVING,
    SUBMIT,
    WELCOME,
    BatchWire,
    EngineStatus,
    FrameReader,
    Message,
    ModelDescription,
    batch_to_wire,
    decode_outputs,
    heads_bits,
    write_frame,
)
from m3engine.settings import EngineSettings
from m3engine.tasks.builder import Prepared, TaskBuilder
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch

R = TypeVar("R")
# (outputs, queue_s, forward_s) of one job
JobResult = tuple[BatchOutputs, float, float]


class EngineClient(asyncio.Protocol):
    def __init__(self) -> None:
        self.status = EngineStatus(0.0, (), False, ())
        self.connected = True
        self.models: asyncio.Future[list[ModelDescription]] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._reader = FrameReader(self._handle)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._outbox: list[Message] = []
        self._started = False
        self.on_status: Callable[[EngineStatus], None] | None = None
        self.on_lost: Callable[[], None] | None = None  # the engine process went away

    @classmethod
    async def connect(cls, path: str, frontend: int) -> tuple[EngineClient, list[ModelDescription]]:
        """Connect, say hello, and receive the served models (specs, settings, tokenizers)."""
        _, client = await asyncio.get_running_loop().create_unix_connection(cls, path)
        client._send((HELLO, frontend, os.getpid()))
        return client, await client.models  # status-only frames may come before the welcome

    def serving(self, frontend: int) -> None:
        """This frontend's HTTP server accepts connections (the engine counts them for /ready)."""
        self._send((SERVING, frontend))

    def start(self) -> None:
        """From here on a lost connection is reported (`on_lost`); frames are read from the start."""
        self._started = True
        if not self.connected and self.on_lost is not None:
            self.on_lost()

    async def close(self) -> None:
        self.on_lost = None  # closing it ourselves is not losing it
        if self._transport is not None:
            self._transport.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(
        self, model: int, sequences: BatchWire, heads: HeadRequest, deadline: float
    ) -> tuple[int, asyncio.Future[JobResult]]:
        if not self.connected:
            raise NotReadyError("this frontend lost its engine process; retry on another replica")
        job = next(self._ids)
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._pending[job] = future
        self._send((SUBMIT, job, model, sequences, heads_bits(heads), deadline))
        return job, future

    def cancel(self, job: int) -> None:
        if self._pending.pop(job, None) is not None and self.connected:
            self._send((CANCEL, job))

    def _send(self, message: Message) -> None:
        self._outbox.append(message)
        if len(self._outbox) == 1:  # the first of this tick: one frame carries the tick's messages
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if messages and self._transport is not None and not self._transport.is_closing():
            write_frame(self._transport, messages)

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance check).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        lost = NotReadyError("this frontend lost its engine process; retry on another replica")
        if not self.models.done():
            self.models.set_exception(ConnectionError("the engine process closed the connection"))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(lost)
        self._pending.clear()
        if self._started and self.on_lost is not None:
            self.on_lost()

    def _handle(self, frame: tuple[tuple[Any, ...], list[Message]]) -> None:
        status, messages = frame
        self.status = EngineStatus(*status)
        if self.on_status is not None:
            self.on_status(self.status)
        for message in messages:
            kind = message[0]
            if kind == WELCOME:
                if not self.models.done():
                    self.models.set_result(message[1])
                continue
            future = self._pending.pop(message[1], None)
            if future is None or future.done():
                continue  # cancelled here meanwhile
            if kind == FAILURE:
                future.set_exception(message[2])
            else:  # RESULT
                future.set_result((decode_outputs(message[2]), message[3], message[4]))


def _no_devices() -> tuple[str | None, ...]:
    return ()


@dataclass
class ModelView:
    """A served model as the routes see it (server/state.py's ServedEngine), without its weights."""

    spec: ModelSpec
    tokenizer: TextTokenizer
    settings: EngineSettings
    max_length: int
    details: dict[str, Any]  # Engine.info() in the engine process, when this frontend connected
    # per device: None while healthy, else why it was taken out, as of the engine's latest frame
    device_reasons: Callable[[], tuple[str | None, ...]] = _no_devices

    def info(self) -> dict[str, Any]:
        """The model's description, each device's health as the engine process has it now."""
        devices, reasons = self.details.get("devices", []), self.device_reasons()
        if len(reasons) != len(devices):
            return self.details  # no status from the engine yet
        current = [{**d, "healthy": r is None, "reason": r} for d, r in zip(devices, reasons, strict=True)]
        return {**self.details, "devices": current}


class RemoteScheduler(Submitter):
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
        self.tokenize_pool = tokenize_pool
        self._tasks = TaskBuilder(model.spec, model.tokenizer, model.settings)
        self.view = ModelView(
            model.spec,
            model.tokenizer,
            model.settings,
            self._tasks.max_length,
            model.info,
            self._device_reasons,
        )

    @property
    def tasks(self) -> TaskBuilder:
        return self._tasks

    def _device_reasons(self) -> tuple[str | None, ...]:
        devices = self.client.status.devices
        return devices[self.index] if self.index < len(devices) else ()

    @property
    def alive(self) -> bool:
        status = self.client.status
        return self.client.connected and not status.stopping and status.alive[self.index]

    @property
    def serving(self) -> Serving:
        """As the engine process's scheduler said in its latest frame."""
        known = self.client.status.serving
        return Serving(*known[self.index]) if self.index < len(known) else PRIMARY

    async def start(self) -> None:
        """Nothing to start: the engine process warmed the model up before this frontend existed."""

    async def stop(self) -> None:
        """The engine process stops the worker; the client closes with the frontend."""

    def tokenize(self, prepare: Callable[[TaskBuilder], Prepared[R]]) -> _WireTask[R]:
        """Tokenize, and flatten the ids for the socket, in the tokenizer pool: off the event loop."""
        task = prepare(self._tasks)
        return _WireTask(task, batch_to_wire(PackedBatch.from_encoded(task.encoded)))

    def prepared(self, tokenized: Any) -> Prepared[Any]:
        assert isinstance(tokenized, _WireTask)
        return tokenized.task

    async def run(self, tokenized: _WireTask[Any], deadline: float, timings: Timings) -> Any:
        job, future = self.client.submit(self.index, tokenized.sequences, tokenized.task.heads, deadline)
        try:
            outputs, timings.queue, timings.forward = await future
        except asyncio.CancelledError:  # the client disconnected: drop the job before it runs
            self.client.cancel(job)
            raise
        return tokenized.task.finish(outputs)


@dataclass
class _WireTask(Generic[R]):
    task: Prepared[R]
    sequences: BatchWire  # the task's token ids, flat, for the socket

    @property
    def num_tokens(self) -> int:
        return self.task.num_tokens
