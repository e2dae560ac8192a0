"""`m3engine serve`: load the models, then run the app under uvicorn with a draining SIGTERM.

Every flag is a field of EngineSettings (the models) or ServerSettings (the server), and so also an
M3ENGINE_* environment variable, and shown in /info.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import socket
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from m3engine.settings import EngineSettings, ServerSettings, add_arguments, from_sources

if TYPE_CHECKING:
    from m3engine.server.state import ServerState

log = logging.getLogger("m3engine.server")


def add_serve_parser(sub: Any) -> None:
    """Add `serve` to the CLI's subparsers."""
    serve = sub.add_parser(
        "serve",
        help="Serve models over HTTP (OpenAI, TEI, Cohere, Jina and m3engine routes).",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(serve, EngineSettings)
    add_arguments(serve, ServerSettings)
    serve.set_defaults(func=cmd_serve)


def load_engines(engine: EngineSettings, server: ServerSettings) -> list[Any]:
    """--model first (the default for its task), then --reranker, then --extra-models."""
    from m3engine.engine import Engine

    engines = [Engine.from_settings(engine)]
    for name in [server.reranker, *server.extra_models]:
        if name:
            # Per-model limits of --model may not fit another model: the others use their own.
            other = dataclasses.replace(engine, model=name, kind=None, max_length=None, query_max_length=None)
            engines.append(Engine.from_settings(other))
    return engines


def cmd_serve(args: argparse.Namespace) -> int:
    from m3engine.server import logs

    values = vars(args)
    engine_settings: EngineSettings = from_sources(EngineSettings, values)
    server_settings: ServerSettings = from_sources(ServerSettings, values)
    logs.configure(server_settings.log_level)
    log.info("loading", extra={"server": server_settings.public(), "engine": engine_settings.public()})
    if server_settings.frontends != 1:
        from m3engine.server.frontends import serve_with_frontends

        return serve_with_frontends(engine_settings, server_settings)
    from m3engine.server.app import create_app  # after the branch: it imports prometheus_client
    from m3engine.server.runtime import http_options

    app = create_app(server_settings, load_engines(engine_settings, server_settings))
    config = uvicorn.Config(
        app,
        host=server_settings.host,
        port=server_settings.port,
        log_config=None,  # logs.configure set JSON handlers already
        timeout_graceful_shutdown=max(1, round(server_settings.shutdown_timeout)),
        **http_options(),  # httptools and uvloop when importable
        # No limit_concurrency: uvicorn would answer its own bare 503s before admission could give
        # a 429 with Retry-After; admission bounds the work, the body limit bounds each request.
    )
    server = DrainingServer(config, app.state.server)
    server.run()
    return 3 if server.fatal else 0


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
