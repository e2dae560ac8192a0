"""A timeline of one bulk call through the pipeline: when each piece is tokenized (which thread), when
each batch is launched and collected (tokens), relative to the call's start. For finding where a
pipelined call waits (device machine: the reranker, 1 query x 100 passages; long documents; or the
bench's 2,000 mixed-length passages: dense, or all three outputs with ALL=1).

    PYTHONPATH=src python3 tools/pipeline_timeline.py TOKENIZER_DIR SCRATCH_DIR [rerank|long|passages]

DETAIL=1 also times the steps inside a launch and a collection (staging, the encoder's launches, the
heads, the pinned ring, waiting for the copies, the copy-out, the records, graph captures, Triton
compiles, Python's garbage collections), each span of 0.5 ms or more as one line, and prints the
CUDA caching allocator's counters around the last call (a cudaFree waits for the device).
TRACE=1 runs the last call under torch.profiler (host and device) and prints, for each thread, the
host events of TRACE_MS (default 3) ms or more (CUDA runtime calls included: a launch that blocks
shows as one) and the gaps of as long between consecutive runtime calls (a thread that did not run).
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3engine.backends.fast.graphs import GraphRunner
from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.scheduling import pipeline
from m3engine.settings import EngineSettings
from m3engine.tasks.prepared import Bulk

EVENTS: list[tuple[float, str, str]] = []
ALL = bool(os.environ.get("ALL"))
TRACE = bool(os.environ.get("TRACE"))
TRACE_MS = float(os.environ.get("TRACE_MS", "3"))
DETAIL = bool(os.environ.get("DETAIL"))
SPAN_MS = 0.5  # DETAIL: shorter spans are not noted


DEVICE: list[tuple[int, Any, Any]] = []  # DETAIL on CUDA: (tokens, event before, event after) per launch


def device_event() -> Any:
    """DETAIL: a timing event recorded on the current stream (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    event = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    event.record()
    return event


def report_device(origin: Any) -> None:
    """DETAIL: when each batch's work ran on the device (ms from the call's start) and the idle
    time before it: the device reaches a batch's first event when the work queued before is done."""
    if origin is None or not DEVICE:
        return
    DEVICE[-1][2].synchronize()
    print("device: batch tokens, start and end (ms from the call's start), idle before")
    idle, last = 0.0, 0.0
    for tokens, before, after in DEVICE:
        begin, end = origin.elapsed_time(before), origin.elapsed_time(after)
        gap = max(0.0, begin - last)
        idle += gap
        print(f"  {tokens:6d} tokens  {begin:8.2f} -> {end:8.2f}  idle before {gap:6.2f}")
        last = end
    print(f"device idle between launches: {idle:.1f} ms; last batch's work ends at {last:.1f} ms")


def note(what: str) -> None:
    EVENTS.append((time.perf_counter(), threading.current_thread().name, what))


def instrument() -> None:
    piece, launch, collect = Bulk.piece, pipeline.Launcher.__call__, pipeline.Collector.collect

    def timed_piece(self: Bulk[Any], start: int, stop: int) -> Any:
        note(f"piece {start}:{stop} start")
        out = piece(self, start, stop)
        note(f"piece {start}:{stop} done ({sum(len(e) for e in out)} tokens)")
        return out

    def timed_launch(self: pipeline.Launcher, batch: Any, heads: Any) -> Any:
        note(f"launch {batch.num_seqs} seqs {batch.num_tokens} tokens")
        before = device_event() if DETAIL else None
        out = launch(self, batch, heads)
        if before is not None:
            DEVICE.append((batch.num_tokens, before, device_event()))
        note("launched")
        return out

    def timed_collect(self: pipeline.Collector, keep: int = 0) -> None:
        if len(self._in_flight) > keep:
            note("collect wait")
        collect(self, keep)
        note("collect done")

    Bulk.piece = timed_piece  # type: ignore[method-assign]
    pipeline.Launcher.__call__ = timed_launch  # type: ignore[method-assign]
    pipeline.Collector.collect = timed_collect  # type: ignore[method-assign]


def timed_span(owner: Any, name: str, label: str | Callable[[Any], str], min_ms: float = SPAN_MS) -> None:
    """Replace `owner.name` (a function or method) by one that notes its duration when >= min_ms;
    a callable label is given the call's first argument (`self` of a method)."""
    inner = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            took = (time.perf_counter() - start) * 1e3
            if took >= min_ms:
                text = label if isinstance(label, str) else label(args[0])
                note(f"  {text} {took:.1f} ms")

    setattr(owner, name, wrapper)


def instrument_detail() -> None:
    from m3engine import host_ring, pending
    from m3engine.backends.fast import backend, staging
    from m3engine.models import heads

    timed_span(staging.HostStager, "stage", "stage inputs")
    timed_span(backend.FastBackend, "_hidden_states", "encoder (staging + launches)")
    timed_span(backend, "launch_heads", "heads + copies queued")
    timed_span(host_ring.HostRing, "acquire", "ring acquire")
    timed_span(host_ring.Slot, "fit", "ring slot re-pinned")
    timed_span(pending.HostCopy, "wait", "copies waited + copied out")
    timed_span(pending, "copy_out", "copy-out")
    timed_span(heads, "sparse_weights", "sparse vectors")
    timed_span(GraphRunner, "_capture", "CUDA graph captured")
    from triton.runtime.jit import JITFunction

    timed_span(JITFunction, "_do_compile", lambda fn: f"Triton kernel {fn.__name__} compiled", min_ms=0.0)
    gc_started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[:] = [time.perf_counter()]
        elif gc_started and (took := (time.perf_counter() - gc_started[0]) * 1e3) >= SPAN_MS:
            note(f"  gc of generation {info['generation']} {took:.1f} ms")

    gc.callbacks.append(on_gc)


class MainSampler:
    """DETAIL: where the engine thread is, sampled every millisecond (innermost frame and the
    innermost frame of m3engine), to explain a slow launch: printed for launches over SLOW_MS."""

    SLOW_MS = 20.0

    def __init__(self) -> None:
        self.samples: list[tuple[float, str]] = []
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            frame = sys._current_frames().get(self._main)  # type: ignore[arg-type]
            if frame is None:
                continue
            inner, ours = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}", ""
            f = frame
            while f is not None and not ours:
                if "m3engine" in f.f_code.co_filename:
                    ours = f"{Path(f.f_code.co_filename).name}:{f.f_lineno} {f.f_code.co_name}"
                f = f.f_back
            self.samples.append((time.perf_counter(), f"{inner} | {ours}"))

    def report(self, start: float) -> None:
        marks = [(t, what) for t, thread, what in EVENTS if thread == "MainThread"]
        ends = [(t, what) for t, what in marks if what == "launched"]
        for t0, a in marks:
            t1 = next((t for t, _ in ends if t > t0), t0)
            if a.startswith("launch ") and (t1 - t0) * 1e3 >= self.SLOW_MS:
                where = Counter(w for t, w in self.samples if t0 <= t <= t1)
                print(f"{(t0 - start) * 1e3:.1f} ms: {a}, {(t1 - t0) * 1e3:.1f} ms; engine thread samples:")
                for w, n in where.most_common(8):
                    print(f"    {n:4d}  {w}")


