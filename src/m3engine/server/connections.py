"""What a slow or greedy client can hold: its connection, for a bounded time, and one of a bounded number.

uvicorn closes a keep-alive connection that sends nothing, but not one that trickles its headers a
byte at a time (each byte restarts nothing and nothing times out), and it caps requests, not open
connections: its `limit_concurrency` answers a bare 503 per request while idle connections still
count. So the HTTP protocol uvicorn runs is wrapped here:

- `header_timeout_s`: from the moment a connection opens, or its last answer was sent, the next
  request's headers must be complete within it; else 408 and the connection closes. While a request
  is being answered the clock does not run.
- `max_connections`: a connection past the cap is answered 503 as soon as it sends something (so
  that its request is read before the close, and the client sees the answer, not a reset), and
  closed; one that sends nothing is closed after the header timeout.

The body's own deadline (`body_timeout_s`) is the BodyLimit middleware's: it reads the body.

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
    max_connections: int = 1024
    # what uvicorn's protocol classes have
    connections: set[Any]
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    _header_timer: asyncio.TimerHandle | None = None
    _header_cycle: Any = None
    _over_cap = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._over_cap = len(self.connections) > self.max_connections
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self._over_cap:
            if not self.transport.is_closing():
                message = f"over {self.max_connections} open connections (--max-connections); retry later"
                self.transport.write(_raw_answer(503, "Service Unavailable", "too_many_connections", message))
                self.transport.close()
            return
        super().data_received(data)  # type: ignore[misc]
        if self._header_timer is not None and self.cycle is not self._header_cycle:
            self._header_timer.cancel()  # a request's headers are complete: a new cycle began
            self._header_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _await_headers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if self._over_cap:
            self.transport.close()
            return
        if busy or self.cycle is not self._header_cycle or self.transport.is_closing():
            return  # a request is being answered: the clock restarts after its answer
        message = f"the request headers did not arrive within {self.header_timeout_s:g} s"
        self.transport.write(_raw_answer(408, "Request Timeout", "request_timeout", message))
        self.transport.close()


def guarded_protocol(settings: ServerSettings, http: str | None = None) -> type:
    """uvicorn's protocol class for `http` ("httptools" or "h11"; default: the best importable) with
    the header timeout and connection cap of `settings`."""
    name = http or http_options()["http"]
    if name == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    return type(
        f"Guarded{base.__name__}",
        (_Guard, base),
        {"header_timeout_s": settings.header_timeout_s, "max_connections": settings.max_connections},
    )


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
