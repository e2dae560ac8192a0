"""Batch forming across requests: a token budget, length-aware, with a short-query lane.

Each request (a `Job`) is split into its sequences (`Item`s). Short sequences wait in their own lane,
so a query never waits behind a bulk upload for more than one batch: when both lanes hold work they
take turns. Within a lane the oldest item seeds the batch, and the batch fills with items of the same
heads whose lengths are closest to the seed's, so a padded backend pads little. Cancelled, failed and
expired jobs are dropped here, before the backend ever sees them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from m3engine.types import BatchOutputs, Encoded, HeadRequest

WINDOW = 2048  # items of a lane considered per batch: bounds the work of forming one


@dataclass(eq=False)
class Job:
    """One request's sequences, and the future its submitter waits on."""

    encoded: list[Encoded]
    heads: HeadRequest
    deadline: float  # time.monotonic() after which it may no longer start
    future: asyncio.Future[BatchOutputs]
    parts: list[tuple[list[int], BatchOutputs]] = field(default_factory=list)
    remaining: int = 0
    started: bool = False  # a batch holding one of its items has begun
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    forward_s: float = 0.0

    def __post_init__(self) -> None:
        self.remaining = len(self.encoded)

    @property
    def done(self) -> bool:
        return self.future.done()


@dataclass(eq=False)
class Item:
    job: Job
    index: int  # position in job.encoded
    length: int
    order: int  # arrival order, for FIFO among equals


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
        for i, enc in enumerate(job.encoded):
            item = Item(job, i, len(enc), next(self._counter))
            (self.short if item.length <= self.short_tokens else self.long).append(item)

    @property
    def pending(self) -> int:
        return len(self.short) + len(self.long)

    def expired(self, now: float) -> list[Job]:
        """Jobs past their deadline that have not started; their items are removed."""
        jobs = {id(it.job): it.job for lane in (self.short, self.long) for it in lane}
        late = [j for j in jobs.values() if not j.started and not j.done and j.deadline <= now]
        if late:
            dead = {id(j) for j in late}
            self.short = [it for it in self.short if id(it.job) not in dead]
            self.long = [it for it in self.long if id(it.job) not in dead]
        return late

    def next_batch(self) -> list[Item]:
        """The next batch to run (empty when nothing is pending); done jobs' items are discarded."""
        self.short = [it for it in self.short if not it.job.done]
        self.long = [it for it in self.long if not it.job.done]
        if self.short and self.long:
            lane = self.short if self._short_turn else self.long
            self._short_turn = not self._short_turn
        else:
            lane = self.short or self.long
        if not lane:
            return []
        chosen = self._fill(lane)
        taken = {id(it) for it in chosen}
        lane[:] = [it for it in lane if id(it) not in taken]
        return chosen

    def _fill(self, lane: list[Item]) -> list[Item]:
        seed = lane[0]
        window = [it for it in lane[1:WINDOW] if it.job.heads == seed.job.heads]
        window.sort(key=lambda it: (abs(it.length - seed.length), it.order))
        chosen, longest, total = [seed], seed.length, seed.length
        for it in window:
            if len(chosen) >= self.max_size:
                break
            width = max(longest, it.length)
            cost = width * (len(chosen) + 1) if self.padded else total + it.length
            if cost > self.max_tokens:
                continue  # a shorter item further on may still fit
            chosen.append(it)
            longest, total = width, total + it.length
        return chosen
