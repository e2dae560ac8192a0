"""The batch former and admission on their own: budgets, lanes, cancellation, deadlines."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest

from m3engine.errors import NotReadyError, OverloadedError
from m3engine.scheduling.admission import INLINE_TOKENIZE_CHARS, Admission, admitted, estimate_tokens
from m3engine.scheduling.former import BatchFormer, Job
from m3engine.scheduling.timings import Timings
from m3engine.types import Encoded, HeadRequest

DENSE = HeadRequest(dense=True)


def make_job(loop: asyncio.AbstractEventLoop, lengths: list[int], heads: HeadRequest = DENSE) -> Job:
    encoded = [Encoded(ids=[7] * n) for n in lengths]
    return Job(encoded, heads, deadline=float("inf"), future=loop.create_future())


def drain(former: BatchFormer) -> list[list[tuple[int, int]]]:
    batches = []
    while batch := former.next_batch():
        batches.append([(id(it.job), it.index) for it in batch])
        for it in batch:
            assert it.job.heads == batch[0].job.heads  # one head request per batch
    return batches


@pytest.mark.parametrize("padded", [True, False])
def test_budget_holds_and_every_item_runs_once(padded: bool) -> None:
    loop = asyncio.new_event_loop()
    rng = random.Random(0)
    former = BatchFormer(max_tokens=256, max_size=8, padded=padded, short_tokens=16)
    jobs = [make_job(loop, [rng.randint(3, 120) for _ in range(rng.randint(1, 6))]) for _ in range(40)]
    for job in jobs:
        former.add(job)
    seen: list[tuple[int, int]] = []
    while batch := former.next_batch():
        lengths = [it.length for it in batch]
        cost = max(lengths) * len(lengths) if padded else sum(lengths)
        assert len(batch) <= 8 and (cost <= 256 or len(batch) == 1)
        seen += [(id(it.job), it.index) for it in batch]
    expected = [(id(j), i) for j in jobs for i in range(j.encoded.num_seqs)]
    assert sorted(seen) == sorted(expected)
    loop.close()


def test_cancelled_jobs_never_batched() -> None:
    loop = asyncio.new_event_loop()
    former = BatchFormer(max_tokens=1000, max_size=64, padded=True, short_tokens=16)
    keep, drop = make_job(loop, [5, 6]), make_job(loop, [5, 6, 7])
    former.add(keep)
    former.add(drop)
    drop.future.cancel()
    batches = drain(former)
    assert {j for b in batches for j, _ in b} == {id(keep)}
    loop.close()


def test_short_lane_does_not_wait_behind_bulk() -> None:
    loop = asyncio.new_event_loop()
    former = BatchFormer(max_tokens=200, max_size=4, padded=True, short_tokens=16)
    bulk = make_job(loop, [100] * 20)  # ten batches of two
    former.add(bulk)
    query = make_job(loop, [8])
    former.add(query)
    batches = drain(former)
    position = next(i for i, b in enumerate(batches) if (id(query), 0) in b)
    assert position <= 1  # at most one bulk batch ahead of it


def test_length_aware_grouping_pads_little() -> None:
    loop = asyncio.new_event_loop()
    former = BatchFormer(max_tokens=10_000, max_size=2, padded=True, short_tokens=0)
    job = make_job(loop, [100, 10, 98, 12])
    former.add(job)
    groups = [sorted(int(job.encoded.lengths[i]) for _, i in b) for b in drain(former)]
    assert groups == [[98, 100], [10, 12]]


def test_expired_jobs_are_removed() -> None:
    loop = asyncio.new_event_loop()
    former = BatchFormer(max_tokens=1000, max_size=64, padded=True, short_tokens=16)
    late = Job([Encoded(ids=[1, 2, 3])], DENSE, deadline=5.0, future=loop.create_future())
    on_time = Job([Encoded(ids=[1, 2, 3])], DENSE, deadline=50.0, future=loop.create_future())
    former.add(late)
    former.add(on_time)
    assert former.expired(now=10.0) == [late]
    assert [it.job for it in former.next_batch()] == [on_time]


def test_admission_budgets_and_release() -> None:
    admission = Admission(max_requests=2, max_tokens=100)
    a = admission.reserve(60)
    with pytest.raises(OverloadedError):
        admission.reserve(50)  # tokens full
    b = admission.reserve(30)
    with pytest.raises(OverloadedError):
        admission.reserve(1)  # requests full
    a.resize(20)  # tokenized: fewer than estimated
    assert admission.tokens == 50
    a.release()
    a.release()  # idempotent
    b.release()
    assert admission.requests == 0 and admission.tokens == 0
    big = admission.reserve(10**6)  # larger than the budget: runs alone, takes all of it
    assert big.tokens == 100
    big.release()


def test_refusal_is_the_precheck_of_reserve() -> None:
    admission = Admission(max_requests=2, max_tokens=100)
    assert admission.refusal() is None
    a = admission.reserve(99)
    assert admission.refusal() is None  # one token left: a small request still fits
    with pytest.raises(OverloadedError):
        admission.reserve(5)  # the pre-check passes it, `reserve` decides
    b = admission.reserve(1)
    error = admission.refusal()  # every slot taken: what the gate answers without reading the body
    assert error is not None and error.status == 429 and error.retry_after_s >= 1
    b.release()
    a.resize(50)
    assert admission.refusal() is None
    a.release()


@dataclass
class Tokenized:
    num_tokens: int


def test_admitted_bracket_reserves_shrinks_and_always_releases() -> None:
    asyncio.run(_bracket_checks())


def bracket(
    admission: Admission, alive: bool, chars: list[int], tokenize: Callable[[], Tokenized], timings: Timings
) -> AbstractAsyncContextManager[Tokenized]:
    return admitted(
        admission, model="m", alive=alive, char_counts=chars, max_length=512, pool=None,
        tokenize=tokenize, timings=timings,
    )  # fmt: skip


async def _bracket_checks() -> None:
    admission = Admission(max_requests=4, max_tokens=1000)
    timings = Timings()
    async with bracket(admission, True, [40, 40], lambda: Tokenized(12), timings) as task:
        assert task.num_tokens == 12 and timings.tokens == 12
        assert admission.requests == 1 and admission.tokens == 12  # reserved 88, shrunk to the real 12
    assert admission.requests == 0 and admission.tokens == 0

    def fails() -> Tokenized:
        raise ValueError("tokenizer error")

    with pytest.raises(ValueError):
        async with bracket(admission, True, [40], fails, Timings()):
            pass
    with pytest.raises(RuntimeError):
        async with bracket(admission, True, [40], lambda: Tokenized(3), Timings()):
            raise RuntimeError("the job failed")
    with pytest.raises(NotReadyError):  # not ready: refused before any reservation
        async with bracket(admission, False, [40], lambda: Tokenized(3), Timings()):
            pass
    assert admission.requests == 0 and admission.tokens == 0

    def slow() -> Tokenized:
        time.sleep(0.3)
        return Tokenized(3)

    async def enter() -> None:
        async with bracket(admission, True, [INLINE_TOKENIZE_CHARS + 1], slow, Timings()):
            raise AssertionError("cancelled while tokenizing: the block never runs")

    task = asyncio.create_task(enter())  # a client that disconnects while its text is tokenized
    await asyncio.sleep(0.05)
    assert admission.requests == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The pool is still tokenizing it: the permit is held until it is done, so that admission
    # bounds the pool's work under a storm of disconnects.
    assert admission.requests == 1
    for _ in range(100):
        if admission.requests == 0:
            break
        await asyncio.sleep(0.01)
    assert admission.requests == 0 and admission.tokens == 0


def test_short_requests_are_tokenized_on_the_loop_long_ones_in_the_pool() -> None:
    async def run(chars: int) -> str:
        def which_thread() -> Tokenized:
            names.append(threading.current_thread().name)
            return Tokenized(1)

        names: list[str] = []
        async with bracket(Admission(4, 10_000), True, [chars], which_thread, Timings()):
            pass
        return names[0]

    main = threading.current_thread().name
    assert asyncio.run(run(INLINE_TOKENIZE_CHARS)) == main
    assert asyncio.run(run(INLINE_TOKENIZE_CHARS + 1)) != main


def test_estimate_is_an_upper_bound_capped() -> None:
    assert estimate_tokens([10, 5000], cap=512) == 14 + 512
