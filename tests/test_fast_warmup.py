"""The fast backend's warm-up plan (pure arithmetic: runs without a GPU): every kernel variant that a
batch the scheduler forms can pick is run at load, and no warm-up pass exceeds the limits."""

from __future__ import annotations

import itertools
import random

import pytest

from m3engine.backends.base import BatchLimits
from m3engine.backends.fast import small_gemm as sg
from m3engine.backends.fast.encoder import LONG_SEQUENCE, per_sequence_faster
from m3engine.backends.fast.graphs import MAX_TOKENS, warmup_buckets
from m3engine.backends.fast.staging import CLS_ROW_STEP, EAGER_ROW_STEP, cls_rows, eager_rows
from m3engine.backends.fast.warmup import (
    LADDER_STEP,
    WarmupPass,
    cls_row_passes,
    eager_row_passes,
    kernel_passes,
    ladder_passes,
    largest_passes,
    placeholder_batch,
)
from m3engine.scheduling.batching import plan_batches
from m3engine.types import HeadRequest

ALL = HeadRequest(dense=True, sparse=True, colbert=True)
DENSE = HeadRequest(dense=True)
SHAPES = list(sg.CONFIGS)  # (n, k) of the products small_gemm has configs for


def configs(rows: int) -> set[object]:
    """The small_gemm configs a product over `rows` rows compiles (cuBLAS past SMALL_M: none)."""
    return {sg.config_for(n, k, rows) for n, k in SHAPES} if rows <= sg.SMALL_M else set()


def paths(lengths: list[int] | tuple[int, ...], heads: HeadRequest) -> tuple[bool, HeadRequest]:
    """A batch's attention kernel (per sequence or varlen) with the heads it feeds."""
    return per_sequence_faster(tuple(lengths)), heads


def all_passes(limits: BatchLimits) -> list[WarmupPass]:
    counts = sg.warmup_token_counts(sg.SMALL_M)
    ladder = ladder_passes(limits, max(counts) + 1)
    return kernel_passes(limits, counts) + ladder + largest_passes(limits, LONG_SEQUENCE)


def warmed(limits: BatchLimits) -> tuple[set[object], set[tuple[bool, HeadRequest]]]:
    """The configs and paths the warm-up passes run."""
    passes = all_passes(limits)
    compiled = set().union(*(configs(sum(p.lengths)) for p in passes))
    return compiled, {paths(p.lengths, p.heads) for p in passes}


@pytest.mark.parametrize(
    "limits",
    [
        BatchLimits(16384, 256, 8192, (ALL, DENSE)),  # BGE-M3's defaults
        BatchLimits(4096, 32, 512, (DENSE,)),  # an embedder with a short limit: no long path
        BatchLimits(16384, 256, 8192, (HeadRequest(logits=True),)),  # a reranker
    ],
)
def test_every_variant_a_planned_batch_picks_is_warmed(limits: BatchLimits) -> None:
    """Random workloads of short, mixed and long inputs, batched as the scheduler batches them
    (plan_batches): each batch's kernel variant is one that a warm-up pass ran."""
    compiled, ran = warmed(limits)
    rng = random.Random(0)
    picked = set()
    for _ in range(300):
        top = rng.choice([12, 300, 2048, limits.max_length])
        lengths = [rng.randint(2, min(top, limits.max_length)) for _ in range(rng.randint(1, 400))]
        for batch in plan_batches(lengths, limits.max_tokens, limits.max_seqs, False):
            sizes = [lengths[i] for i in batch]
            # every row, and (the CLS-only last layer) one row per sequence
            needed = configs(sum(sizes)) | configs(len(sizes))
            assert needed <= compiled, needed - compiled
            for heads in limits.heads:
                assert paths(sizes, heads) in ran, (len(sizes), max(sizes), heads)
            picked |= needed
    assert len(picked) > 3


