"""The Engine's bulk path: inputs tokenized in pieces on a few threads while the device runs batches.

    tokenize threads:  piece 0 | piece 1 | piece 2 | ...       (Rust encode_batch releases the GIL)
    engine thread:     plan batch i from the window -> launch i -> collect i - 1 -> plan i + 1 ...
    device:                        batch 0 | batch 1 | batch 2 ...

Pieces are cut by estimated tokens: the first holds about a quarter of a batch, so the device starts
after little tokenization; the next ones double up to half a batch, and the last ones taper again,
so that the last batch waits for little tokenization too. The first piece is tokenized alone, the
others once it is done: beside three others (they share the Rust pool and the GIL) the first of
one query and 100 passages took 9 ms on an H200 host, and the device waited for it. Tokenized
pieces enter a window as they finish; batches are planned from the window longest first under the
token budget (`plan_batches`, so length-aware grouping holds within the window). A full batch
leaves at once; a part-filled one when no more pieces will come, or when the device has finished
the batch before it (waiting longer would leave it idle). A backend with `launch` gets batch i + 1
before batch i is collected, so building batch i's records on the host overlaps the device's work
on batch i + 1; a task that builds its records per batch (`Bulk.records`: embed) does so as each
batch is collected, so after the last batch only that batch's records are left to build.

Outputs are gathered by input index: one record per input, in input order, whatever the batches.
An error in any piece or batch is raised and nothing is returned; pieces not started are cancelled.
Unlike the whole-list path, a forward may run before a later piece's input error is found.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from m3engine.backends.base import Pending
from m3engine.process.cpu_quota import available_cpus
from m3engine.scheduling.batching import plan_batches
from m3engine.tasks import postprocess
from m3engine.tasks.prepared import Bulk
from m3engine.types import BatchOutputs, Encoded, HeadRequest, PackedBatch

R = TypeVar("R")
Progress = Callable[[int, int], None]  # called after each forward pass with (inputs, tokens) done in it

FIRST_PIECE = 4  # the first piece holds about budget / FIRST_PIECE tokens
LARGEST_PIECE = 2  # and none more than budget / LARGEST_PIECE: pieces enough to share among threads
MIN_PARTIAL = 8  # a part-filled batch leaves early only with budget / MIN_PARTIAL tokens or more
LOOKAHEAD = 8  # batches' worth of tokens tokenized ahead of the device, at most
# Inputs whose estimate (`Bulk.sizes`: characters / 4, ~1.4x XLM-R tokens of prose) averages this
# much are long documents for `default_threads`: ~1,500 tokens, between the two measured cases
# (passages of ~280 tokens: four threads better; documents of ~6,400: two); lengths between them
# were not measured.
LONG_MEAN = 2048
POLL_S = 0.0005  # while the device works and no batch is full: how often to look whether it is done


def default_threads(sizes: Sequence[int]) -> int:
    """Tokenizer threads: four for short inputs, two for long ones (see LONG_MEAN).

    A long text is already spread over every core by one `encode_batch` (its pieces, in Rust), so
    more threads add no tokenization and take the GIL and the cores from the thread that launches
    the batches; short texts have more Python work per token, which threads overlap.
    Measured on an H200 host (16 cores), 1 / 2 / 4 threads: passages dense
    496 / 713 / 719 k tok/s, all three 438 / 642 / 674 k; long documents dense 365 / 358 / 347 k,
    all three 356 / 356 / 337 k; 12 threads: passages 346 k, long documents 263 k. A rerank of
    100 pairs on an H100 host (16 cores), 1 / 2 / 8 threads: 1.19x / 0.97x / 1.06x the time of four
    (new texts each call: 1.25x / 1.04x / 1.08x; docs/performance.md).
    """
    long = bool(sizes) and sum(sizes) >= LONG_MEAN * len(sizes)
    return max(1, min(2 if long else 4, available_cpus()))


def cut_pieces(sizes: Sequence[int], first: int, largest: int) -> list[tuple[int, int]]:
    """(start, stop) pieces of the inputs, each within a target of estimated tokens (or one input).

    The target starts at `first` (the device starts after little tokenization), doubles up to
    `largest`, and tapers again over the last inputs to at most half of what is left: the last
    piece, which the last batch waits for, is small too.
    """
    pieces: list[tuple[int, int]] = []
    remaining = sum(sizes)
    start, total, grow = 0, 0, max(1, first)
    for i, size in enumerate(sizes):
        target = min(grow, largest, max(first, remaining // 2))
        if i > start and total + size > target:
            pieces.append((start, i))
            remaining -= total
            start, total, grow = i, 0, min(2 * grow, largest)
        total += size
    if start < len(sizes):
        pieces.append((start, len(sizes)))
    return pieces


Launch = Callable[[PackedBatch, HeadRequest], Pending]  # Backend.launch, one call at a time


Collected = Callable[[list[int], BatchOutputs], None]  # a batch's input indices and its outputs


class Collector:
    """Launched batches not yet collected, oldest first, and the host work of collecting them.

    `launch` queues a batch and returns at once; `collect(keep)` hands the oldest batches to one
    collecting thread until at most `keep` are in flight. That thread waits for a batch's copies,
    copies them out of the pinned ring and builds its records (`on_collect` where one is given,
    else `parts`, merged after the last batch), while this thread launches the next batches: with
    all three outputs a 16 k-token batch's host work (~8 ms of copy-out, its sparse vectors) on
    the launching thread left the device idle between batches.
    At most `FINISHING` batches wait for that thread (their pinned slots stay taken meanwhile).
    """

    FINISHING = 1

    def __init__(
        self,
        launch: Launch,
        heads: HeadRequest,
        progress: Progress | None,
        on_collect: Collected | None = None,
    ) -> None:
        self._launch, self._heads, self._progress = launch, heads, progress
        self._on_collect = on_collect
        self.parts: list[tuple[list[int], BatchOutputs]] = []
        self._in_flight: deque[tuple[list[int], int, Pending]] = deque()
        self._finishing: deque[Future[None]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def launch(self, indices: list[int], items: Sequence[Encoded]) -> None:
        pending = self._launch(PackedBatch.from_encoded(items), self._heads)
        self._in_flight.append((indices, sum(len(e) for e in items), pending))

    def _finish(self, indices: list[int], tokens: int, pending: Pending) -> None:
        outputs = pending.result()
        if self._on_collect is not None:
            self._on_collect(indices, outputs)
        else:
            self.parts.append((indices, outputs))
        if self._progress is not None:
            self._progress(len(indices), tokens)

    def collect(self, keep: int = 0) -> None:
        """Hand batches to the collecting thread until `keep` are in flight; with keep=0, also wait
        until every batch is collected. Raises the first error of a batch's collection."""
        while len(self._in_flight) > keep:
            indices, tokens, pending = self._in_flight.popleft()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3engine-collect")
            self._finishing.append(self._pool.submit(self._finish, indices, tokens, pending))
            while len(self._finishing) > self.FINISHING:
                self._finishing.popleft().result()
        if keep == 0:
            self._wait_finishing()

    def _wait_finishing(self) -> None:
        try:
            while self._finishing:
                self._finishing.popleft().result()
        finally:
            if self._pool is not None and not self._finishing:
                self._pool.shutdown(wait=True)
                self._pool = None

    def idle(self) -> bool:
        """Whether the device has nothing of ours left to run."""
        return all(pending.done() for _, _, pending in self._in_flight)

    def abandon(self) -> None:
        """After an error: wait out the batches in flight (device work and copies), drop their outputs."""
        while self._finishing:
            with contextlib.suppress(Exception):  # the error being raised says what went wrong
                self._finishing.popleft().result()
        while self._in_flight:
            pending = self._in_flight.popleft()[2]
            with contextlib.suppress(Exception):
                pending.result()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def run_all(
    launch: Launch,
    encoded: list[Encoded],
    heads: HeadRequest,
    budget: int,
    max_size: int,
    padded: bool,
    progress: Progress | None = None,
    in_flight: int = 1,
) -> BatchOutputs:
    """Every input at once: batches planned longest first under the budget (`plan_batches`), then
    `run_planned`; outputs in input order."""
    batches = plan_batches([len(e) for e in encoded], budget, max_size, padded)
    return run_planned(launch, encoded, batches, heads, progress, in_flight)


