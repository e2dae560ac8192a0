"""The passes a load runs so that no batch within the limits meets a cold path.

What a first batch of a new shape can pay for on CUDA, and which pass here pays it at load instead:
- a Triton compile (~0.3 s each, then cached on disk by Triton): every small_gemm config a token
  count can pick (`token_counts`), and each attention kernel (varlen; per sequence for long ones);
- a cuBLAS kernel's first load: batches of a ladder of sizes up to the budget (`ladder_passes`);
- cuBLAS's choice of algorithm for a product's row count, made on the host the first time it meets
  one: an eager batch's rows are rounded up to staging.EAGER_ROW_STEP, and one batch of each such
  count runs through one layer (`eager_row_passes`; every layer's products have the same shapes);
  likewise the products over one row per sequence (a CLS-only batch's last layer after attention, a
  cross-encoder's classifier), their rows rounded up to staging.CLS_ROW_STEP (`cls_row_passes`);
- a first allocation (the caching allocator's and the pinned host rings' blocks, sized by the
  largest batch): a full batch of every head request, short sequences and, where the model takes
  them, long ones; then every buffer of both pinned rings (inputs, outputs) is grown to the largest
  one's size (`even_out`), since those batches ran one at a time and a bulk call keeps several in
  flight (a cudaHostAlloc of 1.4 ms was the one allocation a first rerank made on an H100 host);
- a CUDA graph capture (GraphRunner.capture_ladder): between the two, after every compile (a
  capture must not meet one) and before the largest batches (a capture empties the allocator's
  cache).

Per-batch sizes and alignments are not specialised on (do_not_specialize in the kernels), so one
pass per path covers every batch of that path.
"""

from __future__ import annotations

from dataclasses import dataclass

from m3engine.backends.base import BatchLimits
from m3engine.backends.fast.staging import CLS_ROW_STEP, EAGER_ROW_STEP, cls_rows, eager_rows
from m3engine.types import Encoded, HeadRequest, PackedBatch

SHORT = 256  # the length of the sequences of a full batch of short ones
LADDER_STEP = 1.5  # token counts of the ladder passes grow by this factor


@dataclass(frozen=True)
class WarmupPass:
    lengths: tuple[int, ...]  # one sequence per entry
    heads: HeadRequest
    why: str  # what the pass prepares, for the log and the tests


def _fill(length: int, limits: BatchLimits) -> tuple[int, ...]:
    """As many sequences of `length` as one batch holds (at least one)."""
    count = max(1, min(limits.max_seqs, limits.max_tokens // length))
    return (length,) * count


def kernel_passes(limits: BatchLimits, token_counts: list[int]) -> list[WarmupPass]:
    """One pass per compiled variant of the matrix products: `token_counts` holds a batch size in
    tokens for each (fused.warmup_token_counts)."""
    first = limits.heads[0]
    return [
        WarmupPass(_split(count, limits.max_length), first, f"matrix-product kernels at {count} tokens")
        for count in token_counts
        if count <= limits.max_tokens
    ]


def ladder_passes(limits: BatchLimits, start: int) -> list[WarmupPass]:
    """Batches from `start` tokens up to the budget, each LADDER_STEP times the one before: cuBLAS
    picks its kernel by the product's row count, and loads each kernel on its first use (CUDA's
    lazy module loading), so a first batch of a new size range would pay for the load."""
    passes, tokens = [], max(1, start)
    while tokens < limits.max_tokens:
        length = max(min(SHORT, limits.max_length), -(-tokens // limits.max_seqs))
        passes.append(
            WarmupPass(_split(tokens, length), limits.heads[0], f"cuBLAS kernels at {tokens} tokens")
        )
        tokens = int(tokens * LADDER_STEP) + 1
    return passes


def eager_row_passes(limits: BatchLimits, graphed: int) -> list[WarmupPass]:
    """A batch of each row count an eager batch can have (staging.eager_rows), from the first one
    past `graphed` (the most tokens a captured graph takes) to the largest: the budget's, or one
    input's where the model takes inputs longer than the budget (such an input is a batch alone).
    Only the row count matters here, so a pass may hold more sequences than a batch would."""
    largest = max(limits.max_tokens, limits.max_length)
    passes = []
    for rows in range(eager_rows(graphed + 1), eager_rows(largest) + 1, EAGER_ROW_STEP):
        length = min(limits.max_length, max(SHORT, -(-rows // limits.max_seqs)))
        passes.append(WarmupPass(_split(rows, length), limits.heads[0], f"cuBLAS's choice at {rows} rows"))
    return passes


def cls_row_passes(limits: BatchLimits) -> list[WarmupPass]:
    """A batch for each count of CLS rows (staging.cls_rows) up to the budget's sequences': of
    sequences of two tokens (CLS, SEP), since only their number matters (so at most one budget's
    sequences, though their tokens may exceed the token budget). The backend runs them CLS-only,
    whatever the pass's `heads`."""
    return [
        WarmupPass((2,) * min(rows, limits.max_seqs), limits.heads[0], f"cuBLAS's choice at {rows} CLS rows")
        for rows in range(CLS_ROW_STEP, cls_rows(limits.max_seqs) + 1, CLS_ROW_STEP)
    ]


def largest_passes(limits: BatchLimits, long_sequence: int) -> list[WarmupPass]:
    """Full batches of every head request, of short sequences and (from `long_sequence` up, where
    the backend may attend one sequence at a time: encoder.per_sequence_faster) of long ones."""
    passes = []
    short = min(SHORT, limits.max_length)
    for heads in limits.heads:
        passes.append(WarmupPass(_fill(short, limits), heads, "a full batch of short sequences"))
    if limits.max_length >= long_sequence:
        longest = min(limits.max_length, limits.max_tokens)
        for heads in limits.heads:
            passes.append(WarmupPass(_fill(longest, limits), heads, "a full batch of long sequences"))
    return passes


def _split(tokens: int, max_length: int) -> tuple[int, ...]:
    """`tokens` tokens as sequences of at most `max_length`."""
    full, rest = divmod(tokens, max_length)
    return (max_length,) * full + ((rest,) if rest else ())


def placeholder_batch(lengths: tuple[int, ...]) -> PackedBatch:
    """Sequences of these lengths of ordinary ids (CLS, filler, SEP): only the shapes matter."""
    return PackedBatch.from_encoded([Encoded(ids=([0] + [5] * (n - 2) + [2])[:n]) for n in lengths])
