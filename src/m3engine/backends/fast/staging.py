"""A packed batch's integer inputs as one flat array, sent to the device in one copy.

Layout, all int64, for a bucket of `tokens` rows and `seqs` sequences (tokens >= T, seqs >= N):

    [ ids (tokens) | positions (tokens) | token types (tokens) | cu_seqlens (seqs + 1) ]

Rows past T hold zeros; cu_seqlens past N repeat T (empty sequences). Eager batches use the same
layout with tokens = T and seqs = N; a CUDA graph's static input buffer *is* this layout, so a
batch reaches a graph by one host-to-device copy, with no extra kernels.

The host side is one pinned buffer reused across batches (a fresh pinned allocation per batch
costs tens of microseconds, a pageable copy is staged by the driver): before it is overwritten,
the copy that last read it is waited for through an event.
"""

from __future__ import annotations

import numpy as np
import torch

from m3engine.backends.fast.encoder import PackedInputs
from m3engine.types import PackedBatch


def flat_size(tokens: int, seqs: int) -> int:
    return 3 * tokens + seqs + 1


def fill_flat(out: np.ndarray, batch: PackedBatch, position_offset: int, tokens: int, seqs: int) -> None:
    """Write `batch` into `out` ((flat_size,) int64) in the layout above."""
    t, n = batch.num_tokens, batch.num_seqs
    assert t <= tokens and n <= seqs, (t, tokens, n, seqs)
    lengths = batch.lengths
    out[:t] = batch.input_ids
    starts = np.repeat(batch.cu_seqlens[:-1], lengths)  # (T,) start of each token's sequence
    np.subtract(np.arange(t, dtype=np.int64) + position_offset, starts, out=out[tokens : tokens + t])
    if batch.token_type_ids is not None:
        out[2 * tokens : 2 * tokens + t] = batch.token_type_ids
    else:
        out[2 * tokens : 2 * tokens + t] = 0
    for part in range(3):  # padding rows: any valid index; no real row ever reads them
        out[part * tokens + t : (part + 1) * tokens] = 0
    cu = out[3 * tokens :]
    cu[: n + 1] = batch.cu_seqlens
    cu[n + 1 :] = t


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


class HostStager:
    """Fills one reusable pinned buffer and copies it to the device asynchronously."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._cuda = device.type == "cuda"
        self._host = torch.empty(0, dtype=torch.int64)
        self._done: torch.cuda.Event | None = None

    def _buffer(self, size: int) -> torch.Tensor:
        if self._done is not None:
            self._done.synchronize()  # the last copy out of the buffer has finished
        if self._host.numel() < size:
            self._host = torch.empty(
                max(size, 2 * self._host.numel()), dtype=torch.int64, pin_memory=self._cuda
            )
        return self._host[:size]

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
        host = self._buffer(size)
        fill_flat(host.numpy(), batch, position_offset, tokens, seqs)
        if not self._cuda:
            return host.clone() if out is None else out.copy_(host)
        dst = out if out is not None else torch.empty(size, dtype=torch.int64, device=self._device)
        dst.copy_(host, non_blocking=True)
        self._done = torch.cuda.Event()  # type: ignore[no-untyped-call]
        self._done.record()
        return dst
