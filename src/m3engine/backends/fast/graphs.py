"""CUDA graphs of the whole encoder, one per bucket, so a small batch costs one launch, not ~300.

A bucket is (tokens, sequences, longest sequence), each rounded up a ladder. A batch is copied
into the bucket's static input buffer in one host-to-device copy (staging.py's flat layout): its
token rows first, then padding rows that belong to no sequence; `cu_seqlens` is padded with empty
sequences (repeats of the real total), which flash attention skips. The longest-sequence bound is
baked into the graph as flash attention's `max_seqlen`; rounding it up only launches blocks that
find no work.

A warm-up captures every bucket the batches can land in (`capture_ladder`); without one, graphs are
captured lazily, the second time a bucket is asked for (a shape seen once, such as the last
part-filled batch of a bulk call, runs eagerly). They share one memory pool and are replayed one at
a time (the backend's forward is single-threaded), so one graph's scratch memory may be reused by
another. Why not on first use: `torch.cuda.graph` synchronizes the device and empties the CUDA and
pinned-memory caches before it captures, so a capture in the middle of a bulk call waits for the
batches queued before it and makes the next allocations fresh ones (measured on an H200: a 285-token
batch at the end of the bench's passages took 35.9 ms to launch that way, where an eager launch
takes a few).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from m3engine.backends.fast.inputs import PackedInputs
from m3engine.backends.fast.staging import flat_size, unpack

CAPTURE_AFTER = 2  # a bucket's graph is captured the time it is asked for this often (see above)
# Batches up to this many tokens replay a graph; a larger one runs eagerly, where each kernel
# outlasts its launch anyway and a graph would only hold more memory.
MAX_TOKENS = 4096
# Token counts a graph is captured for: dense at the small end, where launches dominate.
TOKEN_LADDER = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
MIN_SEQUENCE = 2  # tokens of the shortest sequence a tokenizer makes (CLS and SEP of an empty text)


@dataclass(frozen=True)
class BucketKey:
    tokens: int  # rows of the static (T_b, H) buffers
    seqs: int  # entries of cu_seqlens minus one
    max_len: int  # flash attention's max_seqlen for this graph


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def choose_bucket(num_tokens: int, num_seqs: int, max_len: int, max_tokens: int) -> BucketKey | None:
    """The smallest bucket that holds the batch, or None when it is over `max_tokens` (run eager)."""
    step = bisect_left(TOKEN_LADDER, num_tokens)
    if step == len(TOKEN_LADDER) or TOKEN_LADDER[step] > max_tokens:
        return None
    tokens = TOKEN_LADDER[step]
    seqs = min(_pow2_at_least(num_seqs), tokens)
    # max_seqlen is the bucket's token count: flash attention only launches blocks that find no work,
    # and a third key dimension would multiply the graphs that a mixed workload captures mid-run.
    return BucketKey(tokens=tokens, seqs=max(seqs, num_seqs), max_len=tokens)


def warmup_buckets(max_tokens: int, max_seqs: int, min_tokens_per_seq: int = MIN_SEQUENCE) -> list[BucketKey]:
    """Every bucket a batch of at most `max_tokens` tokens and `max_seqs` sequences can land in:
    each ladder step up to max_tokens, with each power-of-two count of the sequences it can hold."""
    keys = []
    for tokens in (b for b in TOKEN_LADDER if b <= max_tokens):
        most = _pow2_at_least(max(1, min(max_seqs, tokens // min_tokens_per_seq)))
        seqs = 1
        while seqs <= min(most, tokens):
            keys.append(BucketKey(tokens=tokens, seqs=seqs, max_len=tokens))
            seqs *= 2
    return keys


def capture_cu_seqlens(key: BucketKey, max_length: int) -> np.ndarray:
    """(seqs + 1,) int64: the placeholder sequences a bucket is captured with, every one as long as
    the bucket and the model allow, so the capture's warm-up touches real work (rows past the
    last belong to no sequence)."""
    step = max(1, min(key.tokens // key.seqs, key.max_len, max_length))
    return np.arange(key.seqs + 1, dtype=np.int64) * step


@dataclass
class Captured:
    graph: torch.cuda.CUDAGraph
    flat: torch.Tensor  # (3 * T_b + S_b + 1,) int64 static inputs, staging.py's layout
    out: torch.Tensor  # (T_b, H) static output


EncodeFn = Callable[[PackedInputs], torch.Tensor]


class GraphRunner:
    """Captured encoders per bucket for batches up to `max_tokens` tokens.

    >>> key = runner.bucket(num_tokens, num_seqs, max_len)   # None: run eagerly (or not asked twice yet)
    >>> captured = runner.get(key)                            # captures if not captured yet
    >>> stager.stage(batch, offset, key.tokens, key.seqs, out=captured.flat); captured.graph.replay()
    """

    def __init__(
        self,
        encode: EncodeFn,
        device: torch.device,
        max_length: int,
        max_tokens: int = MAX_TOKENS,
        max_graphs: int = 128,
    ):
        """`max_length`: the model's longest sequence (its position table), which a capture's
        placeholder sequences must not pass."""
        self._encode = encode
        self._device = device
        self.max_length = max_length
        self.max_tokens = max_tokens
        self.max_graphs = max_graphs
        self._graphs: dict[BucketKey, Captured] = {}
        self._asked: Counter[BucketKey] = Counter()  # buckets not captured yet: how often asked for
        self._pool = torch.cuda.graph_pool_handle()

    @property
    def captured(self) -> list[BucketKey]:
        return list(self._graphs)

    @property
    def largest(self) -> int:
        """The most tokens a captured graph takes (0: none captured): larger batches run eagerly."""
        return max((key.tokens for key in self._graphs), default=0)

    def bucket(self, num_tokens: int, num_seqs: int, max_len: int) -> BucketKey | None:
        """The bucket to replay (captured by `get` if need be), or None: run this batch eagerly."""
        key = choose_bucket(num_tokens, num_seqs, max_len, self.max_tokens)
        if key is None or key in self._graphs:
            return key
        if len(self._graphs) >= self.max_graphs:
            return None
        self._asked[key] += 1
        return key if self._asked[key] >= CAPTURE_AFTER else None

    def capture_ladder(self, max_tokens: int, max_seqs: int) -> int:
        """Capture every bucket of batches within these limits ahead of traffic, so no batch waits
        for a capture; returns how many."""
        keys = warmup_buckets(min(max_tokens, self.max_tokens), max_seqs)[: self.max_graphs]
        for key in keys:
            self.get(key)
        return len(keys)

    def get(self, key: BucketKey) -> Captured:
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(key)
            self._asked.pop(key, None)
        return captured

    def _capture(self, key: BucketKey) -> Captured:
        flat = torch.zeros(flat_size(key.tokens, key.seqs), dtype=torch.int64, device=self._device)
        flat[3 * key.tokens :] = torch.from_numpy(capture_cu_seqlens(key, self.max_length))
        stream = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(stream):  # warm-up off the capture: cuBLAS handles, Triton compiles
            for _ in range(2):
                self._encode(unpack(flat, key.tokens, key.seqs, key.max_len, ()))
        torch.cuda.current_stream(self._device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._encode(unpack(flat, key.tokens, key.seqs, key.max_len, ()))
        return Captured(graph, flat, out)