def run_planned(
    launch: Launch,
    encoded: list[Encoded],
    batches: list[list[int]],
    heads: HeadRequest,
    progress: Progress | None,
    in_flight: int = 1,
) -> BatchOutputs:
    """Batches planned ahead, launched `in_flight` ahead of collection; outputs in input order.

    One device needs one batch ahead; several (devices.DevicePool) need one ahead per device."""
    collector = Collector(launch, heads, progress)
    try:
        for indices in batches:
            collector.launch(indices, [encoded[i] for i in indices])
            collector.collect(keep=in_flight)
        collector.collect()
    except BaseException:
        collector.abandon()
        raise
    return postprocess.gather(collector.parts, len(encoded))


class Window:
    """Tokenized inputs not yet in a batch: their input indices and token counts."""

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.lengths: list[int] = []
        self.tokens = 0

    def __len__(self) -> int:
        return len(self.indices)

    def add(self, start: int, items: list[Encoded]) -> None:
        self.indices.extend(range(start, start + len(items)))
        lengths = [len(e) for e in items]
        self.lengths.extend(lengths)
        self.tokens += sum(lengths)

    def full(self, budget: int, max_size: int) -> bool:
        return self.tokens >= budget or len(self.indices) >= max_size

    def take(self, budget: int, max_size: int, padded: bool) -> list[int]:
        """The longest batch `plan_batches` makes of the window, removed from it."""
        chosen = plan_batches(self.lengths, budget, max_size, padded)[0]
        picked = set(chosen)
        batch = [self.indices[k] for k in chosen]
        self.tokens -= sum(self.lengths[k] for k in chosen)
        keep = [k for k in range(len(self.indices)) if k not in picked]
        self.indices = [self.indices[k] for k in keep]
        self.lengths = [self.lengths[k] for k in keep]
        return batch


