"""The admission counts of every HTTP frontend in one shared-memory array, so that each frontend
decides against the whole server's budget without asking anyone (`serve --frontends N`).

Each frontend writes only its own slot (requests, tokens), so no lock crosses processes: a frontend
killed at any instant cannot leave one held, and the parent zeroes the slot of a frontend that died
(its requests died with it). A decision reads every slot; two frontends deciding at the same instant
may each see room for one more, so the sum can pass a budget by at most N - 1 requests.

Splitting the budgets instead (ceil(budget / N) per frontend) would refuse work on one frontend
while another idles: the kernel hands connections to frontends unevenly (measured on the 2-core VM,
64 connections opened at once over 4 frontends: 32/16/15/1 and 25/26/11/2).
"""

from __future__ import annotations

import multiprocessing
from typing import Any


class SharedBudget:
    def __init__(self, frontends: int) -> None:
        # Created in the parent, passed to each frontend at spawn; int64 slots: aligned 8-byte
        # stores and loads are atomic, so a reader never sees half a value.
        self.frontends = frontends
        self._slots: Any = multiprocessing.get_context("spawn").Array("q", 2 * frontends, lock=False)

    def publish(self, frontend: int, requests: int, tokens: int) -> None:
        self._slots[2 * frontend] = requests
        self._slots[2 * frontend + 1] = tokens

    def totals(self) -> tuple[int, int]:
        """(requests, tokens) admitted by all frontends now."""
        values = self._slots[:]
        return sum(values[0::2]), sum(values[1::2])

    def clear(self, frontend: int) -> None:
        self.publish(frontend, 0, 0)
