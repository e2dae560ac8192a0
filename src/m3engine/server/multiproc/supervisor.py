"""`m3engine serve --frontends N`: this process runs the models; N processes speak HTTP.

    this process (the engine)   loads the models, warms them up, runs each model's Scheduler (batch
                                former + worker: every forward pass batches across all frontends),
                                serves the frontends on a unix socket (engine_service.py),
                                and reserves the TCP port
    N frontends (spawned)       uvicorn, each on its own listening socket of that port (SO_REUSEPORT:
                                the kernel spreads new connections over them by a hash, evenly), or on
                                one shared socket where SO_REUSEPORT does not balance (not Linux): HTTP,
                                validation, admission, tokenization, JSON (frontend.py)

One Python process tops out near a thousand small requests a second (the event loop's share of
FastAPI, pydantic and the hand-offs); the frontends spread that work over cores while one process
keeps the GPU and the batches.

Lifecycle:
- SIGTERM or SIGINT: the listener closes, every frontend gets SIGTERM and drains its in-flight
  requests (up to --shutdown-timeout), then the workers stop; exit 0.
- a worker dies: the next status frame turns every frontend's /ready 503, then the same shutdown,
  exit 3 (unless --no-exit-on-worker-death: the server stays up, not ready).
- a frontend dies: it is restarted on the same socket (its own in-flight requests are lost; the
  engine drops their jobs); more than MAX_RESTARTS within RESTART_WINDOW_S: exit 1.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

from m3engine.server.listen import bind_listener, reuse_port_balances
from m3engine.settings import EngineSettings, ServerSettings

# Nothing that imports prometheus_client at module level (m3engine.scheduling, .metrics, .server.app):
# PROMETHEUS_MULTIPROC_DIR must be set first (serve_with_frontends).
if TYPE_CHECKING:
    from m3engine.engine import Engine
    from m3engine.server.multiproc.engine_service import EngineService

log = logging.getLogger("m3engine.server")
MAX_RESTARTS, RESTART_WINDOW_S = 5, 60.0
EXIT_WORKER_DIED, EXIT_FRONTENDS_FAILING = 3, 1


def serve_with_frontends(engine: EngineSettings, server: ServerSettings) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="m3engine-"))  # 0700: only this user reaches the socket
    try:
        (workdir / "metrics").mkdir()
        # Read by prometheus_client when it is first imported (below, and in the frontends, which
        # inherit it): every process then writes its metrics to files that /metrics merges.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "metrics")
        from m3engine.server import runtime
        from m3engine.server.loading import load_engines

        server.check()  # before any process starts: a bad flag fails once, here
        # uvloop when importable: this process's one loop carries every frontend's jobs and results.
        return runtime.run(Supervisor(server, load_engines(engine, server), workdir).run())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class Supervisor:
    def __init__(self, settings: ServerSettings, engines: list[Engine], workdir: Path) -> None:
        self.settings, self.engines, self.workdir = settings, engines, workdir
        assert settings.frontends is not None, "serving.serve resolves --frontends auto first"
        self.frontends = settings.frontends
        self.engine_socket = str(workdir / "engine.sock")
        self.context = multiprocessing.get_context("spawn")  # no forked copy of torch or CUDA state
        self.processes: dict[int, BaseProcess] = {}
        from m3engine.scheduling.shared_budget import SharedBudget

        self.budget = SharedBudget(self.frontends)  # every frontend's admission counts
        self.exit_code = 0
        self.stopping = False
        self._restarts: list[float] = []

    async def run(self) -> int:
        from m3engine.metrics import Metrics
        from m3engine.server.multiproc.engine_service import EngineService

        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        service = EngineService.build(self.engines, self.settings, Metrics())
        service.on_fatal = self._worker_died
        await service.start(self.engine_socket)
        from m3engine.server import runtime

        # torch and the models: the largest heap of all the processes
        frozen = runtime.after_startup(self.settings)
        if frozen:
            log.info("start-up heap frozen", extra={"gc_frozen": frozen})
        self.reuse_port = reuse_port_balances()
        # With SO_REUSEPORT this socket only holds the port (a taken port fails here, once; port 0
        # picks one for all); each frontend listens on its own socket of it.
        self.listener = bind_listener(
            self.settings.host, self.settings.port, reuse_port=self.reuse_port, listen=not self.reuse_port
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, f"{sig.name}: draining", 0)
        for index in range(self.frontends):
            self._spawn(index)
        host, port = self.listener.getsockname()[:2]
        log.info("listening", extra={"host": host, "port": port, "frontends": self.frontends})
        await self._stopped.wait()
        await self._shutdown(service)
        return self.exit_code

    def stop(self, reason: str, code: int) -> None:
        if self.stopping:
            return
        self.stopping, self.exit_code = True, code
        (log.info if code == 0 else log.error)(reason, extra={"frontends": len(self.processes)})
        self._stopped.set()

    def _worker_died(self) -> None:
        if self.settings.exit_on_worker_death:
            self.stop("a worker died: shutting down so that the server is restarted", EXIT_WORKER_DIED)

    def _spawn(self, index: int) -> None:
        from m3engine.server.multiproc.frontend import FrontendConfig, frontend_main

        host, port = self.listener.getsockname()[:2]
        config = FrontendConfig(index, self.frontends, self.engine_socket, self.settings, host, port)
        process = self.context.Process(
            target=frontend_main,
            args=(config, None if self.reuse_port else self.listener, self.budget),
            name=f"m3engine-frontend-{index}",
            daemon=True,
        )
        process.start()
        self.processes[index] = process
        asyncio.get_running_loop().add_reader(process.sentinel, self._exited, index, process)

    def _exited(self, index: int, process: BaseProcess) -> None:
        from prometheus_client import multiprocess

        asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join()
        self.budget.clear(index)  # its admitted requests died with it
        if process.pid is not None:  # its live gauges (admitted, ready) no longer count
            multiprocess.mark_process_dead(process.pid, str(self.workdir / "metrics"))  # type: ignore[no-untyped-call]
        if self.stopping:
            return
        log.error("a frontend exited; restarting it", extra={"frontend": index, "exitcode": process.exitcode})
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            self.stop(
                f"frontends exited {len(self._restarts)} times in {RESTART_WINDOW_S:.0f} s",
                EXIT_FRONTENDS_FAILING,
            )
            return
        self._spawn(index)

    async def _shutdown(self, service: EngineService) -> None:
        """Stop accepting, let every frontend drain (the engine keeps serving them), then stop."""
        self.listener.close()
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()  # SIGTERM: the frontend drains, as a single-process server does
        deadline = time.monotonic() + self.settings.shutdown_timeout + 10
        loop = asyncio.get_running_loop()
        for process in self.processes.values():
            await loop.run_in_executor(None, process.join, max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("a frontend did not exit in time; killing it", extra={"pid": process.pid})
                process.kill()
                process.join()
        await service.stop()
