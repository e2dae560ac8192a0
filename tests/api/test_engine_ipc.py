"""The engine service and a frontend's client in one event loop, over a real unix socket: the IPC
path of `serve --frontends N` (results, deadlines, cancels, OOM splits) without starting processes
(tests/api/test_frontends.py runs the real ones)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
import pytest

from m3engine.engine import Engine
from m3engine.errors import DeadlineExceededError, OutOfMemoryError
from m3engine.metrics import Metrics
from m3engine.scheduling.admission import Admission
from m3engine.server.multiproc.engine_service import EngineService
from m3engine.server.multiproc.remote import EngineClient, RemoteScheduler
from m3engine.settings import ServerSettings
from m3engine.tasks.options import EmbedOptions
from tests.api.conftest import backend_of

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def remote(engine: Engine) -> AsyncIterator[RemoteScheduler]:
    workdir = tempfile.mkdtemp(prefix="m3e-ipc-")  # short: a unix socket path has ~100 bytes
    service = EngineService.build([engine], ServerSettings(), Metrics())
    await service.start(f"{workdir}/engine.sock")
    client, models = await EngineClient.connect(f"{workdir}/engine.sock", frontend=0)
    client.start()
    pool = ThreadPoolExecutor(2)
    try:
        yield RemoteScheduler(0, models[0], client, Admission(64, 1_000_000), pool)
    finally:
        await client.close()
        await service.stop()
        pool.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_results_equal_the_in_process_engines(m3_fake: Engine) -> None:
    one = ["a single query"]
    many = [f"text number {i} " + "word " * (i % 7) for i in range(40)]  # 40 > 16 a batch: reassembled
    async with remote(m3_fake) as scheduler:
        outs = await asyncio.gather(
            scheduler.submit(
                lambda t: t.embed(one, EmbedOptions(sparse=True, colbert=True)), [14], deadline_s=30
            ),
            scheduler.submit(
                lambda t: t.embed(many, EmbedOptions(sparse=True)), [len(x) for x in many], deadline_s=30
            ),
        )
    for texts, served in zip((one, many), outs, strict=True):
        local = m3_fake.embed(texts, sparse=True, colbert=texts is one)
        for s, x in zip(served, local, strict=True):
            assert s.dense is not None and x.dense is not None and np.allclose(s.dense, x.dense)
            assert s.sparse is not None and x.sparse is not None
            assert s.sparse.indices.tolist() == x.sparse.indices.tolist()
            assert np.allclose(s.sparse.values, x.sparse.values)
            if texts is one:
                assert s.colbert is not None and x.colbert is not None and np.allclose(s.colbert, x.colbert)


async def test_deadline_fails_with_503_and_never_runs(m3_fake: Engine) -> None:
    backend = backend_of(m3_fake)
    backend.delay_s = 0.4
    async with remote(m3_fake) as scheduler:
        busy = asyncio.ensure_future(
            scheduler.submit(lambda t: t.embed("keeps it busy"), [13], deadline_s=30)
        )
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeadlineExceededError):
            await scheduler.submit(lambda t: t.embed("late text"), [9], deadline_s=0.1)
        assert asyncio.get_running_loop().time() - started < 0.3  # at its deadline, not after the batch
        await busy
        await asyncio.sleep(0.5)
    assert m3_fake.tokenizer.encode(["late text"], 100)[0].ids not in backend.seen


async def test_a_cancelled_job_never_runs(m3_fake: Engine) -> None:
    backend = backend_of(m3_fake)
    backend.delay_s = 0.3
    async with remote(m3_fake) as scheduler:
        busy = asyncio.ensure_future(
            scheduler.submit(lambda t: t.embed("keeps it busy"), [13], deadline_s=30)
        )
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(scheduler.submit(lambda t: t.embed("gone"), [4], deadline_s=30))
        await asyncio.sleep(0.05)
        gone.cancel()  # the HTTP client disconnected
        await busy
        await asyncio.sleep(0.4)
        assert scheduler.client.in_flight == 0
    assert m3_fake.tokenizer.encode(["gone"], 100)[0].ids not in backend.seen


async def test_oom_splits_then_fails_only_with_oom(m3_fake: Engine) -> None:
    backend = backend_of(m3_fake)
    texts = ["one text", "two texts", "three texts", "four texts"]
    lengths = [len(e) for e in m3_fake.tokenizer.encode(texts, 100)]
    backend.oom_over_tokens = max(lengths) * 2  # four fail together; two at a time fit
    async with remote(m3_fake) as scheduler:
        out = await scheduler.submit(lambda t: t.embed(texts), [len(x) for x in texts], deadline_s=30)
        assert len(out) == 4
        backend.oom_over_tokens = 1  # even one sequence fails
        with pytest.raises(OutOfMemoryError):
            await scheduler.submit(lambda t: t.embed(texts), [len(x) for x in texts], deadline_s=30)


async def test_ready_waits_until_every_frontend_serves_and_stays_after_one_leaves(m3_fake: Engine) -> None:
    """The kernel spreads connections only over the frontends that listen: /ready says 503 until
    every frontend has served, and a frontend that goes away later does not take the rest out."""
    workdir = tempfile.mkdtemp(prefix="m3e-ipc-")
    service = EngineService.build([m3_fake], ServerSettings(frontends=2), Metrics())
    await service.start(f"{workdir}/engine.sock")
    clients = [(await EngineClient.connect(f"{workdir}/engine.sock", frontend=i))[0] for i in range(2)]

    async def serving_seen_by(client: EngineClient, count: int) -> None:
        async with asyncio.timeout(5):
            while client.status.frontends_serving != count:
                await asyncio.sleep(0.01)

    try:
        assert not service.ready and service.frontends_serving == 0
        clients[0].serving(0)
        await serving_seen_by(clients[1], 1)
        assert not service.ready
        clients[1].serving(1)
        await serving_seen_by(clients[0], 2)
        assert service.ready
        await clients[1].close()  # a frontend exits; its restart connects again later
        await asyncio.sleep(0.05)
        assert service.ready and service.frontends_serving == 2
    finally:
        for client in clients:
            await client.close()
        await service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
