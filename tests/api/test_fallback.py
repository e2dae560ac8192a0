"""`--fallback cpu`: a standby backend takes the batches while the primary cannot, then hands back.

Real servers on loopback: one in a thread of this process over two fake backends (a primary whose
device is taken away and given back, and the fallback), and `m3engine serve --fallback cpu` as
processes (two HTTP frontends) whose fallback is the real reference backend on the CPU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from m3engine.engine import Engine
from m3engine.models.spec import inspect_model
from m3engine.settings import EngineSettings, ServerSettings
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import TokenIds
from tests.api.frontend_server import FRONTEND, FrontendServer
from tests.api.live import LiveServer
from tests.api.test_frontends import metric
from tests.fakes import BACKEND, FakeBackend

TEXTS = [f"fallback text {i} " + "word " * (i % 5) for i in range(8)]


def engine_with_fallback(path: Path, **settings: Any) -> tuple[Engine, FakeBackend, FakeBackend]:
    spec = inspect_model(path, name=path.name)
    tokenizer = TextTokenizer.load(path)
    tokens = TokenIds(tokenizer.pad_id, tokenizer.special_ids)
    primary, standby = FakeBackend(spec, tokens), FakeBackend(spec, tokens)
    chosen = EngineSettings(model=str(path), backend=BACKEND, fallback="cpu", **settings)
    return Engine(spec, tokenizer, primary, chosen, fallback=standby), primary, standby


def wait_for(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_a_lost_device_sends_batches_to_the_fallback_and_back(bge_m3_dir: Path) -> None:
    engine, primary, standby = engine_with_fallback(
        bge_m3_dir, max_batch_tokens=256, max_batch_size=4, device_probe_s=0.2
    )
    with (
        LiveServer([engine], ServerSettings()) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert http.get("/ready").json() == {"status": "ready"}
        info = http.get("/info").json()
        assert info["degraded"] is None and info["models"][0]["serving"] == "primary"
        assert info["models"][0]["fallback"] == {"backend": "fake", "device": "cpu", "dtype": "fp32"}
        first = http.post("/v1/embeddings", json={"input": TEXTS})
        assert first.status_code == 200
        assert len(primary.seen) == len(TEXTS) and not standby.seen

        primary.device_lost = True
        # the batch that fails on the primary is run by the fallback: no request sees the switch
        replies = [http.post("/v1/embeddings", json={"input": TEXTS[i : i + 2]}) for i in range(0, 8, 2)]
        assert [r.status_code for r in replies] == [200] * 4, [r.text for r in replies]
        assert len(standby.seen) == len(TEXTS) and len(primary.seen) == len(TEXTS)
        got = [row["embedding"] for r in replies for row in r.json()["data"]]
        assert got == [row["embedding"] for row in first.json()["data"]]  # each row back to its text

        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "DeviceError" in ready.json()["reason"]
        model = http.get("/info").json()["models"][0]
        assert model["serving"] == "fallback" and "no primary device" in model["degraded"]
        assert model["devices"][0]["healthy"] is False
        metrics = http.get("/metrics").text
        name = bge_m3_dir.name
        assert metric(metrics, f'm3engine_fallback_batches_total{{model="{name}"}}') >= 4
        assert metric(metrics, f'm3engine_fallback_sequences_total{{model="{name}"}}') == len(TEXTS)
        assert metric(metrics, f'm3engine_device_healthy{{device="cpu",model="{name}"}}') == 0

        primary.device_lost = False  # the probe finds it answering: traffic returns
        wait_for(lambda: http.get("/info").json()["models"][0]["serving"] == "primary")
        assert http.get("/ready").json() == {"status": "ready"}
        before = len(standby.seen)
        assert http.post("/v1/embeddings", json={"input": TEXTS}).status_code == 200
        assert len(standby.seen) == before
        assert len(primary.seen) >= 2 * len(TEXTS)  # the probe's one text besides
        metrics = http.get("/metrics").text
        assert metric(metrics, f'm3engine_device_healthy{{device="cpu",model="{name}"}}') == 1


def test_a_queue_waiting_past_the_limit_is_served_by_both(bge_m3_dir: Path) -> None:
    engine, primary, standby = engine_with_fallback(
        bge_m3_dir, max_batch_size=1, fallback_after_s=0.3, fallback_batch_tokens=64
    )
    primary.delay_s = 1.0  # a stuck or overloaded GPU: every batch takes a second
    with (
        LiveServer([engine], ServerSettings()) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        started = time.monotonic()
        reply = http.post("/v1/embeddings", json={"input": TEXTS})
        assert reply.status_code == 200
        # one text a batch: the primary alone would take 8 s; the fallback takes what waits 0.3 s
        assert time.monotonic() - started < 6
        assert len(standby.seen) >= len(TEXTS) - 3 and primary.seen
        model = http.get("/info").json()["models"][0]
        assert model["devices"][0]["healthy"] is True  # a slow device is not taken out
        assert model["serving"] == "primary"  # the queue is empty again


def test_serve_fallback_cpu_as_processes(bge_m3_dir: Path, bge_m3: Engine, tmp_path: Path) -> None:
    """`m3engine serve --fallback cpu --frontends 2`: the fake primary's device is taken away from
    outside; the reference backend on the CPU answers, every frontend says degraded, then it ends."""
    lost = tmp_path / "lost"
    args = ["--backend", BACKEND, "--fallback", "cpu", "--device-probe-s", "0.2", "--max-batch-size", "4"]
    server = FrontendServer(bge_m3_dir, *args, env={"M3ENGINE_FAKE_LOSE_DEVICE": str(lost)})
    reference = np.array([e.dense for e in bge_m3.embed(TEXTS)])

    def cosines(http: httpx.Client) -> np.ndarray:
        reply = http.post("/v1/embeddings", json={"input": TEXTS})
        assert reply.status_code == 200, reply.text
        got = np.array([row["embedding"] for row in reply.json()["data"]])
        return np.sum(got * reference, axis=1)  # both unit vectors

    try:
        server.wait_all_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            model = http.get("/info").json()["models"][0]
            assert model["fallback"]["backend"] == "reference" and model["serving"] == "primary"
            assert np.all(cosines(http) < 0.9)  # the fake's vectors, not the model's

            lost.write_text("0")  # the fake primary (the process's first fake backend) fails
            assert np.all(cosines(http) > 0.99)  # the failed batch went to the reference on the CPU
            wait_for(lambda: states(server) == {"degraded"})
            assert http.get("/info").json()["models"][0]["serving"] == "fallback"
            name = f'm3engine_fallback_batches_total{{model="{bge_m3_dir}"}}'
            served = metric(server.metrics(), name)
            assert served >= 1

            lost.unlink()
            wait_for(lambda: states(server) == {"ready"})
            assert np.all(cosines(http) < 0.9)
            assert metric(server.metrics(), name) == served
    finally:
        server.stop()


def states(server: FrontendServer) -> set[str]:
    """/ready's status in every frontend (each its own connection)."""
    answers: dict[str, str] = {}
    while len(answers) < server.frontends:
        reply = httpx.get(server.url + "/ready", timeout=5)
        assert reply.status_code == 200
        answers[reply.headers[FRONTEND]] = reply.json()["status"]
    return set(answers.values())
