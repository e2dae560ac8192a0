"""One Ray Serve replica: the models and the FastAPI app of `m3engine serve`, called over a handle.

The ingress deployment (serve.py) forwards each HTTP request here whole (method, path, query,
headers, body) and gets the whole answer back, so every route, auth check, limit and error is the
app's own. The app's lifespan runs as in a server: start-up warms every model up and starts its
worker before the replica takes requests; on shutdown admitted requests drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from m3engine.settings import EngineSettings, ServerSettings

Headers = list[tuple[bytes, bytes]]
# (method, path, query string, headers, body) and (status, headers, body)
WireRequest = tuple[str, str, bytes, Headers, bytes]
WireResponse = tuple[int, Headers, bytes]


class M3EngineReplica:
    async def __init__(self, engine: EngineSettings, server: ServerSettings) -> None:  # type: ignore[misc]
        # Ray Serve awaits an async constructor: the replica is not routed to before it returns.
        from m3engine.server import logs
        from m3engine.server.app import create_app
        from m3engine.server.loading import load_engines

        logs.configure(server.log_level)
        engines = await asyncio.to_thread(load_engines, engine, server)
        self.app = create_app(server, engines)
        self.state = self.app.state.server
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()

    async def http(self, request: WireRequest) -> WireResponse:
        """Run one HTTP request through the app (ASGI), as uvicorn would."""
        method, path, query, headers, body = request
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent = asyncio.Event()
        delivered = False
        status, out_headers, chunks = 500, [], []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await sent.wait()  # the client is there until the answer is: no disconnect before
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status, out_headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    sent.set()

        try:
            await self.app(scope, receive, send)
        finally:
            sent.set()
        return status, out_headers, b"".join(chunks)

    def check_health(self) -> None:
        """Ray Serve's health check: a replica whose worker died (the app's /ready is 503) fails it,
        and Ray Serve replaces the replica."""
        if not self.state.ready and not self.state.draining:
            raise RuntimeError(f"m3engine replica not ready: {self.state.not_ready_reason()}")

    async def __del__(self) -> None:
        """Ray Serve calls this on a graceful shutdown: admitted requests drain (--shutdown-timeout)."""
        await self._lifespan.__aexit__(None, None, None)