def run_bulk(
    bulk: Bulk[R],
    launch: Launch,
    budget: int,
    max_size: int,
    padded: bool = False,
    progress: Progress | None = None,
    threads: int | None = None,
    in_flight: int = 1,
) -> R:
    """Tokenize `bulk` in pieces on `threads` threads while its batches run; its finished result.

    `in_flight`: batches launched and not yet collected (as in `run_planned`)."""
    threads = threads or default_threads(bulk.sizes)
    pieces = cut_pieces(bulk.sizes, budget // FIRST_PIECE, budget // LARGEST_PIECE)
    encoded: list[Encoded | None] = [None] * len(bulk.sizes)
    window = Window()
    records: list[object] = [None] * len(bulk.sizes)

    def build(indices: list[int], outputs: BatchOutputs) -> None:
        assert bulk.records is not None
        batch = bulk.records(indices, [encoded[i] for i in indices], outputs)  # type: ignore[misc]
        for i, record in zip(indices, batch, strict=True):
            records[i] = record

    assemble = bulk.assemble if bulk.records is not None else None  # records per batch, or finish
    collector = Collector(launch, bulk.heads, progress, build if assemble is not None else None)
    queue: list[tuple[int, Future[list[Encoded]]]] = []  # pieces submitted, not yet in the window
    submitted = 0
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="m3engine-tokenize")

    def submit() -> None:
        nonlocal submitted
        while submitted < len(pieces) and len(queue) < 2 * threads:
            if queue and window.tokens >= LOOKAHEAD * budget:
                break  # far enough ahead of the device: bound the memory of a huge corpus
            if submitted == 1 and queue:
                break  # the first piece alone: the device starts sooner (see the docstring)
            start, stop = pieces[submitted]
            queue.append((start, pool.submit(bulk.piece, start, stop)))
            submitted += 1

    def drain() -> None:
        """Every tokenized piece into the window, in whatever order they finished: waiting for
        them in input order left finished pieces out while a slower earlier one ran (H200 host:
        the device idled ~15 ms at the start of the passages). On an error, the first input's
        error is raised: the pieces before the failed one are waited for."""
        failed = next((k for k, (_, f) in enumerate(queue) if f.done() and f.exception() is not None), None)
        if failed is not None:
            for _, future in queue[: failed + 1]:
                future.result()
        for entry in [entry for entry in queue if entry[1].done()]:
            queue.remove(entry)
            start, items = entry[0], entry[1].result()
            encoded[start : start + len(items)] = items
            window.add(start, items)

    try:
        while True:
            drain()
            exhausted = not queue and submitted == len(pieces)
            if exhausted and not window:
                break
            # A batch that can leave is launched first (submitting first, the pool starting its
            # threads, delayed the first launch by ~5 ms), then more pieces are submitted, then the
            # batch before it is collected: the threads tokenize while the engine thread waits.
            part_ready = window.tokens >= budget // MIN_PARTIAL and collector.idle()
            if window and (exhausted or window.full(budget, max_size) or part_ready):
                indices = window.take(budget, max_size, padded)
                collector.launch(indices, [encoded[i] for i in indices])  # type: ignore[misc]
                submit()
                collector.collect(keep=in_flight)
                continue
            submit()
            # No batch to launch yet: wait for a piece, and while the device still works, look
            # again soon, so a part-filled batch can leave as soon as the device runs dry.
            wait(
                [f for _, f in queue],
                timeout=None if collector.idle() else POLL_S,
                return_when=FIRST_COMPLETED,
            )
        collector.collect()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        collector.abandon()
        raise
    pool.shutdown(wait=True)
    assert all(e is not None for e in encoded), "every input tokenized"
    if assemble is not None:
        return assemble(records)
    return bulk.finish(encoded, postprocess.gather(collector.parts, len(encoded)))  # type: ignore[arg-type]
