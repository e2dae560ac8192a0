"""What the server's one submit path needs from a scheduler, whichever process runs the model.

`Scheduler` (the model in this process) and `RemoteScheduler` (the model in the engine process,
reached over IPC from an HTTP frontend) both satisfy `Submitter`, so `server/submit.py` and the
routes do not know which one they talk to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from m3engine.tasks.builder import Prepared, TaskBuilder

R = TypeVar("R")


@dataclass
class Timings:
    """Seconds per stage of one request (response headers and the stage histograms)."""

    tokenize: float = 0.0
    queue: float = 0.0
    forward: float = 0.0
    tokens: int = 0


class Submitter(Protocol):
    @property
    def tasks(self) -> TaskBuilder: ...

    @property
    def alive(self) -> bool: ...

    async def start(self, warmup: bool = True) -> None: ...

    async def stop(self) -> None: ...

    async def submit(
        self,
        prepare: Callable[[TaskBuilder], Prepared[R]],
        char_counts: Sequence[int],
        *,
        deadline_s: float,
        timings: Timings | None = None,
    ) -> R:
        """Admit, tokenize (`prepare`), run in shared batches, and `finish`; raises M3EngineError."""
        ...
