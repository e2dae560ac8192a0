"""`m3engine serve --frontends 2` as real processes on loopback: one engine process, two HTTP frontends.

The promises of the single-process server hold across processes: the same outputs, one admission
budget for the whole server decided in each frontend (fast 429s), a disconnected client's job never
runs, SIGTERM drains, a dead worker turns every frontend's /ready 503 and the server exits 3, a
killed frontend is restarted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from m3engine.engine import Engine
from tests.api.frontend_server import FRONTEND, FrontendServer, client_on, raw_socket_on
from tests.fakes import BACKEND

SLOW_FORWARD_S = 1.0


def metric(text: str, name: str) -> float:
    """The value of one sample line (0 when absent), e.g. metric(text, 'm3engine_ready')."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_metric(server: FrontendServer, name: str, at_least: float, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while metric(server.metrics(), name) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} did not reach {at_least}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def real(bge_m3_dir: Path) -> Iterator[FrontendServer]:
    """The tiny BGE-M3 on the reference backend (real weights, CPU)."""
    server = FrontendServer(bge_m3_dir)
    try:
        server.wait_all_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slow(bge_m3_dir: Path) -> Iterator[FrontendServer]:
    """The fake backend, 1 s per forward pass of one sequence; 2 admitted requests: 1 per frontend."""
    server = FrontendServer(
        bge_m3_dir,
        *("--backend", BACKEND, "--max-batch-size", "1", "--max-concurrent-requests", "2"),
        *("--shutdown-timeout", "20"),
        env={"M3ENGINE_FAKE_DELAY_S": str(SLOW_FORWARD_S)},
    )
    try:
        server.wait_all_ready()
        yield server
    finally:
        server.stop()


def test_openai_sdk_gets_the_in_process_engines_vectors(
    real: FrontendServer, bge_m3: Engine, bge_m3_dir: Path
) -> None:
    import openai

    client = openai.OpenAI(base_url=real.url + "/v1", api_key="unused", max_retries=0)
    texts = ["What is BGE-M3?", "Dense, sparse and ColBERT from one pass.", "a third text"]
    out = client.embeddings.create(model=bge_m3_dir.name, input=texts)
    direct = bge_m3.embed(texts)
    for served, local in zip(out.data, direct, strict=True):
        assert np.allclose(served.embedding, local.dense, atol=1e-5)
    m3 = httpx.post(real.url + "/v1/embed_m3", json={"inputs": texts[0], "return_sparse": True}).json()
    sparse = bge_m3.embed(texts[:1], dense=False, sparse=True)[0].sparse
    assert sparse is not None and m3["data"][0]["sparse"]["indices"] == sparse.indices.tolist()


def test_concurrent_clients_all_succeed_on_both_frontends(real: FrontendServer) -> None:
    ok = 'm3engine_requests_total{outcome="ok",route="/embed"}'
    before = metric(real.metrics(), ok)
    answers: list[tuple[int, str]] = []

    def client(i: int) -> None:
        for j in range(6):  # a new connection each time: the kernel picks a frontend per connection
            r = httpx.post(
                real.url + "/embed", json={"inputs": [f"client {i} request {j}", "and more"]}, timeout=30
            )
            answers.append((r.status_code, r.headers.get(FRONTEND, "")))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [status for status, _ in answers] == [200] * 48
    assert {frontend for _, frontend in answers} == {"0", "1"}
    text = real.metrics()
    assert metric(text, ok) - before == 48  # counted in two processes, summed by /metrics
    for engine_side in ("m3engine_batch_size_count", "m3engine_batch_tokens_sum", "m3engine_ready"):
        assert metric(text, engine_side) > 0, engine_side
    assert re.search(r'^m3engine_tokens_total\{model="[^"]+"\} [1-9]', text, re.MULTILINE)
    for present in ("m3engine_queue_depth{", "m3engine_gpu_memory_bytes ", "m3engine_admitted_tokens "):
        assert present in text, present
    assert 'm3engine_stage_seconds_count{stage="forward"}' in text


