"""The cyclic collector is off during bulk calls and comes back as it was (gcpause.py)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from m3engine import Engine
from m3engine.process import gcpause


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_off_inside_back_on_after_even_on_an_error() -> None:
    with gcpause.gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gcpause.gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with gcpause.gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_calls_on_two_threads_keep_it_off_until_the_last_ends() -> None:
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with gcpause.gc_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with gcpause.gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled(), "the other thread's call still runs"
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_an_engine_bulk_call_runs_with_the_collector_off(bge_m3_dir: Path) -> None:
    engine = Engine.load(str(bge_m3_dir), backend="fast", device="cpu", dtype="fp32", max_batch_tokens=96)
    seen: list[bool] = []
    texts = [f"text number {i} " + "word " * (i % 9) for i in range(40)]
    out = engine.embed(texts, sparse=True, progress=lambda n, t: seen.append(gc.isenabled()))
    assert len(out) == 40 and len(seen) > 1, "ran as several batches"
    assert not any(seen), "the collector ran during the call"
    assert gc.isenabled(), "and is back on after it"
