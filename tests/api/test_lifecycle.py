"""`m3engine serve` as a process: SIGTERM drains in-flight requests, refuses new ones, exits 0."""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.fakes import BACKEND, process_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready in time")


def wait_admitted(url: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = httpx.get(url + "/metrics", timeout=5).text
        if f"m3engine_admitted_requests {count:.1f}" in metrics:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} requests were not admitted in time")


def test_sigterm_drains_in_flight_and_exits_zero(bge_m3_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = process_env(M3ENGINE_FAKE_DELAY_S="0.4")
    cmd = [sys.executable, "-m", "m3engine", "serve", "--model", str(bge_m3_dir), "--backend", BACKEND]
    cmd += ["--port", str(port), "--max-batch-size", "1", "--shutdown-timeout", "20"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_ready(url, proc)
        if importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools"):
            runtime = httpx.get(url + "/info").json()["runtime"]
            assert (runtime["loop"], runtime["http"]) == ("uvloop.Loop", "httptools")  # runtime.py's choice
            assert runtime["gc_frozen_objects"] > 10_000  # --gc-freeze (default): torch, FastAPI, ...
        results: dict[int, int] = {}

        def call(i: int) -> None:
            r = httpx.post(url + "/embed", json={"inputs": f"in flight number {i}"}, timeout=30)
            results[i] = r.status_code

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_admitted(url, 4)  # one batch at a time, 0.4 s each: ~1.6 s of work in flight
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:  # the listener closes at once; a request that still gets through is refused as draining
            late = httpx.post(url + "/embed", json={"inputs": "too late"}, timeout=5)
            assert late.status_code == 503
        except httpx.TransportError:
            pass
        for t in threads:
            t.join(timeout=30)
        assert results == {0: 200, 1: 200, 2: 200, 3: 200}
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started >= 0.8  # it waited for the work, it did not abort it
        logs = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert '"msg": "SIGTERM: draining"' in logs and '"request_id"' in logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_worker_death_exits_the_process_with_code_3(bge_m3_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The warm-up is forward pass 1; the first request's batch (pass 2) kills the worker.
    env = process_env(M3ENGINE_FAKE_DIE_AFTER="1")
    cmd = [sys.executable, "-m", "m3engine", "serve", "--model", str(bge_m3_dir), "--backend", BACKEND]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_ready(url, proc)
        r = httpx.post(url + "/embed", json={"inputs": "this batch kills the worker"}, timeout=10)
        assert r.status_code == 503 and r.json()["error_type"] == "not_ready"
        assert proc.wait(timeout=30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
