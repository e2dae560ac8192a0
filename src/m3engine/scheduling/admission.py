"""Admission: a request budget and a token budget, reserved at entry, before any tokenization.

Every queued or running request holds a `Permit`, so the queue behind admission is bounded by
construction: nothing downstream can overflow, and no bounded channel can fail a put (the class of
crash TEI hit in #470/#811). A request is refused (429) when either budget is full; its reservation
(characters + specials per input, capped at the model's limit) bounds the tokens of nearly any text
(NFKC expands a few ligatures past it), is shrunk to the real count once tokenized, and is returned on
completion, error or cancellation.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Protocol, TypeVar

from m3engine.errors import NotReadyError, OverloadedError
from m3engine.scheduling.shared_budget import SharedBudget
from m3engine.scheduling.timings import Timings

SPECIALS_ALLOWANCE = 4  # special tokens added by any template (<s> .. </s></s> .. </s>)
# Requests of at most this many characters are tokenized on the event loop: one query's tokens and
# wire form cost ~0.08 ms of CPU there, ~0.20 ms through the pool (the hop: ~0.12 ms on the 2-core
# VM); 256 characters take ~0.12 ms to tokenize.
INLINE_TOKENIZE_CHARS = 256


class Counted(Protocol):
    @property
    def num_tokens(self) -> int: ...


P = TypeVar("P", bound=Counted)


def estimate_tokens(char_counts: Iterable[int], cap: int) -> int:
    """Tokens before tokenizing: about one token per character at most (XLM-R, WordPiece), capped."""
    return sum(min(cap, chars + SPECIALS_ALLOWANCE) for chars in char_counts)


class Admission:
    """Two budgets shared by every model the process serves.

    `shared` (HTTP frontends): the budgets are the whole server's, counted over every frontend in
    shared memory; `requests` and `tokens` stay this process's own (drain, metrics)."""

    def __init__(
        self, max_requests: int, max_tokens: int, shared: SharedBudget | None = None, slot: int = 0
    ) -> None:
        if max_requests < 1 or max_tokens < 1:
            raise ValueError("admission budgets must be >= 1")
        self.max_requests, self.max_tokens = max_requests, max_tokens
        self.requests = 0
        self.tokens = 0
        self.tokens_per_s = 0.0  # recent throughput, fed by the worker, for Retry-After
        self._lock = threading.Lock()
        self._shared, self._slot = shared, slot

    def totals(self) -> tuple[int, int]:
        """(requests, tokens) admitted against the budgets: this process's, or every frontend's."""
        return (self.requests, self.tokens) if self._shared is None else self._shared.totals()

    def reserve(self, tokens: int) -> Permit:
        """A permit for `tokens`, or OverloadedError at once (never waits)."""
        # A request larger than the whole budget may still run alone: it takes all of it.
        tokens = max(1, min(tokens, self.max_tokens))
        with self._lock:
            requests, admitted = self.totals()
            if requests + 1 > self.max_requests or admitted + tokens > self.max_tokens:
                raise self._overloaded(requests, admitted)
            self._add(1, tokens)
        return Permit(self, tokens)

    def refusal(self) -> OverloadedError | None:
        """The 429 that every request gets now (no request slot or no token left), else None.

        The server's gate (server/gate.py) asks this before it reads a request's body: no lock, as a
        hint; `reserve` still decides for each request that passes."""
        requests, admitted = self.totals()
        if requests >= self.max_requests or admitted >= self.max_tokens:
            return self._overloaded(requests, admitted)
        return None

    def _overloaded(self, requests: int, admitted: int) -> OverloadedError:
        return OverloadedError(
            f"the server is at capacity ({requests} requests, {admitted} tokens admitted); "
            "retry after the Retry-After delay, or send fewer or shorter inputs per request",
            retry_after_s=self.retry_after_s(admitted),
        )

    def retry_after_s(self, admitted: int) -> int:
        """Seconds until `admitted` tokens have likely drained at the recent throughput, 1 to 30."""
        if self.tokens_per_s <= 0:
            return 1
        return max(1, min(30, math.ceil(admitted / self.tokens_per_s)))

    def _add(self, requests: int, tokens: int) -> None:
        self.requests += requests
        self.tokens += tokens
        if self._shared is not None:
            self._shared.publish(self._slot, self.requests, self.tokens)

    def _resize(self, old: int, new: int) -> None:
        with self._lock:
            self._add(0, new - old)

    def _release(self, tokens: int) -> None:
        with self._lock:
            self._add(-1, -tokens)


class Permit:
    """One request's reservation; `release` is idempotent."""

    def __init__(self, admission: Admission, tokens: int) -> None:
        self._admission, self.tokens, self.released = admission, tokens, False

    def resize(self, tokens: int) -> None:
        """Set the reservation to the real token count (it may only shrink: admission was decided)."""
        tokens = max(1, min(tokens, self.tokens))
        if not self.released and tokens != self.tokens:
            self._admission._resize(self.tokens, tokens)
            self.tokens = tokens

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission._release(self.tokens)


@asynccontextmanager
async def admitted(
    admission: Admission,
    *,
    model: str,
    alive: bool,
    char_counts: Sequence[int],
    max_length: int,
    pool: Executor | None,
    tokenize: Callable[[], P],
    timings: Timings,
) -> AsyncIterator[P]:
    """One request's admission bracket, the same for a local and a remote scheduler: refuse when the
    model is not ready, reserve by the estimated tokens (429 at once), tokenize (in the pool, or here
    when short), shrink the reservation to the real count, and give it back when the block ends,
    however it ends; cancelled while the pool tokenizes it, when the pool is done with it.

        bracket = admitted(admission, model=name, alive=alive, char_counts=sizes, max_length=limit,
                           pool=pool, tokenize=prepare, timings=timings)
        async with bracket as task:
            ...  # queue the task and wait for its outputs
    """
    if not alive:
        raise NotReadyError(f"model {model} is not ready (its worker is not running); retry later")
    start = time.monotonic()
    permit = admission.reserve(estimate_tokens(char_counts, max_length))
    release = True
    try:
        if sum(char_counts) <= INLINE_TOKENIZE_CHARS:
            prepared = tokenize()
        else:
            work = asyncio.get_running_loop().run_in_executor(pool, tokenize)
            try:
                prepared = await asyncio.shield(work)
            except asyncio.CancelledError:
                # The pool runs it to the end all the same: the permit is held until then, so that
                # admission still bounds the pool's work while clients hang up.
                release = False
                work.add_done_callback(partial(_release_when_done, permit))
                raise
        timings.tokenize = time.monotonic() - start
        timings.tokens = prepared.num_tokens
        permit.resize(prepared.num_tokens)
        yield prepared
    finally:
        if release:
            permit.release()


def _release_when_done(permit: Permit, work: asyncio.Future[Any]) -> None:
    permit.release()
    if not work.cancelled():
        work.exception()  # retrieved: nobody waits for it any more
