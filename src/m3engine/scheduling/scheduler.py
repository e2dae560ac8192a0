"""The one path every request takes: admit -> tokenize (pool) -> queue -> batch -> finish.

    >>> scheduler = Scheduler("bge-m3", engine, admission, metrics, tokenize_pool)
    >>> await scheduler.start()
    >>> records = await scheduler.submit(lambda tasks: tasks.embed(texts), [len(t) for t in texts])

Admission is decided before tokenization, from an upper bound on the tokens (see admission.py).
Tokenization runs in a thread pool (the Rust tokenizer releases the GIL), so it overlaps the forward
pass of earlier batches. Cancelling the awaiting coroutine (a disconnected client) releases the
permit and marks the job done, so its sequences are dropped before any batch runs them.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any, Protocol

from m3engine.backends.base import Backend
from m3engine.errors import DeadlineExceededError
from m3engine.metrics import Metrics
from m3engine.models.spec import ModelSpec
from m3engine.scheduling.admission import Admission
from m3engine.scheduling.former import BatchFormer, Job
from m3engine.scheduling.submitter import Submitter
from m3engine.scheduling.timings import Timings
from m3engine.scheduling.worker import Worker, _deadline_message
from m3engine.settings import EngineSettings
from m3engine.tasks.builder import Prepared, TaskBuilder
from m3engine.types import BatchOutputs, Encoded, HeadRequest, PackedBatch


class Model(Protocol):
    """What a scheduler needs of a loaded model (m3engine.Engine is one)."""

    spec: ModelSpec
    settings: EngineSettings
    backend: Backend
    tasks: TaskBuilder
    max_length: int


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
            s.max_batch_tokens, s.max_batch_size, engine.backend.info.padded, short_query_tokens
        )
        self.worker = Worker(name, engine.backend, self.former, metrics)
        self.worker.on_tokens = self._observe_throughput

    @property
    def tasks(self) -> TaskBuilder:
        return self.engine.tasks

    @property
    def alive(self) -> bool:
        return self.worker.alive

    async def start(self, warmup: bool = True) -> None:
        if warmup:
            await asyncio.get_running_loop().run_in_executor(None, self.warmup)
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()

    def warmup(self) -> None:
        """One forward pass of the largest batch the former can make, so OOM shows before /ready."""
        s, spec = self.engine.settings, self.engine.spec
        length = min(self.engine.max_length, s.max_batch_tokens)
        count = max(1, min(s.max_batch_size, s.max_batch_tokens // length))
        heads = HeadRequest(logits=True) if spec.is_cross_encoder else HeadRequest(dense=True)
        if spec.kind.value == "bge-m3":
            heads = HeadRequest(dense=True, sparse=True, colbert=True)
        ids = [0] + [5] * (length - 2) + [2]  # any in-vocabulary ids; the shape is what matters
        self.engine.backend.forward(PackedBatch.from_encoded([Encoded(ids=ids)] * count), heads)
        self.engine.backend.warmup()

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
        self.worker.wake()

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
            rate = tokens / seconds
            previous = self.admission.tokens_per_s
            self.admission.tokens_per_s = rate if previous == 0 else 0.8 * previous + 0.2 * rate
