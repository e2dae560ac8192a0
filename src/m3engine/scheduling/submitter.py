"""The server's one submit path, whichever process runs the model.

`Scheduler` (the model in this process) and `RemoteScheduler` (the model in the engine process,
reached over IPC from an HTTP frontend) are both `Submitter`s: a request is admitted and tokenized
the same way (admission.py, in the tokenizer pool), then each runs the tokenized task its own way.
`server/submit.py` and the routes do not know which one they talk to.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any, NamedTuple, TypeVar

from m3engine.scheduling.admission import Admission, AnswerHold, admitted
from m3engine.scheduling.timings import Timings
from m3engine.tasks.answer_size import answer_bytes
from m3engine.tasks.builder import Prepared, TaskBuilder

R = TypeVar("R")
Prepare = Callable[[TaskBuilder], Prepared[R]]  # validate and tokenize one request's task


class Serving(NamedTuple):
    """Who runs a model's batches now, as /ready and /info show it (scheduling/fallback.py)."""

    by: str  # "primary", "fallback", or "primary+fallback" (the queue waits past --fallback-after-s)
    degraded: str | None  # why the fallback takes batches; None while the primary serves alone


PRIMARY = Serving("primary", None)


class Submitter(ABC):
    name: str
    admission: Admission
    tokenize_pool: Executor | None

    @property
    @abstractmethod
    def tasks(self) -> TaskBuilder: ...

    @property
    @abstractmethod
    def alive(self) -> bool: ...

    @property
    def serving(self) -> Serving:
        """Who runs this model's batches now; the primary alone unless a --fallback serves."""
        return PRIMARY

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def submit(
        self,
        prepare: Prepare[R],
        char_counts: Sequence[int],
        *,
        deadline_s: float,
        timings: Timings | None = None,
        tokens: int | None = None,
        keep_answer: Callable[[AnswerHold], None] | None = None,
    ) -> R:
        """Admit, tokenize (`prepare`), run in shared batches, and `finish`; raises M3EngineError.

        `tokens`: a reservation better than `char_counts` gives; `keep_answer` takes the answer's
        memory reservation, to release once the answer is sent (else released on return)."""
        timings = timings if timings is not None else Timings()
        deadline = time.monotonic() + deadline_s
        bracket = admitted(
            self.admission,
            model=self.name,
            alive=self.alive,
            char_counts=char_counts,
            max_length=self.tasks.spec.max_length,
            pool=self.tokenize_pool,
            tokenize=partial(self.tokenize, prepare),
            timings=timings,
            tokens=tokens,
            answer=self.answer_bytes,
            keep_answer=keep_answer,
        )
        async with bracket as tokenized:
            return await self.run(tokenized, deadline, timings)  # type: ignore[no-any-return]

    def tokenize(self, prepare: Prepare[R]) -> Any:
        """Runs in the tokenizer pool: the prepared task (and whatever else `run` wants made there)."""
        return prepare(self.tasks)

    def prepared(self, tokenized: Any) -> Prepared[Any]:
        """The task in what `tokenize` made."""
        assert isinstance(tokenized, Prepared)
        return tokenized

    def answer_bytes(self, tokenized: Any) -> int:
        return answer_bytes(self.prepared(tokenized), self.tasks.spec)

    @abstractmethod
    async def run(self, tokenized: Any, deadline: float, timings: Timings) -> Any:
        """Run what `tokenize` made before `deadline` (a time.monotonic() value); the task's result."""
