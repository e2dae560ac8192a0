"""How late this process's event loop runs, and the garbage collector's pauses.

A request waits for the event loop whenever something on it runs long: a callback, a large write,
or a cyclic-GC collection, which stops every thread of the process. Two measurements tell them apart:

- lag: a task asks to wake every `interval_s` and measures how late it woke (the longest a ready
  callback waited at that instant);
- GC pauses: `gc.callbacks` time each collection, by generation.

A tick late by more than `stall_s` is a stall; it is put down to the GC when collections that ran
since the previous tick account for at least half of the lateness.

    watch = LoopWatch(sink)          # sink: lag(seconds), gc(generation, seconds), stall(cause)
    watch.start()                    # in the running loop
    ...
    await watch.stop()

The GC callback only appends to a deque: a metric written from inside a collection could take a
lock that the interrupted code holds (prometheus_client's multiprocess values use a plain Lock).
The task hands the pauses to the sink at its next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from typing import Any, Protocol

INTERVAL_S = 0.01  # a tick costs a few microseconds; a stall of 10 ms or more is seen within one
STALL_S = 0.01


class WatchSink(Protocol):
    def lag(self, seconds: float) -> None: ...

    def gc_pause(self, generation: int, seconds: float) -> None: ...

    def stall(self, cause: str) -> None: ...


class LoopWatch:
    def __init__(self, sink: WatchSink, interval_s: float = INTERVAL_S, stall_s: float = STALL_S) -> None:
        self.sink, self.interval_s, self.stall_s = sink, interval_s, stall_s
        self._pauses: deque[tuple[int, float]] = deque(maxlen=10_000)
        self._gc_start = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self._pauses.append((info["generation"], time.perf_counter() - self._gc_start))

    async def _tick(self) -> None:
        while True:
            # The clock, not loop.time(): uvloop's is the time its current iteration began.
            due = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            late = max(0.0, time.monotonic() - due)
            in_gc = 0.0
            while self._pauses:
                generation, seconds = self._pauses.popleft()
                in_gc += seconds
                self.sink.gc_pause(generation, seconds)
            self.sink.lag(late)
            if late >= self.stall_s:
                self.sink.stall("gc" if in_gc >= late / 2 else "other")


def log_slow_callbacks(threshold_ms: float) -> None:
    """Name what stalls the running loop: asyncio's debug mode logs (logger "asyncio", WARNING) every
    callback or task step that runs longer than the threshold (uvloop does too). Debug mode adds
    bookkeeping to every callback: a diagnostic, not for production. 0 leaves the loop as it is."""
    if threshold_ms > 0:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = threshold_ms / 1000


class Recorder:
    """A sink that keeps everything in lists: for a process without metrics (the load generator)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.pauses: list[tuple[int, float]] = []
        self.stalls: dict[str, int] = {"gc": 0, "other": 0}

    def lag(self, seconds: float) -> None:
        self.lags.append(seconds)

    def gc_pause(self, generation: int, seconds: float) -> None:
        self.pauses.append((generation, seconds))

    def stall(self, cause: str) -> None:
        self.stalls[cause] += 1
