"""The one path from a route to the scheduler; routes only shape requests and responses.

    >>> records, model = await submit(request, body.model, "embed", lambda t: t.embed(texts), sizes)

It resolves the model, applies the per-request input limit, sets the deadline (X-Request-Timeout may
only lower the server's), records stage timings for the response headers, and cancels the work when
the client disconnects, so that its sequences never reach the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import Request
from starlette.types import Receive

from m3engine.errors import ClientDisconnectedError, InputError, TooManyInputsError
from m3engine.scheduling.timings import Timings
from m3engine.server.state import ServedModel, ServerState
from m3engine.tasks.builder import Prepared, TaskBuilder

R = TypeVar("R")
TIMEOUT_HEADER = "x-request-timeout"


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def check_count(state: ServerState, count: int, what: str = "inputs") -> None:
    limit = state.settings.max_inputs_per_request
    if count > limit:
        raise TooManyInputsError(
            f"{count} {what} in one request, over the limit of {limit}; split the request into smaller ones"
        )


def deadline_of(request: Request, default_s: float) -> float:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return default_s
    try:
        value = float(raw)
    except ValueError:
        raise InputError("X-Request-Timeout must be a number of seconds, e.g. 2.5") from None
    if not value > 0:
        raise InputError("X-Request-Timeout must be > 0 seconds")
    return min(value, default_s)


async def submit(
    request: Request,
    model: str | None,
    task: str,
    prepare: Callable[[TaskBuilder], Prepared[R]],
    char_counts: Sequence[int],
    inputs: int | None = None,
    tokens: int | None = None,
) -> tuple[R, ServedModel]:
    """`char_counts`: characters per sequence the task will run (for admission); `inputs`: the
    number of inputs the request holds, for the per-request limit (default: one per sequence);
    `tokens`: a better bound of the tokens to admit than `char_counts` gives (chunked documents)."""
    state = server_state(request)
    served = state.resolve(model, task)
    check_count(
        state, len(char_counts) if inputs is None else inputs, "documents" if task == "rerank" else "inputs"
    )
    timings = Timings()
    request.state.timings = timings
    # The answer's memory stays reserved until it has been sent: RequestContext releases it.
    holds = request.scope.setdefault("state", {}).setdefault("answer_holds", [])
    work = asyncio.ensure_future(
        served.scheduler.submit(
            prepare,
            char_counts,
            deadline_s=deadline_of(request, state.settings.deadline_s),
            timings=timings,
            tokens=tokens,
            keep_answer=holds.append,
        )
    )
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request.receive, work))
    try:
        return await work, served
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            raise ClientDisconnectedError("the client disconnected; the request was dropped") from None
        raise
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _cancel_on_disconnect(receive: Receive, work: asyncio.Future[Any]) -> None:
    """Waits for http.disconnect (the body has been read already) and cancels the work."""
    while not work.done():
        message = await receive()
        if message["type"] == "http.disconnect":
            work.cancel()
            return
