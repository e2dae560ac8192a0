"""Microseconds per refused request through the app alone (no uvicorn, no socket), per middleware layer.

    PYTHONPATH=src:. python docs/bench/server-cpu-overload/asgi_refusal.py /tmp/tiny/bge-m3

The model directory: `python -m tests.checkpoints /tmp/tiny` makes one. The admission budget is made
full by hand, so every call is answered by the gate (server/gate.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from m3engine.server import create_app
from m3engine.settings import ServerSettings
from tests.api.conftest import fake_engine

CALLS = 5000


async def main(model: Path) -> None:
    app = create_app(ServerSettings(warmup=False, max_concurrent_requests=1), [fake_engine(model)])
    state = app.state.server
    state.started = True
    for served in state.models:
        served.scheduler.worker.alive = True  # ready, without starting the worker
    state.admission.requests = 1  # full: every request is refused
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/embed", "raw_path": b"/embed", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"20")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"inputs": "hello"}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app({**scope, "state": {}}, receive, send)  # builds the middleware stack
    layer: Any = app.middleware_stack
    while layer is not None:
        start = time.perf_counter()
        for _ in range(CALLS):
            await layer({**scope, "state": {}}, receive, send)
        print(f"{type(layer).__name__:>28} and inward: {(time.perf_counter() - start) / CALLS * 1e6:6.1f} us")
        if type(layer).__name__ == "OverloadGate":
            break
        layer = getattr(layer, "app", None)
    assert set(statuses) == {429}, set(statuses)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
