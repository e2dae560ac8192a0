"""Batch forming across requests: a token budget, length-aware, with a short-query lane.

Each request (a `Job`) is split into its sequences (`Item`s). Short sequences wait in their own lane,
so a query never waits behind a bulk upload for more than one batch: when both lanes hold work they
take turns. Within a lane the oldest item seeds the batch, and the batch fills with items of the same
heads whose lengths are closest to the seed's, so a padded backend pads little. Cancelled, failed and
expired jobs are dropped here, before the backend ever sees them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from m3engine.scheduling.batching import batch_cost
from m3engine.types import BatchOutputs, Encoded, HeadRequest, PackedBatch

WINDOW = 2048  # items of a lane considered per batch: bounds the work of forming one


class Outcome(Protocol):
    """Where a job's outputs or error go: an asyncio.Future in one process (the submitter awaits
    it), the engine service's reply in the engine process (it writes to the frontend at once)."""

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...

    def set_result(self, result: BatchOutputs, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...


class Job:
    """One request's sequences, and the outcome its submitter waits on."""

    __slots__ = (
        "deadline",
        "encoded",
        "enqueued_at",
        "forward_s",
        "future",
        "heads",
        "parts",
        "remaining",
        "started",
        "started_at",
    )

    def __init__(
        self,
        encoded: PackedBatch | Sequence[Encoded],
        heads: HeadRequest,
        deadline: float,  # time.monotonic() after which it may no longer start
        future: Outcome,
    ) -> None:
        # one flat array, not one Encoded per sequence: a batch is packed with one np.concatenate,
        # and between processes a job crosses the socket as two byte strings (multiproc/wire.py)
        self.encoded = encoded if isinstance(encoded, PackedBatch) else PackedBatch.from_encoded(encoded)
        self.heads, self.deadline, self.future = heads, deadline, future
        self.parts: list[tuple[list[int], BatchOutputs]] = []
        self.remaining = self.encoded.num_seqs
        self.started = False  # a batch holding one of its items has begun
        self.enqueued_at = time.monotonic()
        self.started_at: float | None = None
        self.forward_s = 0.0

    @property
    def done(self) -> bool:
        return self.future.done()


@dataclass(eq=False, slots=True)
class Item:
    job: Job
    index: int  # position in job.encoded
    length: int
    order: int  # arrival order, for FIFO among equals
    retried: bool = False  # sent back once after its device failed (scheduler.py): never twice


class BatchFormer:
    def __init__(self, max_tokens: int, max_size: int, padded: bool, short_tokens: int) -> None:
        self.max_tokens, self.max_size, self.padded, self.short_tokens = (
            max_tokens,
            max_size,
            padded,
            short_tokens,
        )
        self.short: list[Item] = []
        self.long: list[Item] = []
        self._short_turn = True
        self._counter = itertools.count()

    def add(self, job: Job) -> None:
        for i, length in enumerate(job.encoded.lengths.tolist()):
            item = Item(job, i, length, next(self._counter))
            (self.short if length <= self.short_tokens else self.long).append(item)

    def requeue(self, items: list[Item]) -> None:
        """Items of a batch whose device failed, back at the head of their lanes (they were oldest)."""
        short = [it for it in items if it.length <= self.short_tokens]
        long = [it for it in items if it.length > self.short_tokens]
        self.short[:0], self.long[:0] = short, long

    @property
    def pending(self) -> int:
        return len(self.short) + len(self.long)

    def waited(self, now: float) -> float:
        """Seconds the oldest pending sequence has waited (0 when none): each lane is in arrival order,
        with requeued items (older still) at its head; done jobs at a head are dropped here."""
        oldest = now
        for lane in (self.short, self.long):
            while lane and lane[0].job.future.done():
                del lane[0]
            if lane:
                oldest = min(oldest, lane[0].job.enqueued_at)
        return now - oldest

    def expired(self, now: float) -> list[Job]:
        """Jobs past their deadline that have not started; their items are removed."""
        jobs = {id(it.job): it.job for lane in (self.short, self.long) for it in lane}
        late = [j for j in jobs.values() if not j.started and not j.done and j.deadline <= now]
        if late:
            dead = {id(j) for j in late}
            self.short = [it for it in self.short if id(it.job) not in dead]
            self.long = [it for it in self.long if id(it.job) not in dead]
        return late

    def next_batch(self, max_tokens: int | None = None, padded: bool | None = None) -> list[Item]:
        """The next batch to run (empty when nothing is pending); done jobs' items are discarded.

        `max_tokens` and `padded`: the budget of the worker that asks, when not the former's own (a
        fallback on another kind of device, scheduling/fallback.py)."""
        budget = (
            self.max_tokens if max_tokens is None else max_tokens,
            self.padded if padded is None else padded,
        )
        self.short = [it for it in self.short if not it.job.future.done()]
        self.long = [it for it in self.long if not it.job.future.done()]
        if self.short and self.long:
            lane = self.short if self._short_turn else self.long
            self._short_turn = not self._short_turn
        else:
            lane = self.short or self.long
        if not lane:
            return []
        if self._fits_whole(lane, *budget):  # the usual case under load: no sorting, no second pass
            chosen = lane[:]
            lane.clear()
            return chosen
        chosen = self._fill(lane, *budget)
        taken = {id(it) for it in chosen}
        lane[:] = [it for it in lane if id(it) not in taken]
        return chosen

    def _fits_whole(self, lane: list[Item], max_tokens: int, padded: bool) -> bool:
        """Whether the whole lane is one batch: within the size, the tokens, and of one head request,
        so `_fill` would choose every item of it anyway."""
        if len(lane) > self.max_size:
            return False
        heads = lane[0].job.heads
        if any(it.job.heads is not heads and it.job.heads != heads for it in lane):
            return False
        lengths = [it.length for it in lane]
        return batch_cost(max(lengths), len(lengths), sum(lengths), padded) <= max_tokens

    def _fill(self, lane: list[Item], max_tokens: int, padded: bool) -> list[Item]:
        seed = lane[0]
        heads = seed.job.heads
        window = [it for it in lane[1:WINDOW] if it.job.heads is heads or it.job.heads == heads]
        window.sort(key=lambda it: (abs(it.length - seed.length), it.order))
        chosen, longest, total = [seed], seed.length, seed.length
        for it in window:
            if len(chosen) >= self.max_size:
                break
            width = max(longest, it.length)
            if batch_cost(width, len(chosen) + 1, total + it.length, padded) > max_tokens:
                continue  # a shorter item further on may still fit
            chosen.append(it)
            longest, total = width, total + it.length
        return chosen