def allocator_counters() -> dict[str, int]:
    import torch

    stats = torch.cuda.memory_stats()
    keys = ("num_alloc_retries", "num_device_alloc", "num_device_free", "num_sync_all_streams")
    return {k: int(stats.get(k, 0)) for k in keys}


def bare_launches(engine: Engine, workload: str) -> None:
    """Three pre-tokenized batches launched back to back, no tokenizer threads: does a launch wait
    for the device (host time of each launch, and of collecting them)?"""
    import torch

    from m3engine.types import HeadRequest, PackedBatch

    if not torch.cuda.is_available():
        return
    maker = TextMaker(engine.tokenizer._tok)
    n, lo, hi = {"rerank": (48, 300, 340), "long": (2, 7000, 8000), "passages": (64, 200, 260)}[workload]
    heads = HeadRequest(logits=True) if workload == "rerank" else HeadRequest(dense=True)
    batches = [
        PackedBatch.from_encoded(engine.tokenizer.encode(maker.texts(maker.uniform_lengths(n, lo, hi)), 8192))
        for _ in range(3)
    ]
    for _ in range(2):
        torch.cuda.synchronize()
        marks, pending = [time.perf_counter()], []
        for batch in batches:
            pending.append(engine.backend.launch(batch, heads))  # type: ignore[attr-defined]
            marks.append(time.perf_counter())
        for p in pending:
            p.result()
            marks.append(time.perf_counter())
    steps = [f"{(b - a) * 1e3:.1f}" for a, b in itertools.pairwise(marks)]
    tokens = [b.num_tokens for b in batches]
    print(f"bare launches of {tokens} tokens, host ms per launch then per collect: {steps}")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        pending = [engine.backend.launch(batch, heads) for batch in batches]  # type: ignore[attr-defined]
        for p in pending:
            p.result()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def torch_trace() -> Any:
    import torch

    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    return torch.profiler.profile(activities=acts)


