"""CUDA graphs of the whole encoder, one per bucket, so a small batch costs one launch, not ~300.

A bucket is (tokens, sequences, longest sequence), each rounded up a ladder. A batch is copied
into the bucket's static buffers: its token rows first, then padding rows that belong to no
sequence; `cu_seqlens` is padded with empty sequences (repeats of the real total), which flash
attention skips. The longest-sequence bound is baked into the graph as flash attention's
`max_seqlen`; rounding it up only launches blocks that find no work.

Graphs are captured lazily on first use, share one memory pool, and are replayed one at a time
(the backend's forward is single-threaded), so one graph's scratch memory may be reused by another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from m3engine.backends.fast.encoder import PackedInputs

# Token counts a graph is captured for: dense at the small end, where launches dominate.
TOKEN_LADDER = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)


@dataclass(frozen=True)
class BucketKey:
    tokens: int  # rows of the static (T_b, H) buffers
    seqs: int  # entries of cu_seqlens minus one
    max_len: int  # flash attention's max_seqlen for this graph


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def choose_bucket(num_tokens: int, num_seqs: int, max_len: int, max_tokens: int) -> BucketKey | None:
    """The smallest bucket that holds the batch, or None when it is over `max_tokens` (run eager)."""
    tokens = next((b for b in TOKEN_LADDER if b >= num_tokens), None)
    if tokens is None or tokens > max_tokens:
        return None
    seqs = min(_pow2_at_least(num_seqs), tokens)
    return BucketKey(tokens=tokens, seqs=max(seqs, num_seqs), max_len=min(_pow2_at_least(max_len), tokens))


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    rows: torch.Tensor  # (3, T_b) int64: ids, positions, token types
    cu_seqlens: torch.Tensor  # (S_b + 1,) int32
    out: torch.Tensor  # (T_b, H)


EncodeFn = Callable[[PackedInputs], torch.Tensor]


class GraphRunner:
    """Replays a captured encoder for batches up to `max_tokens` tokens; None means: run it eagerly."""

    def __init__(self, encode: EncodeFn, device: torch.device, max_tokens: int = 2048, max_graphs: int = 64):
        self._encode = encode
        self._device = device
        self.max_tokens = max_tokens
        self.max_graphs = max_graphs
        self._graphs: dict[BucketKey, _Captured] = {}
        self._pool = torch.cuda.graph_pool_handle()

    @property
    def captured(self) -> list[BucketKey]:
        return list(self._graphs)

    def run(self, inputs: PackedInputs) -> torch.Tensor | None:
        """(T, H) final states of `inputs` through a graph, or None when no bucket fits."""
        num_tokens = int(inputs.input_ids.shape[0])
        key = choose_bucket(num_tokens, len(inputs.lengths), inputs.max_len, self.max_tokens)
        if key is None:
            return None
        captured = self._graphs.get(key)
        if captured is None:
            if len(self._graphs) >= self.max_graphs:
                return None
            captured = self._capture(key)
            self._graphs[key] = captured
        captured.rows[0, :num_tokens].copy_(inputs.input_ids)
        captured.rows[1, :num_tokens].copy_(inputs.positions)
        captured.rows[2, :num_tokens].copy_(inputs.token_types)
        n = len(inputs.lengths)
        captured.cu_seqlens[: n + 1].copy_(inputs.cu_seqlens)
        captured.cu_seqlens[n + 1 :].fill_(num_tokens)  # empty sequences after the real ones
        captured.graph.replay()
        return captured.out[:num_tokens]

    def _static_inputs(self, key: BucketKey) -> tuple[torch.Tensor, torch.Tensor, PackedInputs]:
        rows = torch.zeros(3, key.tokens, dtype=torch.int64, device=self._device)
        # Capture with every sequence as long as allowed, so the warm-up touches real work.
        step = max(1, min(key.tokens // key.seqs, key.max_len))
        cu = torch.arange(key.seqs + 1, dtype=torch.int32, device=self._device) * step
        inputs = PackedInputs(rows[0], rows[1], rows[2], cu, key.max_len, ())
        return rows, cu, inputs

    def _capture(self, key: BucketKey) -> _Captured:
        rows, cu, inputs = self._static_inputs(key)
        stream = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(stream):  # warm-up off the capture: cuBLAS handles, autotuning
            for _ in range(2):
                self._encode(inputs)
        torch.cuda.current_stream(self._device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._encode(inputs)
        return _Captured(graph, rows, cu, out)
