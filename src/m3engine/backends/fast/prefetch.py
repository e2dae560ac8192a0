"""Weights pulled into L2 ahead of the products that read them, for batches of few tokens.

At 128 tokens a layer's four matrix products read ~25 MB of weights at 1.1-1.3 TB/s of the H200's
4.8: each kernel lasts a few microseconds, too short to keep enough loads in flight, so it waits on
DRAM latency rather than bandwidth. Here a small kernel on a side stream asks the memory system to
bring the weights of the product `distance` steps ahead into L2 while the current one runs
(`cp.async.bulk.prefetch.L2` on sm_90: fire and forget, no registers, no shared memory), so that
product's loads hit L2. Nothing in the forward writes weights, so the prefetch needs no ordering
beyond starting no earlier than the product it runs beside (which keeps L2 from being flooded).

    ahead = Prefetcher(device, PrefetchPlan(distance=1)).ahead([qkv_0, out_0, ffn_in_0, ...], tokens)
    ahead.start()            # the first `distance` products' weights
    ... ahead.step() before each product ...
    ahead.join()             # the main stream waits for the side stream (a graph must join it)

Only for CUDA graphs of small batches: a prefetch costs a launch on the side stream, and batches of
thousands of tokens are bound by arithmetic, not by weight loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

BULK, LINES = 0, 1
LINE = 128  # bytes one `prefetch.global.L2` asks for


@dataclass(frozen=True)
class PrefetchPlan:
    """How far ahead, in products, and how: `mode` BULK (one instruction per `chunk` bytes) or LINES
    (one per 128-byte line); `max_tokens`: batches up to this many tokens prefetch, larger ones not."""

    distance: int = 1
    mode: int = BULK
    chunk: int = 16384
    max_tokens: int = 512
    threads: int = 128  # per program


@triton.jit
def _prefetch_kernel(base_ptr, n_chunks, CHUNK: tl.constexpr, BLOCK: tl.constexpr, MODE: tl.constexpr):
    # one element per chunk; the last programs repeat the final chunk (a prefetch has no effect to undo)
    offs = tl.minimum(tl.program_id(0) * BLOCK + tl.arange(0, BLOCK), n_chunks - 1)
    ptrs = base_ptr + offs.to(tl.int64) * CHUNK  # (BLOCK,) uint8 pointers
    if MODE == 0:
        size = tl.full([BLOCK], CHUNK, tl.int32)
        tl.inline_asm_elementwise(
            "cp.async.bulk.prefetch.L2.global [$1], $2;\n\tmov.u32 $0, 0;",
            "=r,l,r",
            [ptrs, size],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )
    else:
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;",
            "=r,l",
            [ptrs],
            dtype=tl.int32,
            is_pure=False,
            pack=1,
        )


def prefetch_l2(weight: torch.Tensor, plan: PrefetchPlan) -> None:
    """Queue on the current stream a kernel that asks for `weight`'s bytes in L2 (contiguous CUDA tensor)."""
    nbytes = weight.numel() * weight.element_size()
    chunk = plan.chunk if plan.mode == BULK else LINE
    if nbytes % chunk or not weight.is_contiguous():  # bulk sizes must tile the tensor exactly
        return
    n_chunks = nbytes // chunk
    block = plan.threads
    _prefetch_kernel[(triton.cdiv(n_chunks, block),)](
        weight.view(-1).view(torch.uint8), n_chunks, CHUNK=chunk, BLOCK=block, MODE=plan.mode,
        num_warps=max(1, block // 32),
    )  # fmt: skip


class Prefetcher:
    """A side stream and a plan; `ahead` gives one forward its prefetches, or None when it is too large."""

    def __init__(self, device: torch.device, plan: PrefetchPlan) -> None:
        self.stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self.plan = plan

    def ahead(self, order: list[torch.Tensor], tokens: int) -> L2Ahead | None:
        if tokens > self.plan.max_tokens or self.plan.distance < 1:
            return None
        return L2Ahead(self.stream, order, self.plan)


class L2Ahead:
    """The prefetches of one forward: `order` is the weights in the order the products read them."""

    def __init__(self, stream: torch.cuda.Stream, order: list[torch.Tensor], plan: PrefetchPlan) -> None:
        self._stream = stream
        self._order = order
        self._plan = plan
        self._next = 0  # the product about to run

    def _issue(self, index: int) -> None:
        if index < len(self._order):
            prefetch_l2(self._order[index], self._plan)

    def start(self) -> None:
        self._stream.wait_stream(torch.cuda.current_stream(self._stream.device))
        with torch.cuda.stream(self._stream):
            for index in range(self._plan.distance):
                self._issue(index)

    def step(self) -> None:
        """Before product `_next` runs: the side stream, from here on, prefetches `_next + distance`."""
        self._stream.wait_stream(torch.cuda.current_stream(self._stream.device))
        with torch.cuda.stream(self._stream):
            self._issue(self._next + self._plan.distance)
        self._next += 1

    def join(self) -> None:
        torch.cuda.current_stream(self._stream.device).wait_stream(self._stream)
