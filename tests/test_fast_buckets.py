"""Which CUDA-graph bucket a packed batch lands in (pure arithmetic: runs without a GPU)."""

from __future__ import annotations

import pytest

from m3engine.backends.fast.graphs import TOKEN_LADDER, BucketKey, choose_bucket, warmup_buckets


def test_single_short_text_gets_a_tight_bucket() -> None:
    assert choose_bucket(128, 1, 128, 4096) == BucketKey(tokens=128, seqs=1, max_len=128)
    assert choose_bucket(7, 1, 7, 4096) == BucketKey(tokens=16, seqs=1, max_len=16)


def test_bucket_holds_the_batch() -> None:
    for tokens in range(1, 4097, 37):
        for seqs in (1, 3, 8, 33):
            if seqs > tokens:
                continue
            max_len = tokens - seqs + 1  # one long sequence, the others one token each
            key = choose_bucket(tokens, seqs, max_len, 4096)
            assert key is not None
            assert key.tokens >= tokens and key.seqs >= seqs and key.max_len >= max_len
            assert key.max_len <= key.tokens
            assert key.tokens in TOKEN_LADDER


def test_over_budget_runs_eager() -> None:
    assert choose_bucket(4097, 2, 4000, 4096) is None
    assert choose_bucket(600, 2, 300, 512) is None


@pytest.mark.parametrize("seqs", [1, 2, 5, 17, 100])
def test_sequence_count_rounds_to_power_of_two(seqs: int) -> None:
    key = choose_bucket(1000, seqs, 50, 4096)
    assert key is not None and key.seqs & (key.seqs - 1) == 0 and key.seqs >= seqs


def test_a_mixed_query_workload_lands_in_the_warmed_buckets() -> None:
    """Batches of 1-64 queries of 6-48 tokens: every bucket they need is captured at start-up."""
    import random

    warmed = set(warmup_buckets(2048))
    assert len(warmed) <= 128  # the runner's cap
    rng = random.Random(0)
    for _ in range(2000):
        lengths = [rng.randint(6, 48) for _ in range(rng.randint(1, 64))]
        key = choose_bucket(sum(lengths), len(lengths), max(lengths), 2048)
        assert key in warmed, key