def test_passes_stay_within_the_limits() -> None:
    limits = BatchLimits(16384, 256, 8192, (ALL, DENSE))
    passes = all_passes(limits)
    for step in passes:
        assert 1 <= len(step.lengths) <= limits.max_seqs
        assert max(step.lengths) <= limits.max_length
        assert sum(step.lengths) <= limits.max_tokens
        batch = placeholder_batch(step.lengths)
        assert tuple(batch.lengths.tolist()) == step.lengths
    # the largest batches fill the budget with every head request: the memory pools' peak
    full = [s for s in passes if sum(s.lengths) == limits.max_tokens]
    assert {s.heads for s in full} == {ALL, DENSE}
    assert any(per_sequence_faster(s.lengths) for s in full) and any(
        not per_sequence_faster(s.lengths) for s in full
    )


def test_a_short_limit_has_no_long_pass() -> None:
    limits = BatchLimits(4096, 32, 512, (DENSE,))
    passes = kernel_passes(limits, [16, 64, 65]) + largest_passes(limits, LONG_SEQUENCE)
    assert not any(per_sequence_faster(p.lengths) for p in passes)
    assert [sum(p.lengths) for p in passes[:3]] == [16, 64, 65]  # the kernel variants first


@pytest.mark.parametrize("max_seqs", [256, 8])
def test_the_ladder_reaches_every_batch_size_within_one_step(max_seqs: int) -> None:
    """Every batch size from the ladder's start to the budget is within LADDER_STEP of a size the
    warm-up ran (cuBLAS chooses its kernel by size range), and no pass exceeds the limits."""
    limits = BatchLimits(16384, max_seqs, 8192, (ALL,))
    ran = [*sorted(sum(p.lengths) for p in ladder_passes(limits, 257)), limits.max_tokens]
    assert ran[0] == 257 and ran == sorted(set(ran))
    assert all(b <= a * LADDER_STEP + 1 for a, b in itertools.pairwise(ran))
    for p in ladder_passes(limits, 257):
        assert len(p.lengths) <= max_seqs and max(p.lengths) <= limits.max_length


@pytest.mark.parametrize(
    "max_tokens, max_seqs, max_length",
    [(16384, 256, 8192), (10000, 8, 8192), (4096, 256, 512), (3000, 256, 8192), (9000, 9, 1000)],
)
def test_every_eager_row_count_is_warmed(max_tokens: int, max_seqs: int, max_length: int) -> None:
    """Each batch too large for the captured graphs runs with its rows rounded up (eager_rows), and
    one warm-up pass ran each such row count: cuBLAS meets no new row count after the warm-up. An
    input longer than the budget is a batch alone, so its length counts too."""
    graphed = max(key.tokens for key in warmup_buckets(min(MAX_TOKENS, max_tokens), max_seqs))
    limits = BatchLimits(max_tokens, max_seqs, max_length, (DENSE,))
    passes = eager_row_passes(limits, graphed)
    ran = [sum(p.lengths) for p in passes]
    assert ran == sorted(set(ran)) and all(rows % EAGER_ROW_STEP == 0 for rows in ran)
    largest = max(max_tokens, max_length)  # the most tokens of one batch (plan_batches)
    assert {eager_rows(t) for t in range(graphed + 1, largest + 1)} == set(ran)
    assert all(p.lengths and max(p.lengths) <= max_length for p in passes)


@pytest.mark.parametrize("max_seqs", [256, 100, 16, 1])
def test_every_cls_row_count_is_warmed(max_seqs: int) -> None:
    """A batch of any number of sequences runs its products over CLS rows (the last layer of a
    CLS-only batch, a classifier) on a row count that a warm-up pass ran, with no more sequences
    than a batch holds."""
    passes = cls_row_passes(BatchLimits(16384, max_seqs, 512, (HeadRequest(logits=True),)))
    warmed = [cls_rows(len(p.lengths)) for p in passes]
    assert warmed == sorted(set(warmed))
    assert {cls_rows(n) for n in range(1, max_seqs + 1)} == set(warmed)
    assert all(len(p.lengths) <= max_seqs and max(p.lengths) == 2 for p in passes)


def test_cls_rows_keep_each_product_on_its_kernel() -> None:
    """Rounding the CLS rows up never moves a product to another small_gemm config or to cuBLAS:
    no new kernel variant, and the warm-up's compiled ones cover the padded counts."""
    for n in range(1, 2 * sg.SMALL_M + 1):
        assert n <= cls_rows(n) < n + CLS_ROW_STEP
        assert configs(cls_rows(n)) == configs(n), n
