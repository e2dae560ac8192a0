"""The cheap refusal: a 429 before routing, body reading and validation while admission is full.

Under overload most requests are refused, and each refusal used to cost what an admitted request
costs up to admission (~0.7 ms of CPU: the body read, FastAPI's routing, JSON decoding, pydantic),
so the event loop spent itself on refusals while the admitted requests waited behind them. This
layer answers those from the admission counts alone, after Auth (a request without a valid key
still gets 401) and before BodyLimit (the body is never read).

It is a pre-check, not the decision: it refuses only when no request could be admitted (every
request slot taken, or no token left); a request that passes can still be refused by `reserve`
when its own tokens do not fit. Only routes that take an admission permit are gated: health,
metrics and info always answer. While the server is not ready (warming up, draining, a worker
dead) it lets requests through to the 503 their route gives.

A body that would fail validation gets 429 here when the server is full (it is never parsed), and
422 once there is room: like TEI, admission is decided before the request is looked at.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from m3engine.server.middleware import send_error
from m3engine.server.state import ServerState


class OverloadGate:
    def __init__(self, app: ASGIApp, state: ServerState, routes: Iterable[str], body_limit: int) -> None:
        self.app, self.state, self.routes = app, state, frozenset(routes)
        self.body_limit = body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.routes:
            error = self.state.admission.refusal()
            if error is not None and self.state.ready:
                scope.setdefault("state", {})["outcome"] = error.label
                headers = error.headers()
                if not self._keeps_connection(scope):
                    headers["Connection"] = "close"
                await send_error(send, scope["path"], error.status, error.label, str(error), headers)
                return
        await self.app(scope, receive, send)

    def _keeps_connection(self, scope: Scope) -> bool:
        """Whether the connection can serve the next request although this body was never read.

        uvicorn reads and discards an unread body to keep the connection. Past the body limit, or of
        unknown length, that could be a long upload: close instead. A client that sent `Expect:
        100-continue` may never send its body after a final answer: its next request would be read
        as this body, so close too."""
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"expect":
                return False
        return length is not None and length.isdigit() and int(length) <= self.body_limit
