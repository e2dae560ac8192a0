"""A real uvicorn server on 127.0.0.1 (an ephemeral port), run in a thread of the test process."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn

from m3engine.engine import Engine
from m3engine.server import create_app
from m3engine.server.connections import uvicorn_config
from m3engine.settings import ServerSettings


class LiveServer:
    def __init__(self, engines: list[Engine], settings: ServerSettings, http: str = "auto") -> None:
        self.app = create_app(settings, engines)
        # the serving config (server/connections.py): timeouts and the connection cap included
        protocol = None if http == "auto" else http
        config = uvicorn_config(self.app, settings, protocol, host="127.0.0.1", port=0, lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not main thread
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        assert httpx.get(self.url + "/ready").status_code == 200
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
