"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer responses and hide disconnects).

Outermost first: RequestContext (request id, timing headers, metrics, access log, the 500 of an
unexpected error) -> CORS (only when origins are configured; it answers preflights itself) -> Auth ->
OverloadGate (server/gate.py: 429 while admission is full) -> BodyLimit -> the routes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from m3engine.errors import (
    ClientDisconnectedError,
    InternalError,
    RequestTooLargeError,
    UnauthorizedError,
)
from m3engine.metrics import Metrics
from m3engine.server.errors import error_body
from m3engine.server.logs import request_id

log = logging.getLogger("m3engine.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def send_error(
    send: Send, path: str, status: int, label: str, message: str, headers: dict[str, str]
) -> None:
    body = json.dumps(error_body(path, status, label, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    """Request ids, per-stage timing headers, the requests counter and one access-log line per request."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, routes: Iterable[str], frontend: int | None = None
    ) -> None:
        self.app, self.metrics, self.routes = app, metrics, frozenset(routes)
        # With several HTTP frontend processes, which one answered (operators and tests see the spread).
        self.frontend_header = [] if frontend is None else [(b"x-m3engine-frontend", str(frontend).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        state: dict[str, Any] = scope.setdefault("state", {})
        status: int | None = None
        if scope["method"] == "HEAD":
            # HEAD is GET without the body (uvicorn drops it: its own scope still says HEAD), so it
            # meets the same auth and routes as GET.
            scope = {**scope, "method": "GET"}

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"x-request-id", rid.encode()), *self.frontend_header]
                timings = state.get("timings")
                if timings is not None:
                    for name, value in (
                        ("tokenization", timings.tokenize),
                        ("queue", timings.queue),
                        ("inference", timings.forward),
                    ):
                        extra.append((f"x-{name}-time".encode(), f"{value * 1000:.2f}".encode()))
                    extra.append((b"x-total-time", f"{(time.monotonic() - start) * 1000:.2f}".encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if status is not None:
                raise  # the answer is on its way already: uvicorn closes the connection
            # One log line with the traceback, and an answer that carries the request id and closes
            # the connection, so that a client's pooled connection is not reused half-broken.
            log.exception("unhandled error")
            state["outcome"] = InternalError.label
            message = "internal error; the server log has the details under this request id"
            await send_error(
                send_with_headers, scope["path"], 500, InternalError.label, message, {"Connection": "close"}
            )
        finally:
            for hold in state.pop("answer_holds", ()):
                hold.release()  # the answer has been sent (or never will be)
            elapsed = time.monotonic() - start
            path = scope["path"]
            route = path if path in self.routes else "other"
            if status is None:  # no answer from the app: the client went away, or was timed out
                status = state.get("status", ClientDisconnectedError.status)
                state.setdefault("outcome", ClientDisconnectedError.label)
            outcome = state.get("outcome") or ("ok" if status < 400 else "internal")
            self.metrics.count(route, outcome)
            if "timings" in state and outcome == "ok":  # refused requests would skew the stage times
                timings = state["timings"]
                for stage, value in (("tokenize", timings.tokenize), ("queue", timings.queue)):
                    self.metrics.observe_stage(stage, value)
                self.metrics.observe_stage("forward", timings.forward)
                self.metrics.observe_stage("total", elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id.reset(token)


class Auth:
    """Bearer API keys on every route but the public ones; SHA-256 digests compared in constant time."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], public: Iterable[str]) -> None:
        self.app = app
        self.digests = [hashlib.sha256(k.encode()).digest() for k in keys]
        self.public = frozenset(public)

    def _allowed(self, header: bytes) -> bool:
        scheme, _, key = header.decode("latin-1").partition(" ")
        digest = hashlib.sha256(key.strip().encode()).digest()
        # Every key is compared, match or not, so the time taken says nothing about which matched.
        matches = [hmac.compare_digest(digest, d) for d in self.digests]
        return scheme.lower() == "bearer" and any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every method needs the key, OPTIONS too (it would list a route's methods); a CORS preflight
        # never gets here: the CORS layer outside this one answers it.
        if scope["type"] != "http" or not self.digests or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        if not self._allowed(header):
            scope.setdefault("state", {})["outcome"] = UnauthorizedError.label
            message = "missing or invalid API key; send `Authorization: Bearer <key>`"
            await send_error(
                send, scope["path"], 401, UnauthorizedError.label, message, {"WWW-Authenticate": "Bearer"}
            )
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Reads the body while counting (Content-Length is not trusted), then replays it to the app.

    Past the limit it answers 413 without reading further. A body that never comes is the HTTP
    protocol's to time out (server/connections.py): it closes the connection, which ends the read
    here as a disconnect. After the replay, `receive` passes through, so the routes still see the
    client's http.disconnect.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.limit
        chunks: list[bytes] = []
        size = 0
        more = not too_large
        state = scope.setdefault("state", {})
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                state.setdefault("outcome", ClientDisconnectedError.label)  # or the body timed out
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                too_large = True
                break
            chunks.append(chunk)
            more = message.get("more_body", False)
        if too_large:
            state["outcome"] = RequestTooLargeError.label
            message_text = (
                f"request body over the limit of {self.limit} bytes; send fewer or shorter inputs per request"
            )
            await send_error(
                send, scope["path"], 413, RequestTooLargeError.label, message_text, {"Connection": "close"}
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
