"""`m3engine bench serve` against a real server: the report counts what the server answered."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path

from m3engine.bench.http_report import plot, summarize
from m3engine.bench.serve import run
from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.conftest import backend_of
from tests.api.live import LiveServer


def test_bench_reports_throughput_latency_and_429s(m3_fake: Engine, tmp_path: Path) -> None:
    backend_of(m3_fake).delay_s = 0.02
    settings = dataclasses.replace(ServerSettings(), max_concurrent_requests=4)
    with LiveServer([m3_fake], settings) as server:
        samples, elapsed = asyncio.run(run(server.url, "queries", concurrency=12, duration=1.5))
    summary = summarize(samples, elapsed, {"workload": "queries", "concurrency": 12})
    assert summary["ok"] > 10 and summary["errors_by_status"].get("429", 0) > 0  # 12 clients, 4 admitted
    assert set(summary["errors_by_status"]) <= {"429"}
    assert summary["ok"] + sum(summary["errors_by_status"].values()) == summary["requests"]
    p = summary["latency_ms"]
    assert 0 < p["p50"] <= p["p90"] <= p["p99"]
    # The server's own time (x-total-time) holds the backend's 20 ms and is within the client's.
    inside = summary["diagnostics"]["server_time_ms"]
    assert 20 <= inside["p50"] <= p["p50"]
    assert summary["diagnostics"]["latency_ms_by_frontend"] == {}  # one process: no frontend header
    by_second = summary["diagnostics"]["p99_ms_by_second"]
    assert len(by_second) == math.ceil(elapsed) and all(v is None or v >= 20 for v in by_second)
    plot(samples, summary, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(summary)  # the report is plain JSON


def test_clients_that_honour_retry_after_back_off(m3_fake: Engine) -> None:
    """Immediate retries hammer a full server; clients that wait the retry-after-ms (>= 0.5 s) do not."""
    backend_of(m3_fake).delay_s = 0.05
    settings = dataclasses.replace(ServerSettings(), max_concurrent_requests=2)
    with LiveServer([m3_fake], settings) as server:
        hammer, _ = asyncio.run(run(server.url, "queries", concurrency=10, duration=1.5))
        polite, elapsed = asyncio.run(
            run(server.url, "queries", concurrency=10, duration=1.5, honour_retry_after=True)
        )
    refused = [s for s in polite if s.status == 429]
    # Each of 10 clients waits >= 0.5 s after a 429 within a 1.5 s run: at most 3 refusals each.
    assert 0 < len(refused) <= 30 < sum(s.status == 429 for s in hammer)
    assert all(s.status in (200, 429) for s in polite) and elapsed < 3.5  # no wait past the run's end
    summary = summarize(polite, elapsed, {"workload": "queries", "concurrency": 10})
    assert summary["latency_ms"]["p50"] and summary["error_latency_ms"]["429"]["p50"] >= 0
