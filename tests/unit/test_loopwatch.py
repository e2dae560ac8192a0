"""LoopWatch: a blocked loop shows as lag and a stall, a collection as a GC pause, and a stall made by
a collection is put down to it."""

from __future__ import annotations

import asyncio
import gc
import time

from m3engine.bench.loop_stats import client_loop
from m3engine.process.loopwatch import LoopWatch, Recorder


async def _watched(action: object, settle_s: float = 0.05) -> Recorder:
    recorder = Recorder()
    watch = LoopWatch(recorder)
    watch.start()
    await asyncio.sleep(0.03)  # a few ticks first
    assert callable(action)
    action()
    await asyncio.sleep(settle_s)
    await watch.stop()
    return recorder


def test_a_blocked_loop_is_lag_and_a_stall_not_put_down_to_the_gc() -> None:
    recorder = asyncio.run(_watched(lambda: time.sleep(0.06)))
    assert max(recorder.lags) >= 0.045
    assert recorder.stalls["other"] >= 1 and recorder.stalls["gc"] == 0
    report = client_loop(recorder)
    assert report["lag"]["max_ms"] >= 45 and report["lag_ticks"] == len(recorder.lags) > 3


def test_a_long_collection_is_a_gen2_pause_and_the_cause_of_its_stall() -> None:
    # ~400k objects in reference cycles: a full collection traverses all of them (tens of ms here).
    heap = [[[] for _ in range(100)] for _ in range(4000)]
    for row in heap:
        row.append(row)

    def collect() -> None:
        start = time.perf_counter()
        gc.collect()
        assert time.perf_counter() - start > 0.01, "the heap is too small to make a stall"

    recorder = asyncio.run(_watched(collect))
    full = [seconds for generation, seconds in recorder.pauses if generation == 2]
    assert full and max(full) > 0.01
    assert recorder.stalls["gc"] >= 1
    assert client_loop(recorder)["gc"]["2"]["count"] == len(full)
    del heap


def test_stop_removes_the_gc_callback() -> None:
    recorder = asyncio.run(_watched(lambda: None))
    assert not any(
        getattr(cb, "__self__", None) is not None and isinstance(cb.__self__, LoopWatch)
        for cb in gc.callbacks
    )
    before = len(recorder.pauses)
    gc.collect()
    assert len(recorder.pauses) == before
