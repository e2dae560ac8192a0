"""The rule of `--fallback`'s standby worker (scheduling/fallback.py): when it may take a batch."""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass

import pytest

from m3engine.engine import Engine
from m3engine.errors import DeviceError, InputError
from m3engine.scheduling.devices import DeviceHealth
from m3engine.scheduling.fallback import Standby
from m3engine.scheduling.former import BatchFormer, Job
from m3engine.scheduling.submitter import PRIMARY
from m3engine.settings import EngineSettings
from m3engine.types import Encoded, HeadRequest


@dataclass
class Primary:
    """What the rule reads of a primary device's worker."""

    alive: bool = True


def queued(former: BatchFormer, waited_s: float, lengths: tuple[int, ...] = (8,)) -> Job:
    job = Job(
        [Encoded(ids=[0] + [5] * (n - 2) + [2]) for n in lengths], HeadRequest(dense=True), 1e18, Future()
    )
    job.enqueued_at = time.monotonic() - waited_s
    former.add(job)
    return job


def rule(after_s: float = 2.0) -> tuple[Standby, BatchFormer, Primary, DeviceHealth]:
    former = BatchFormer(max_tokens=1024, max_size=64, padded=False, short_tokens=16)
    primary = Primary()
    health = DeviceHealth(["cuda:0"], [True], [None])
    return Standby([primary], former, health, after_s), former, primary, health  # type: ignore[list-item]


def test_the_fallback_waits_while_the_queue_is_younger_than_the_limit() -> None:
    standby, former, _, _ = rule(after_s=2.0)
    assert standby.hold() == pytest.approx(2.0, abs=0.05)  # nothing queued: look again in a while
    queued(former, waited_s=0.5)
    assert standby.hold() == pytest.approx(1.5, abs=0.05)  # wakes when the oldest text passes 2 s
    assert standby.serving() == PRIMARY


def test_a_queue_past_the_limit_lets_the_fallback_take_batches() -> None:
    standby, former, _, health = rule(after_s=2.0)
    queued(former, waited_s=0.1)
    queued(former, waited_s=2.5, lengths=(40,))  # the long lane's oldest decides too
    assert standby.hold() == 0
    serving = standby.serving()
    assert serving.by == "primary+fallback" and "past --fallback-after-s 2" in str(serving.degraded)
    assert health.healthy == [True]  # a slow device is not taken out


def test_done_jobs_do_not_count_as_waiting() -> None:
    standby, former, _, _ = rule(after_s=2.0)
    old = queued(former, waited_s=5.0)
    old.future.cancel()  # its client went away
    queued(former, waited_s=0.5)
    assert standby.hold() == pytest.approx(1.5, abs=0.05)


def test_no_healthy_primary_sends_every_batch_to_the_fallback() -> None:
    standby, _, primary, health = rule()
    primary.alive = False
    health.take_out(0, DeviceError("lost"))
    assert standby.hold() == 0  # even with nothing queued
    serving = standby.serving()
    assert serving.by == "fallback" and "cuda:0: DeviceError: lost" in str(serving.degraded)
    health.bring_back(0)
    primary.alive = True
    assert standby.serving() == PRIMARY


def test_the_fallback_forms_batches_under_its_own_budget() -> None:
    former = BatchFormer(max_tokens=1024, max_size=64, padded=False, short_tokens=16)
    queued(former, waited_s=0, lengths=(10,) * 10)
    assert len(former.next_batch(max_tokens=30, padded=True)) == 3  # 3 x 10 padded tokens
    assert len(former.next_batch()) == 7  # the rest: the former's own budget


def test_fallback_settings_are_checked() -> None:
    assert EngineSettings(fallback="CPU").fallback_device == "cpu"
    assert EngineSettings(fallback="none").fallback_device is None
    with pytest.raises(InputError, match="--fallback-after-s must be > 0"):
        EngineSettings(fallback="cpu", fallback_after_s=0).check()
    with pytest.raises(InputError, match="--fallback takes cpu or none"):
        Engine.load("no/such-model", fallback="cuda:1")  # refused before anything loads
