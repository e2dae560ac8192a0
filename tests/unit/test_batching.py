from __future__ import annotations

import random

import pytest

from m3engine.scheduling.batching import plan_batches


@pytest.mark.parametrize("padded", [True, False])
def test_every_input_once_and_budget_kept(padded: bool) -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 600) for _ in range(500)]
    batches = plan_batches(lengths, max_tokens=2048, max_size=64, padded=padded)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        cost = max(sizes) * len(sizes) if padded else sum(sizes)
        assert len(batch) <= 64
        assert cost <= 2048 or len(batch) == 1
        assert sizes == sorted(sizes, reverse=True)  # longest first inside a batch


def test_padded_budget_counts_padding() -> None:
    lengths = [1000, 10, 10, 10]
    assert plan_batches(lengths, 2000, 64, padded=True) == [[0, 1], [2, 3]]
    assert plan_batches(lengths, 2000, 64, padded=False) == [[0, 1, 2, 3]]


def test_an_input_over_the_budget_runs_alone() -> None:
    assert plan_batches([5000, 3, 4], 1000, 8, padded=False) == [[0], [2, 1]]


def test_max_size_caps_a_batch() -> None:
    assert [len(b) for b in plan_batches([1] * 10, 10_000, 4, padded=False)] == [4, 4, 2]
