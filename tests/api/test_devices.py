"""`--devices`: one engine per device behind one queue, in a server; failover when a device fails.

Two fake backends stand for two devices (the routing and failover logic is the same on GPUs)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3engine.engine import Engine
from m3engine.models.spec import inspect_model
from m3engine.settings import EngineSettings
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import TokenIds
from tests.api.conftest import MakeClient
from tests.fakes import BACKEND, FakeBackend

pytestmark = pytest.mark.anyio


def two_device_engine(path: Path, **settings: Any) -> tuple[Engine, list[FakeBackend]]:
    spec = inspect_model(path, name=path.name)
    tokenizer = TextTokenizer.load(path)
    tokens = TokenIds(tokenizer.pad_id, tokenizer.special_ids)
    fakes = [FakeBackend(spec, tokens, device="cpu", delay_s=0.02) for _ in range(2)]
    engine_settings = EngineSettings(model=str(path), backend=BACKEND, devices="cpu,cpu", **settings)
    return Engine(spec, tokenizer, fakes[0], engine_settings, backends=fakes), fakes


async def _embed_many(http: httpx.AsyncClient, count: int) -> list[httpx.Response]:
    texts = [[f"request {i} text {j}" * (1 + j % 3) for j in range(4)] for i in range(count)]
    return await asyncio.gather(*(http.post("/v1/embeddings", json={"input": t}) for t in texts))


async def test_batches_spread_over_both_devices(make_client: MakeClient, bge_m3_dir: Path) -> None:
    engine, fakes = two_device_engine(bge_m3_dir, max_batch_tokens=128, max_batch_size=4)
    http = await make_client([engine]).start()
    replies = await _embed_many(http, 16)
    assert [r.status_code for r in replies] == [200] * 16
    assert all(fake.batches for fake in fakes), "each device ran batches"
    info = (await http.get("/info")).json()["models"][0]["devices"]
    assert [d["device"] for d in info] == ["cpu#0", "cpu#1"]
    assert all(d["healthy"] for d in info)
    metrics = (await http.get("/metrics")).text
    assert 'm3engine_device_tokens_total{device="cpu#1"' in metrics


async def test_failed_device_is_taken_out_and_its_batches_finish(
    make_client: MakeClient, bge_m3_dir: Path
) -> None:
    engine, fakes = two_device_engine(bge_m3_dir, max_batch_tokens=128, max_batch_size=4)
    http = await make_client([engine]).start()
    fakes[1].device_lost = True
    replies = await _embed_many(http, 16)
    assert [r.status_code for r in replies] == [200] * 16, [r.text for r in replies if r.status_code != 200]
    # Every sequence ran exactly once on the healthy device, and the answers are right.
    assert len(fakes[0].seen) == 16 * 4
    assert (await http.get("/ready")).status_code == 200
    devices = (await http.get("/info")).json()["models"][0]["devices"]
    assert [d["healthy"] for d in devices] == [True, False]
    assert "DeviceError" in devices[1]["reason"]
    metrics = (await http.get("/metrics")).text
    assert 'm3engine_device_healthy{device="cpu#1",model=' in metrics
    line = next(x for x in metrics.splitlines() if x.startswith('m3engine_device_healthy{device="cpu#1"'))
    assert line.endswith(" 0.0")


async def test_the_last_device_failing_fails_only_its_batch(
    make_client: MakeClient, bge_m3_dir: Path
) -> None:
    engine, fakes = two_device_engine(bge_m3_dir, max_batch_tokens=128, max_batch_size=4)
    http = await make_client([engine]).start()
    fakes[1].device_lost = True
    assert all(r.status_code == 200 for r in await _embed_many(http, 4))
    fakes[0].device_lost = True  # the last device is never taken out: its batches fail, it stays
    reply = await http.post("/v1/embeddings", json={"input": "x"})
    assert reply.status_code == 503
    fakes[0].device_lost = False
    assert (await http.post("/v1/embeddings", json={"input": "x"})).status_code == 200
    assert (await http.get("/ready")).status_code == 200


async def test_a_dead_worker_hands_its_queue_to_the_other(make_client: MakeClient, bge_m3_dir: Path) -> None:
    engine, fakes = two_device_engine(bge_m3_dir, max_batch_tokens=128, max_batch_size=4)
    http = await make_client([engine], exit_on_worker_death=False).start()
    fakes[0].die = True
    replies = await _embed_many(http, 8)
    assert [r.status_code for r in replies] == [200] * 8
    assert (await http.get("/ready")).status_code == 200
    fakes[1].die = True
    assert (await http.post("/v1/embeddings", json={"input": "x"})).status_code == 503
    assert (await http.get("/ready")).status_code == 503


def test_serve_devices_as_a_process(bge_m3_dir: Path) -> None:
    """`m3engine serve --devices cpu,cpu --frontends 2`: the engine process runs a worker per device."""
    from tests.api.frontend_server import FrontendServer

    server = FrontendServer(bge_m3_dir, "--devices", "cpu,cpu", "--max-batch-tokens", "256")
    try:
        server.wait_all_ready()
        texts = [f"text {i} " * (1 + i % 9) for i in range(64)]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            replies = [http.post("/v1/embeddings", json={"input": texts[i : i + 8]}) for i in range(0, 64, 8)]
            assert [r.status_code for r in replies] == [200] * 8
            devices = http.get("/info").json()["models"][0]["devices"]
        assert [d["device"] for d in devices] == ["cpu#0", "cpu#1"]
        metrics = server.metrics()
        assert 'device="cpu#0"' in metrics and "m3engine_device_healthy" in metrics
    finally:
        server.stop()


def test_every_frontend_shows_a_device_taken_out_while_serving(bge_m3_dir: Path, tmp_path: Path) -> None:
    """`serve --devices cpu,cpu --frontends 2`: a device lost after start is taken out in the engine
    process, and /info on each frontend says so (not the health of the start), while /ready stays 200."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.api.frontend_server import FrontendServer, client_on

    flag = tmp_path / "lose"
    server = FrontendServer(
        bge_m3_dir,
        *("--backend", BACKEND, "--devices", "cpu,cpu", "--max-batch-size", "2"),
        env={"M3ENGINE_FAKE_DELAY_S": "0.02", "M3ENGINE_FAKE_LOSE_DEVICE": str(flag)},
    )
    clients = {}
    try:
        server.wait_all_ready()
        clients = {f: client_on(server.url, f) for f in ("0", "1")}
        for http in clients.values():
            devices = http.get("/info").json()["models"][0]["devices"]
            assert [(d["device"], d["healthy"]) for d in devices] == [("cpu#0", True), ("cpu#1", True)]
        flag.write_text("1")  # the second device fails every batch from now on
        texts = [f"request {i} " * (1 + i % 5) for i in range(64)]
        with ThreadPoolExecutor(8) as pool:  # concurrent: both devices take batches
            replies = list(pool.map(lambda t: httpx.post(server.url + "/embed", json={"inputs": [t]}), texts))
        assert [r.status_code for r in replies] == [200] * 64  # the lost device's batches ran on the other
        for frontend, http in clients.items():
            deadline = time.monotonic() + 10  # the engine sends its status at least every 0.5 s
            while (devices := http.get("/info").json()["models"][0]["devices"])[1]["healthy"]:
                assert time.monotonic() < deadline, f"frontend {frontend} still shows cpu#1 healthy"
                time.sleep(0.05)
            assert devices[0]["healthy"] and devices[0]["reason"] is None
            assert "DeviceError" in devices[1]["reason"] and devices[1]["backend"] == "fake"
            assert http.get("/ready").status_code == 200
    finally:
        for http in clients.values():
            http.close()
        server.stop()
