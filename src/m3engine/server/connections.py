"""What a slow or greedy client can hold: its connection, for a bounded time, and one of a bounded number.

uvicorn closes a keep-alive connection that sends nothing, but not one that trickles its headers a
byte at a time, nor one that declared a body and never sends it, and it caps requests, not open
connections: its `limit_concurrency` answers a bare 503 per request while idle connections still
count. So the HTTP protocol uvicorn runs is wrapped here:

- `header_timeout_s`: from the moment a connection opens, or its last answer was sent, the next
  request's headers must be complete within it; while a request is being answered it does not run.
- `body_timeout_s`: once the headers are in, the body must be complete within it.
  Either one passed: 408 (when nothing was answered yet) and the connection closes.
- `max_connections`: a connection past the cap is answered 503 as soon as it sends something (so
  that its request is read before the close, and the client sees the answer, not a reset), and
  closed; one that sends nothing is closed after the header timeout.

A connection only notes when its current phase must end (a float, per request); one sweep per
server, every quarter of the shorter timeout and at most every second, closes those past it. A
timer per request would cost more than the rest of this (the sweep: ~0.1 ms per 1,000 connections).

    >>> config = uvicorn_config(app, settings, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn

from m3engine.server.runtime import http_options
from m3engine.settings import ServerSettings


def _raw_answer(status: int, reason: str, label: str, message: str) -> bytes:
    body = json.dumps({"error": message, "error_type": label}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Guard:
    """Mixed in before one of uvicorn's HTTP protocol classes (httptools or h11)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024
    _sweep: asyncio.TimerHandle | None = None  # one per server: each server gets its own class
    # what uvicorn's protocol classes have
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    _deadline: float | None = None  # when the headers or the body being waited for are late
    _seen: Any = None  # the request (uvicorn's cycle) whose headers came last
    _over_cap = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._over_cap = len(self.connections) > self.max_connections
        self._deadline = self.loop.time() + self.header_timeout_s
        self._seen = self.cycle
        if type(self)._sweep is None:
            self._schedule_sweep()

    def data_received(self, data: bytes) -> None:
        if self._over_cap:
            if not self.transport.is_closing():
                message = f"over {self.max_connections} open connections (--max-connections); retry later"
                self.transport.write(_raw_answer(503, "Service Unavailable", "too_many_connections", message))
                self.transport.close()
            return
        super().data_received(data)  # type: ignore[misc]
        cycle = self.cycle
        if cycle is not self._seen:  # a request's headers are complete
            self._seen = cycle
            self._deadline = self.loop.time() + self.body_timeout_s if cycle.more_body else None
        elif self._deadline is not None and cycle is not None and not cycle.more_body:
            self._deadline = None  # its body is complete

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._deadline = self.loop.time() + self.header_timeout_s  # for the next request's headers

    def _schedule_sweep(self) -> None:
        interval = min(1.0, self.header_timeout_s / 4, self.body_timeout_s / 4)
        type(self)._sweep = self.loop.call_later(interval, self._sweep_all)

    def _sweep_all(self) -> None:
        type(self)._sweep = None
        now = self.loop.time()
        for protocol in list(self.connections):
            if isinstance(protocol, _Guard) and protocol._deadline is not None and now > protocol._deadline:
                protocol._late()
        if self.connections:
            self._schedule_sweep()

    def _late(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or self._over_cap:
            self.transport.close()
            return
        if cycle is None or cycle.response_complete:
            waited, limit = "headers", self.header_timeout_s
        elif cycle.more_body:
            waited, limit = "body", self.body_timeout_s
        else:
            return  # a request is being answered: the clock restarts after its answer
        if cycle is not None and waited == "body":
            # the route waiting for the body sees the close as a disconnect: its log and metrics
            # say what happened instead
            cycle.scope["state"].update(outcome="request_timeout", status=408)
        if cycle is None or cycle.response_complete or not cycle.response_started:
            message = f"the request {waited} did not arrive within {limit:g} s"
            self.transport.write(_raw_answer(408, "Request Timeout", "request_timeout", message))
        self.transport.close()


def guarded_protocol(settings: ServerSettings, http: str | None = None) -> type:
    """uvicorn's protocol class for `http` ("httptools" or "h11"; default: the best importable) with
    the header and body timeouts and the connection cap of `settings`."""
    name = http or http_options()["http"]
    if name == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    limits = {
        "header_timeout_s": settings.header_timeout_s,
        "body_timeout_s": settings.body_timeout_s,
        "max_connections": settings.max_connections,
    }
    return type(f"Guarded{base.__name__}", (_Guard, base), limits)


def uvicorn_config(
    app: Any, settings: ServerSettings, http: str | None = None, **options: Any
) -> uvicorn.Config:
    """The uvicorn.Config of every server process: the guarded protocol, keep-alive and drain times."""
    defaults = http_options()
    return uvicorn.Config(
        app,
        http=guarded_protocol(settings, http),
        loop=defaults["loop"],
        log_config=None,  # logs.configure set JSON handlers already
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout)),
        # No limit_concurrency: uvicorn would answer its own bare 503s before admission could give
        # a 429 with Retry-After; max_connections caps connections, admission the work.
        **options,
    )
