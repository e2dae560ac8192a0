"""The event-loop lag and GC pause metrics of a server process, and its frozen start-up heap
(`--gc-freeze`, on by default), as /metrics and /info show them."""

from __future__ import annotations

import asyncio
import gc
import re
import time

import pytest

from m3engine.bench.loop_stats import scrape, server_loops
from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.conftest import MakeClient
from tests.api.live import LiveServer

pytestmark = pytest.mark.anyio


def sample(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_metrics_count_loop_ticks_and_gc_pauses(make_client: MakeClient, m3_fake: Engine) -> None:
    http = await make_client([m3_fake]).start()
    gc.collect()  # a full collection while the app runs: a generation-2 pause of this process
    await asyncio.sleep(0.1)  # the watch ticks every 10 ms and hands the pauses over then
    text = (await http.get("/metrics")).text
    assert sample(text, 'm3engine_event_loop_lag_seconds_count{process="main"}') >= 3
    assert sample(text, 'm3engine_gc_pause_seconds_count{generation="2",process="main"}') >= 1
    assert sample(text, 'm3engine_gc_pause_seconds_sum{generation="2",process="main"}') > 0
    assert 'm3engine_event_loop_stalls_total{cause="gc",process="main"}' in text


@pytest.mark.parametrize("freeze", [True, False])
async def test_info_shows_the_setting_and_the_frozen_heap(
    make_client: MakeClient, m3_fake: Engine, freeze: bool
) -> None:
    http = await make_client([m3_fake], gc_freeze=freeze).start()
    info = (await http.get("/info")).json()
    assert info["server"]["gc_freeze"] is freeze
    frozen = info["runtime"]["gc_frozen_objects"]
    assert frozen > 10_000 if freeze else frozen == 0  # FastAPI, pydantic, torch: far more than that


def test_freeze_is_undone_when_the_server_stops(m3_fake: Engine) -> None:
    with LiveServer([m3_fake], ServerSettings()):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_bench_reads_the_servers_loop_stats_of_a_run(m3_fake: Engine) -> None:
    with LiveServer([m3_fake], ServerSettings()) as server:
        before = scrape(server.url)
        gc.collect()
        time.sleep(0.2)
        report = server_loops(before, scrape(server.url))
    assert report is not None and set(report) == {"main"}
    main = report["main"]
    assert main["lag_ticks"] >= 5 and main["lag"]["p99_ms"] is not None
    assert main["gc"]["2"]["count"] >= 1 and main["gc"]["2"]["total_ms"] > 0
    assert server_loops(None, before) is None


async def test_slow_callbacks_are_logged_when_asked(
    make_client: MakeClient, m3_fake: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    http = await make_client([m3_fake], slow_callback_ms=5).start()
    loop = asyncio.get_running_loop()
    assert loop.get_debug() and loop.slow_callback_duration == 0.005
    with caplog.at_level("WARNING", logger="asyncio"):
        loop.call_soon(time.sleep, 0.02)  # holds the loop for 20 ms
        await asyncio.sleep(0.05)
    assert any("sleep" in r.getMessage() and "took" in r.getMessage() for r in caplog.records)
    assert (await http.get("/info")).json()["server"]["slow_callback_ms"] == 5
