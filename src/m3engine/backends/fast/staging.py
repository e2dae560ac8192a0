"""A packed batch's integer inputs as one flat array, sent to the device in one copy.

Layout, all int64, for a bucket of `tokens` rows and `seqs` sequences (tokens >= T, seqs >= N):

    [ ids (tokens) | positions (tokens) | token types (tokens) | cu_seqlens (seqs + 1) ]

Rows past T hold zeros; cu_seqlens past N repeat T (empty sequences). Eager batches use the same
layout with seqs = N and tokens = T, rounded up to EAGER_ROW_STEP where graphs run (`eager_rows`);
a CUDA graph's static input buffer *is* this layout, so a batch reaches a graph by one
host-to-device copy, with no extra kernels.

The host side is a ring of pinned buffers reused across batches (a fresh pinned allocation per
batch costs tens of microseconds, a pageable copy is staged by the driver): before one is
overwritten, the copy that last read it is waited for through an event. One buffer is not enough:
a batch's copy is queued behind the kernels of the batch before it, so with batches launched one
ahead of collection, reusing the single buffer made each launch wait for the batch before last
(measured on an H200: the third of three 15 k-token reranker batches launched back to back
waited 13.4 ms instead of taking 6 ms).
"""

from __future__ import annotations

import numpy as np
import torch

from m3engine.backends.fast.inputs import PackedInputs
from m3engine.types import PackedBatch

# cuBLAS picks each product's algorithm on the host the first time it meets a shape, so a batch
# of a row count never seen before pays for it; rounded up to this step, the eager batches of a
# token budget have few row counts, and the warm-up runs each once (warmup.eager_row_passes).
EAGER_ROW_STEP = 128


def eager_rows(tokens: int) -> int:
    """Rows of an eager batch's buffers where graphs run (CUDA in half precision or fp8): its
    tokens rounded up to EAGER_ROW_STEP."""
    return -(-tokens // EAGER_ROW_STEP) * EAGER_ROW_STEP


# Likewise the products that run on one row per sequence (a CLS-only batch's last layer after
# attention, a cross-encoder's classifier): their rows are the sequences', rounded up to this step
# where graphs run (`cls_rows`). It divides each of small_gemm's row bounds and SMALL_M, so the
# rounding never moves a product to another kernel; the warm-up runs each count once
# (warmup.cls_row_passes).
CLS_ROW_STEP = 16


def cls_rows(seqs: int) -> int:
    """Rows of the products over one row per sequence where graphs run: `seqs` rounded up to
    CLS_ROW_STEP."""
    return -(-seqs // CLS_ROW_STEP) * CLS_ROW_STEP


def cls_index(cu_seqlens: torch.Tensor, seqs: int, rows: int) -> torch.Tensor:
    """(rows,) each sequence's first row, then the first sequence's again up to `rows` (>= `seqs`):
    the extra rows are copies that no output reads."""
    assert rows >= seqs, (rows, seqs)  # a negative pad would crop
    if rows == seqs:  # the CPU, CLS-pooled dense vectors: a view, no copy kernel
        return cu_seqlens[:seqs]
    return torch.nn.functional.pad(cu_seqlens[:seqs], (0, rows - seqs))


def flat_size(tokens: int, seqs: int) -> int:
    return 3 * tokens + seqs + 1


def fill_flat(out: np.ndarray, batch: PackedBatch, position_offset: int, tokens: int, seqs: int) -> None:
    """Write `batch` into `out` ((flat_size,) int64) in the layout above."""
    t, n = batch.num_tokens, batch.num_seqs
    assert t <= tokens and n <= seqs, (t, tokens, n, seqs)
    out.fill(0)  # token types of models without segments, and padding rows: no real row reads them
    out[:t] = batch.input_ids
    positions = np.arange(position_offset, position_offset + t, dtype=np.int64)
    if n == 1:  # one text (batch 1): its positions alone, without the per-token starts
        out[tokens : tokens + t] = positions
    else:
        starts = np.repeat(batch.cu_seqlens[:-1], batch.lengths)  # (T,) start of each token's sequence
        np.subtract(positions, starts, out=out[tokens : tokens + t])
    if batch.token_type_ids is not None:
        out[2 * tokens : 2 * tokens + t] = batch.token_type_ids
    out[3 * tokens : 3 * tokens + n + 1] = batch.cu_seqlens
    out[3 * tokens + n + 1 :] = t


def unpack(
    flat: torch.Tensor, tokens: int, seqs: int, max_len: int, lengths: tuple[int, ...]
) -> PackedInputs:
    """PackedInputs viewing a device flat buffer (cu_seqlens converted to int32 for attention)."""
    return PackedInputs(
        input_ids=flat[:tokens],
        positions=flat[tokens : 2 * tokens],
        token_types=flat[2 * tokens : 3 * tokens],
        cu_seqlens=flat[3 * tokens :].to(torch.int32),
        max_len=max_len,
        lengths=lengths,
    )


RING = 4  # pinned buffers in turn: a buffer is reused after three more batches have been staged


class HostStager:
    """Fills pinned buffers in turn and copies each to the device asynchronously."""

    def __init__(self, device: torch.device, ring: int = RING) -> None:
        self._device = device
        self._cuda = device.type == "cuda"
        self._hosts = [torch.empty(0, dtype=torch.int64) for _ in range(ring)]
        self._arrays = [host.numpy() for host in self._hosts]  # numpy views of them (`.numpy()`: ~5 us)
        self._copied: list[torch.cuda.Event | None] = [None] * ring
        self._next = 0

    def _buffer(self, size: int) -> tuple[int, torch.Tensor, np.ndarray]:
        slot, self._next = self._next, (self._next + 1) % len(self._hosts)
        done = self._copied[slot]
        if done is not None:
            done.synchronize()  # the last copy out of this buffer has finished
        host = self._hosts[slot]
        if host.numel() < size:
            self._replace(slot, max(size, 2 * host.numel()))
        return slot, self._hosts[slot][:size], self._arrays[slot][:size]

    def _replace(self, slot: int, size: int) -> None:
        """A new pinned buffer of `size` in `slot` (its last copy out must have finished)."""
        host = torch.empty(size, dtype=torch.int64, pin_memory=self._cuda)
        self._hosts[slot], self._arrays[slot] = host, host.numpy()

    def even_out(self) -> None:
        """Grow every buffer to the largest one's size: the warm-up's largest batches sized only some
        of the ring, and a first bulk call that met a small one paid for pinning (warmup.py)."""
        largest = max(host.numel() for host in self._hosts)
        for slot, done in enumerate(self._copied):
            if self._hosts[slot].numel() < largest:
                if done is not None:
                    done.synchronize()
                self._replace(slot, largest)

    def stage(
        self,
        batch: PackedBatch,
        position_offset: int,
        tokens: int,
        seqs: int,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The batch's flat inputs on the device: copied into `out` if given, else a new tensor."""
        size = flat_size(tokens, seqs)
        slot, host, array = self._buffer(size)
        fill_flat(array, batch, position_offset, tokens, seqs)
        if not self._cuda:
            return host.clone() if out is None else out.copy_(host)
        dst = out if out is not None else torch.empty(size, dtype=torch.int64, device=self._device)
        dst.copy_(host, non_blocking=True)
        done = torch.cuda.Event()  # type: ignore[no-untyped-call]
        done.record()
        self._copied[slot] = done
        return dst
