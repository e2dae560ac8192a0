"""uvicorn's Server with a draining SIGTERM: /ready turns 503, in-flight requests finish, exit 0."""

from __future__ import annotations

import logging
import signal
import socket
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from m3engine.server.state import ServerState

log = logging.getLogger("m3engine.server")


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose SIGTERM marks the app draining (/ready 503) and exits 0 once drained."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.fatal = False
        state.on_fatal = self._fatal

    def _fatal(self) -> None:
        log.error("a worker died (or, in a frontend, the engine process went away): shutting down")
        self.fatal = True
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        from m3engine.server.runtime import http_name

        # The config is loaded by now: its protocol class is the one that parses every request.
        self.state.http = http_name(self.config.http_protocol_class)
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.state.draining = True
        if sig == signal.SIGTERM and not self.should_exit:
            # uvicorn would re-raise SIGTERM after its graceful shutdown (exit 143); a drained server
            # has done what SIGTERM asks, so it exits 0 instead.
            log.info("SIGTERM: draining", extra={"in_flight": self.state.admission.requests})
            self.should_exit = True
            return
        super().handle_exit(sig, frame)