def test_a_killed_frontend_is_restarted(real: FrontendServer) -> None:
    http = client_on(real.url, "0")
    old = http.get("/info").json()["frontend"]
    http.close()
    assert old["index"] == 0 and old["of"] == 2
    subprocess.run(["kill", "-9", str(old["pid"])], check=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            r = httpx.get(real.url + "/info", timeout=5)
            if r.json()["frontend"]["index"] == 0 and r.json()["frontend"]["pid"] != old["pid"]:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "frontend 0 was not restarted"
        time.sleep(0.1)
    assert httpx.post(real.url + "/embed", json={"inputs": "still served"}, timeout=30).status_code == 200
    assert real.proc.poll() is None


def test_the_servers_budget_holds_across_frontends_and_refuses_fast(slow: FrontendServer) -> None:
    """2 admitted requests for the whole server: one in flight on each frontend fills it."""
    clients = {name: client_on(slow.url, name) for name in ("0", "1")}
    results: dict[str, int] = {}
    busy = [
        threading.Thread(
            target=lambda n=name: results.update(
                {n: clients[n].post("/embed", json={"inputs": n}).status_code}
            )
        )
        for name in ("0", "1")
    ]
    for t in busy:
        t.start()
    wait_metric(slow, "m3engine_admitted_requests", 2)  # one held by each frontend
    for name in ("0", "1"):  # each frontend holds one and refuses a second: it counts the other's
        http = client_on(slow.url, name)
        start = time.monotonic()
        refused = http.post("/embed", json={"inputs": "no room"})
        assert refused.status_code == 429 and time.monotonic() - start < SLOW_FORWARD_S / 2
        assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error_type"] == "overloaded"
        # Refused before the body is read (server/gate.py, against the shared budget): not even JSON.
        unread = http.post(
            "/v1/embeddings", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert unread.status_code == 429 and unread.json()["error"]["type"] == "overloaded"
        http.close()
    for t in busy:
        t.join()
    assert results == {"0": 200, "1": 200}
    for http in clients.values():
        http.close()


def test_disconnected_client_is_never_executed(slow: FrontendServer) -> None:
    forwarded = "m3engine_batch_size_sum"  # sequences the backend ran
    before = metric(slow.metrics(), forwarded)
    busy_client = client_on(slow.url, "0")
    busy = threading.Thread(target=lambda: busy_client.post("/embed", json={"inputs": "busy worker"}))
    busy.start()
    wait_metric(slow, "m3engine_admitted_requests", 1)
    sock = raw_socket_on(slow.url, "1")  # the other frontend: it has a free admission slot
    body = b'{"inputs": "gone before its turn"}'
    sock.sendall(
        b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    time.sleep(0.2)
    sock.close()  # hangs up while its job waits behind the busy one
    busy.join()
    busy_client.close()
    time.sleep(SLOW_FORWARD_S + 0.3)  # the worker would have run it by now
    text = slow.metrics()
    assert metric(text, forwarded) - before == 1
    assert metric(text, 'm3engine_requests_total{outcome="cancelled",route="/embed"}') == 1
    assert metric(text, "m3engine_admitted_requests") == 0


def test_sigterm_drains_every_frontend_and_exits_zero(slow: FrontendServer) -> None:
    results: dict[str, int] = {}
    clients = {name: client_on(slow.url, name) for name in ("0", "1")}
    threads = [
        threading.Thread(
            target=lambda n=name: results.update(
                {n: clients[n].post("/embed", json={"inputs": f"in flight {n}"}).status_code}
            )
        )
        for name in clients
    ]
    for t in threads:
        t.start()
    wait_metric(slow, "m3engine_admitted_requests", 2)  # ~2 s of work: one sequence per forward pass
    started = time.monotonic()
    slow.signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    assert results == {"0": 200, "1": 200}
    assert slow.proc.wait(timeout=40) == 0
    assert time.monotonic() - started >= 0.8  # it waited for the work, it did not abort it
    for http in clients.values():
        http.close()


def test_worker_death_turns_every_frontend_unready_then_exits_3(bge_m3_dir: Path) -> None:
    # The warm-up is forward pass 1; the first request's batch (pass 2) kills the worker.
    args, env = ("--backend", BACKEND), {"M3ENGINE_FAKE_DIE_AFTER": "1"}
    staying = FrontendServer(bge_m3_dir, *args, "--no-exit-on-worker-death", env=env)
    exiting = FrontendServer(bge_m3_dir, *args, env=env)  # both start at once: the waits overlap
    try:
        for server in (staying, exiting):
            server.wait_all_ready()
            r = httpx.post(server.url + "/embed", json={"inputs": "this batch kills the worker"}, timeout=10)
            assert r.status_code == 503 and r.json()["error_type"] == "not_ready"
        assert exiting.proc.wait(timeout=30) == 3
        unready: set[str] = set()
        deadline = time.monotonic() + 20
        while unready != {"0", "1"}:
            assert time.monotonic() < deadline, f"frontends that said 503: {unready}"
            r = httpx.get(staying.url + "/ready", timeout=5)  # a new connection each time
            if r.status_code == 503:
                assert "worker" in r.json()["reason"]
                unready.add(r.headers[FRONTEND])
        assert httpx.get(staying.url + "/live").status_code == 200
        staying.signal(signal.SIGTERM)
        assert staying.proc.wait(timeout=30) == 0
    finally:
        staying.stop()
        exiting.stop()


def test_every_process_runs_uvloop_and_httptools(real: FrontendServer) -> None:
    pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    for name in ("0", "1"):
        http = client_on(real.url, name)
        runtime = http.get("/info").json()["runtime"]
        assert (runtime["loop"], runtime["http"]) == ("uvloop.Loop", "httptools")
        assert runtime["gc_frozen_objects"] > 10_000  # --gc-freeze is on by default
        http.close()


def test_every_process_reports_its_loop_lag_and_gc_pauses(real: FrontendServer) -> None:
    from m3engine.bench.loop_stats import scrape, server_loops

    before = scrape(real.url)
    for _ in range(20):  # allocations enough for young collections in whichever frontend answers
        assert httpx.post(real.url + "/embed", json={"inputs": ["a", "b"]}, timeout=30).status_code == 200
    time.sleep(0.3)
    report = server_loops(before, scrape(real.url))
    assert report is not None and set(report) == {"main", "frontend-0", "frontend-1"}
    assert all(p["lag_ticks"] >= 10 for p in report.values()), report
    assert sum(p["gc"].get("0", {}).get("count", 0) for p in report.values()) > 0, report


def test_a_frontend_never_imports_torch() -> None:
    code = (
        "import sys, m3engine.server.multiproc.frontend; assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path("src").resolve())}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
