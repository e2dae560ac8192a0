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


@pytest.mark.parametrize("max_seqs", [256, 64, 3])
def test_every_batch_the_planner_forms_lands_in_a_warmed_bucket(max_seqs: int) -> None:
    """The scheduler's batches (plan_batches under the default budget) of any mix of lengths: each
    one small enough for a graph lands in a bucket that the warm-up captures."""
    import random

    from m3engine.backends.fast.graphs import MAX_TOKENS, MIN_SEQUENCE
    from m3engine.scheduling.batching import plan_batches

    warmed = set(warmup_buckets(MAX_TOKENS, max_seqs))
    assert len(warmed) <= 128  # the runner's cap
    rng = random.Random(0)
    seen = set()
    for _ in range(400):
        top = rng.choice([8, 48, 512, 8192])
        lengths = [rng.randint(MIN_SEQUENCE, top) for _ in range(rng.randint(1, 300))]
        for batch in plan_batches(lengths, 16384, max_seqs, False):
            sizes = [lengths[i] for i in batch]
            key = choose_bucket(sum(sizes), len(sizes), max(sizes), MAX_TOKENS)
            assert key is None or key in warmed, key
            seen.add(key)
    assert len(seen) > 20  # the workloads reached many buckets, not a few


def test_a_bucket_is_captured_the_second_time_it_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """GraphRunner's policy, with the capture itself stubbed (it needs CUDA): a shape asked for once
    runs eagerly, the second ask captures, later asks replay; the ladder captures at once; past
    max_graphs nothing new is captured or counted."""
    import torch

    from m3engine.backends.fast import graphs

    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    captures: list[BucketKey] = []

    def fake_capture(self: graphs.GraphRunner, key: BucketKey) -> object:
        captures.append(key)
        return object()

    monkeypatch.setattr(graphs.GraphRunner, "_capture", fake_capture)
    runner = graphs.GraphRunner(
        lambda inputs: torch.empty(0), torch.device("cpu"), 8192, max_tokens=4096, max_graphs=7
    )
    assert graphs.CAPTURE_AFTER == 2
    assert runner.bucket(100, 1, 100) is None  # first ask: eager
    key = runner.bucket(100, 1, 100)
    assert key is not None and captures == []
    runner.get(key)
    assert captures == [key] and runner.captured == [key]
    assert runner.bucket(100, 1, 100) == key and runner.bucket(120, 1, 120) == key  # same bucket: replay
    assert runner.capture_ladder(32, 4) == 6 and len(captures) == 7  # 16 and 32 x 1, 2, 4 seqs, at once
    assert runner.bucket(3000, 1, 3000) is None and runner.bucket(3000, 1, 3000) is None  # over max_graphs
    assert runner.bucket(5000, 1, 5000) is None  # over max_tokens


def test_a_capture_never_holds_a_sequence_longer_than_the_model_takes() -> None:
    """A bucket of one 4,096-token sequence, captured for a model of 1,024 positions: the
    placeholder sequence stops at the model's limit; the rows after it belong to no sequence."""
    from m3engine.backends.fast.graphs import capture_cu_seqlens

    assert capture_cu_seqlens(BucketKey(tokens=4096, seqs=1, max_len=4096), 1024).tolist() == [0, 1024]
    assert capture_cu_seqlens(BucketKey(tokens=4096, seqs=2, max_len=4096), 8192).tolist() == [0, 2048, 4096]
    assert capture_cu_seqlens(BucketKey(tokens=16, seqs=16, max_len=16), 512).tolist() == list(range(17))