def report_trace(prof: Any) -> None:
    """TRACE: long host events and long gaps between runtime calls, per thread, from the trace's start."""
    events = [e for e in prof.events() if e.device_type.name == "CPU"]
    if not events:
        return
    origin = min(e.time_range.start for e in events)
    print(f"trace: host events and runtime-call gaps of {TRACE_MS} ms or more (ms from the trace's start)")
    by_thread: dict[int, list[Any]] = {}
    for e in events:
        by_thread.setdefault(e.thread, []).append(e)
    for thread, rows in sorted(by_thread.items()):
        rows.sort(key=lambda e: e.time_range.start)
        for e in rows:
            took = (e.time_range.end - e.time_range.start) / 1e3
            if took >= TRACE_MS:
                at = (e.time_range.start - origin) / 1e3
                print(f"  thread {thread}: {at:8.2f} {e.name[:60]} {took:.1f} ms")
        runtime = [e for e in rows if e.name.startswith(("cuda", "cu"))]
        for a, b in itertools.pairwise(runtime):
            gap = (b.time_range.start - a.time_range.end) / 1e3
            if gap >= TRACE_MS:
                at = (a.time_range.end - origin) / 1e3
                names = f"after {a.name[:40]}, before {b.name[:40]}"
                print(f"  thread {thread}: {at:8.2f} gap {gap:.1f} ms {names}")


def main() -> None:
    tokenizer, scratch = Path(sys.argv[1]), Path(sys.argv[2])
    workload = sys.argv[3] if len(sys.argv) > 3 else "rerank"
    model = "bge-reranker-v2-m3" if workload == "rerank" else "bge-m3"
    path = scratch / model
    if not (path / "config.json").is_file():
        build_synthetic(model, path, tokenizer)
    device = os.environ.get("DEVICE", "cuda")  # DEVICE=cpu: a dry run on a tiny checkpoint
    dtype = "fp32" if device == "cpu" else "fp16" if workload == "rerank" else "bf16"
    settings = EngineSettings(model=str(path), backend="fast", device=device, dtype=dtype)
    engine = Engine.from_settings(settings)
    maker = TextMaker(engine.tokenizer._tok)
    if workload == "rerank":
        query = maker.text(24)
        passages = maker.texts(maker.uniform_lengths(100, 250, 350))
        call = lambda: engine.rerank(query, passages, max_length=min(512, engine.tasks.max_length))  # noqa: E731
    elif workload == "passages":
        texts = maker.passages(2000)
        call = lambda: engine.embed(texts, max_length=2048, sparse=ALL, colbert=ALL)  # noqa: E731
    else:
        docs = maker.long_documents(24)
        call = lambda: engine.embed(docs, max_length=min(8192, engine.tasks.max_length))  # noqa: E731
    for _ in range(3):
        call()
    bare_launches(engine, workload)
    if os.environ.get("SWITCH"):  # the GIL's switch interval (default 5 ms), to test a convoy
        sys.setswitchinterval(float(os.environ["SWITCH"]))
        print(f"switch interval {sys.getswitchinterval()}")
    instrument()
    if DETAIL:
        instrument_detail()
    trace = None
    for round_ in range(3):
        EVENTS.clear()
        before = allocator_counters() if DETAIL and device == "cuda" else {}
        sampler = MainSampler() if DETAIL and round_ == 2 else None
        if sampler is not None:
            sampler.start()
        if TRACE and round_ == 2:
            trace = torch_trace()
            trace.__enter__()
        DEVICE.clear()
        origin = device_event() if DETAIL else None
        start = time.perf_counter()
        note("call")
        call()
        note("return")
        if trace is not None:
            trace.__exit__(None, None, None)
        if sampler is not None:
            sampler.stop()
    print(f"{workload}: last of 3 calls, {(EVENTS[-1][0] - start) * 1e3:.1f} ms")
    if before:
        after = allocator_counters()
        print("CUDA allocator during the last call:", {k: after[k] - before[k] for k in after})
    if sampler is not None:
        sampler.report(start)
    if trace is not None:
        report_trace(trace)
    report_device(origin)
    for t, thread, what in EVENTS:
        print(f"  {(t - start) * 1e3:7.2f} ms  {thread:22s} {what}")


if __name__ == "__main__":
    main()
