"""server/runtime.py: uvloop and httptools when importable, uvicorn's pure-Python defaults without."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import uvicorn

from m3engine.server import runtime


async def _loop_name() -> str:
    return runtime.loop_name()


def test_picks_httptools_and_uvloop_when_present() -> None:
    pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    options = runtime.http_options()
    assert options == {"http": "httptools", "loop": "uvloop"}
    config = uvicorn.Config(lambda: None, **options)  # type: ignore[arg-type]
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    assert runtime.run(_loop_name()) == "uvloop.Loop"


def test_falls_back_to_the_defaults_without_them() -> None:
    # A fresh interpreter in which neither can be imported (a None entry makes `import` fail).
    code = (
        "import sys, json, asyncio\n"
        "sys.modules['uvloop'] = sys.modules['httptools'] = None\n"
        "from m3engine.server import runtime\n"
        "async def name(): return runtime.loop_name()\n"
        "print(json.dumps([runtime.http_options(), runtime.loop_factory() is None, runtime.run(name())]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path("src").resolve())}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    options, no_factory, loop = json.loads(out.stdout)
    assert options == {"http": "h11", "loop": "asyncio"} and no_factory
    assert loop.startswith("asyncio.") and "uvloop" not in loop


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_info_reports_the_http_implementation_that_runs(http: str) -> None:
    if http == "httptools":
        pytest.importorskip("httptools")
    from m3engine.server.app import build_app
    from m3engine.server.draining import DrainingServer
    from m3engine.server.state import ServerState
    from m3engine.settings import ServerSettings

    app = build_app(ServerState(ServerSettings()))  # no models: /info still answers
    server = DrainingServer(uvicorn.Config(app, port=0, log_config=None, http=http), app.state.server)

    async def info_http() -> str:
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient() as client:
            info = (await client.get(f"http://127.0.0.1:{port}/info")).json()
        server.should_exit = True
        await serving
        return str(info["runtime"]["http"])

    assert asyncio.run(info_http()) == http
