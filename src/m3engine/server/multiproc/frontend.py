"""One HTTP frontend process of `serve --frontends N` (supervisor.py starts them).

It runs the same FastAPI app and middleware as the single-process server, on the listening socket
that the parent bound (the kernel hands each new connection to one frontend), over a state whose
schedulers are `RemoteScheduler`s: HTTP parsing, validation, admission, tokenization, `finish` and
JSON happen here, the batches in the engine process. Admission is decided here, without a round
trip, against the whole server's budgets: every frontend's counts live in shared memory
(scheduling/shared_budget.py).

It never imports torch: the tokenizers come pickled from the engine process with the model specs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from dataclasses import dataclass

from m3engine.scheduling.admission import Admission
from m3engine.scheduling.shared_budget import SharedBudget
from m3engine.server import logs, runtime
from m3engine.server.app import build_app
from m3engine.server.connections import uvicorn_config
from m3engine.server.draining import DrainingServer
from m3engine.server.listen import bind_listener
from m3engine.server.multiproc.remote import EngineClient, RemoteScheduler
from m3engine.server.multiproc.wire import EngineStatus
from m3engine.server.state import ServerState
from m3engine.settings import ServerSettings

log = logging.getLogger("m3engine.server")
METRICS_TICK_S = 0.25  # this process's gauges (admitted requests and tokens, ready) in the shared files


@dataclass(frozen=True)
class FrontendConfig:
    index: int
    count: int
    engine_socket: str  # the engine process's unix socket
    settings: ServerSettings
    host: str  # the port the engine process reserved (the frontend listens on its own socket of it
    port: int  # when it is given no shared one)


def frontend_main(config: FrontendConfig, listener: socket.socket | None, budget: SharedBudget) -> None:
    """The target of the spawned process."""
    logs.configure(config.settings.log_level)
    sys.exit(runtime.run(serve_frontend(config, listener, budget)))


async def serve_frontend(config: FrontendConfig, listener: socket.socket | None, budget: SharedBudget) -> int:
    """Serve HTTP on `listener` (shared by every frontend), or without one on an own SO_REUSEPORT
    socket of the reserved port."""
    settings = config.settings
    if listener is None:
        listener = bind_listener(config.host, config.port, reuse_port=True)
    client, models = await EngineClient.connect(config.engine_socket, config.index)
    admission = Admission(
        settings.max_concurrent_requests,
        settings.max_queued_tokens,
        shared=budget,
        slot=config.index,
        max_answer_bytes=settings.max_answer_bytes,
    )
    state = ServerState(settings, admission=admission, frontend=config.index)
    schedulers = [
        RemoteScheduler(index, model, client, admission, state.tokenize_pool)
        for index, model in enumerate(models)
    ]
    state.serve([(s.view, s) for s in schedulers])

    def on_status(status: EngineStatus) -> None:
        admission.tokens_per_s = status.tokens_per_s  # for Retry-After: all admitted tokens / this rate

    def peers_waiting() -> str | None:
        serving = client.status.frontends_serving
        return None if serving >= config.count else f"starting: {serving} of {config.count} frontends serve"

    client.on_status = on_status
    state.peers_waiting = peers_waiting
    state.on_started = lambda: client.serving(config.index)
    app = build_app(state)
    # httptools when importable (uvloop: runtime.run above); timeouts and the connection cap
    uv_config = uvicorn_config(app, settings)
    server = DrainingServer(uv_config, state)
    client.on_lost = lambda: state.on_fatal() if state.on_fatal else None
    client.start()
    ticker = asyncio.get_running_loop().create_task(_refresh_metrics(state))
    log.info("frontend started", extra={"frontend": config.index, "of": config.count})
    try:
        await server.serve(sockets=[listener])
    finally:
        ticker.cancel()
        await client.close()
    return 1 if server.fatal else 0


async def _refresh_metrics(state: ServerState) -> None:
    while True:
        state.metrics.ready.set(1 if state.ready else 0)
        state.metrics.refresh()
        await asyncio.sleep(METRICS_TICK_S)
