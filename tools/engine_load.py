"""CPU per request of the engine process alone, under the load `serve --frontends N` gives it.

A child process runs the `EngineService` (by default on the fake backend: zero delay, no compute)
on a unix socket; this process plays N frontends with `EngineClient`s, keeping C jobs in flight over
them (one query of 6-48 token ids each), so the engine sees the batches of a fast server without the
HTTP frontends' own CPU in the way. Prints requests/s and the child's CPU ms per request (its event
loop thread apart). Runs against the branch before this wire format too (it sends Encoded lists).

    PYTHONPATH=src python tools/engine_load.py /tmp/fakem3 --frontends 6 --concurrency 64 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import signal
import tempfile
import time
from pathlib import Path
from typing import Any


def _engine(model: str, backend: str, socket_path: str, metrics_dir: str) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from m3engine.metrics import Metrics
    from m3engine.server.multiproc.engine_service import EngineService
    from m3engine.server.serving import load_engines
    from m3engine.settings import EngineSettings, ServerSettings

    async def serve() -> None:
        server = ServerSettings(frontends=2)
        engines = load_engines(EngineSettings(model=model, backend=backend, device="cpu"), server)
        service = EngineService.build(engines, server, Metrics())
        await service.start(socket_path, warmup=False)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await service.stop()

    asyncio.run(serve())


def _cpu(pid: int, task: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(socket_path: str, frontends: int, concurrency: int, duration: float) -> int:
    from m3engine.server.multiproc.remote import EngineClient
    from m3engine.types import Encoded, HeadRequest

    try:  # this branch's wire form, or the list of Encoded of the one before it
        from m3engine.scheduling.sequences import Sequences

        def payload(e: Encoded) -> Any:
            return Sequences.from_encoded([e]).to_wire()
    except ImportError:

        def payload(e: Encoded) -> Any:
            return [e]

    rng = random.Random(0)
    queries = [payload(Encoded(ids=[0, *[rng.randint(5, 250)] * rng.randint(4, 46), 2])) for _ in range(512)]
    clients = [(await EngineClient.connect(socket_path, i))[0] for i in range(frontends)]
    for client in clients:
        client.start()
    heads = HeadRequest(dense=True)
    done = 0
    stop_at = time.monotonic() + duration

    async def one(client: EngineClient, k: int) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            _, future = client.submit(0, queries[k % len(queries)], heads, time.monotonic() + 30)
            await future
            done, k = done + 1, k + 1

    await asyncio.gather(*(one(clients[i % frontends], i * 7) for i in range(concurrency)))
    for client in clients:
        await client.close()
    return done


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--frontends", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--backend", default="fake", help="fake (no model compute), or fast / reference")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="m3engine-load-")
    socket_path, metrics_dir = f"{work}/engine.sock", f"{work}/metrics"
    os.mkdir(metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    child = multiprocessing.get_context("spawn").Process(
        target=_engine, args=(a.model, a.backend, socket_path, metrics_dir)
    )
    child.start()
    assert child.pid is not None
    while not os.path.exists(socket_path):
        time.sleep(0.1)
    try:
        asyncio.run(_load(socket_path, a.frontends, a.concurrency, 2))  # warm
        cpu0, loop0 = _cpu(child.pid), _cpu(child.pid, child.pid)
        begin = time.monotonic()
        n = asyncio.run(_load(socket_path, a.frontends, a.concurrency, a.duration))
        elapsed = time.monotonic() - begin
        cpu, loop = _cpu(child.pid) - cpu0, _cpu(child.pid, child.pid) - loop0
    finally:
        child.terminate()
        child.join()
    print(
        f"frontends {a.frontends} c{a.concurrency}: {n / elapsed:.0f} req/s; engine CPU per request "
        f"{1000 * cpu / n:.3f} ms (event loop {1000 * loop / n:.3f} ms)"
    )


if __name__ == "__main__":
    main()
