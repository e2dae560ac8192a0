"""Serving in one process: load the models, then run the app under uvicorn with a draining SIGTERM.

Every flag is a field of EngineSettings (the models) or ServerSettings (the server), and so also an
M3ENGINE_* environment variable, and shown in /info.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from m3engine.backends.choose import cuda_count
from m3engine.process.cpu_quota import available_cpus
from m3engine.server.draining import DrainingServer
from m3engine.server.loading import load_engines, model_names
from m3engine.server.names import assign_aliases
from m3engine.settings import EngineSettings, ServerSettings

if TYPE_CHECKING:
    pass

log = logging.getLogger("m3engine.server")


def serve(engine_settings: EngineSettings, server_settings: ServerSettings) -> int:
    """Load the models and serve until SIGTERM; the process's exit code (3: a worker died)."""
    from m3engine.server import logs

    logs.configure(server_settings.log_level)
    if server_settings.frontends is None:
        count = auto_frontends(engine_settings.device, available_cpus(), engine_settings.backend)
        server_settings = dataclasses.replace(server_settings, frontends=count)
    log.info("loading", extra={"server": server_settings.public(), "engine": engine_settings.public()})
    # a wrong --served-model-name fails here, before minutes of loading (and before any frontend)
    assign_aliases(model_names(engine_settings, server_settings), server_settings.served_model_name)
    if server_settings.frontends != 1:
        from m3engine.server.multiproc.supervisor import serve_with_frontends

        return serve_with_frontends(engine_settings, server_settings)
    from m3engine.server.app import create_app  # after the branch: it imports prometheus_client
    from m3engine.server.connections import uvicorn_config

    app = create_app(server_settings, load_engines(engine_settings, server_settings))
    # httptools and uvloop when importable; timeouts and the connection cap of the settings
    config = uvicorn_config(app, server_settings, host=server_settings.host, port=server_settings.port)
    server = DrainingServer(config, app.state.server)
    server.run()
    return 3 if server.fatal else 0


ENGINE_CPUS = 4  # the engine process's event loop, its launch and collect threads, and one to spare


def auto_frontends(device: str, cpus: int, backend: str = "auto") -> int:
    """HTTP processes for `--frontends auto`: on a GPU the CPUs left beside the engine process (one
    process tops out near a thousand small requests a second); on the CPU one, since the model's
    forward passes want every core."""
    on_cuda = device.startswith("cuda") or (device == "auto" and cuda_count(backend) > 0)
    return max(1, cpus - ENGINE_CPUS) if on_cuda else 1
