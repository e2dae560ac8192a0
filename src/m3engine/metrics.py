"""Prometheus metrics, one registry per server (tests build many servers in one process).

Error labels come from the closed set in errors.py; anything else is counted as "internal", so a
label can never carry user input or grow without bound.

With HTTP frontends (`serve --frontends N`) every process writes its values to files under
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, chosen by that variable before
prometheus_client is first imported) and /metrics merges them: counters and histograms are summed
over processes, the admission gauges too, the readiness gauge is the minimum. Gauges read from a
function are then set by `refresh()`, which each process calls on a timer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from m3engine.errors import error_labels

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)
_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10)
_GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)
OUTCOMES = error_labels() | {"ok", "cancelled"}
STAGES = ("tokenize", "queue", "forward", "total")


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV)
        if self.multiprocess_dir is not None and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                f"{MULTIPROC_ENV} was set after prometheus_client was imported; set it before "
                "(m3engine serve --frontends N does this itself)"
            )
        self._functions: list[tuple[Gauge, Callable[[], float]]] = []
        # The labelled children of the per-request metrics (routes and outcomes are closed sets).
        self._counters: dict[tuple[str, str], Counter] = {}
        self._stages: dict[str, Histogram] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "m3engine_requests",
            "Requests by route and outcome (ok or an error label)",
            ["route", "outcome"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "m3engine_stage_seconds",
            "Seconds per request stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "m3engine_batch_size", "Sequences per forward pass", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "m3engine_batch_tokens", "Tokens per forward pass (unpadded)", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.tokens = Counter(
            "m3engine_tokens", "Tokens forwarded (rate() gives tokens/s)", ["model"], registry=r
        )
        # Per device of `--devices` (one engine per device behind one queue).
        self.device_tokens = Counter(
            "m3engine_device_tokens", "Tokens forwarded per device", ["model", "device"], registry=r
        )
        self.device_healthy = Gauge(
            "m3engine_device_healthy",
            "1 while the device takes batches, 0 once it was taken out after a device error",
            ["model", "device"],
            registry=r,
            multiprocess_mode="livemin",
        )
        # --fallback: what the standby backend ran while the primary could not (scheduling/fallback.py)
        self.fallback_batches = Counter(
            "m3engine_fallback_batches", "Forward passes run by the --fallback backend", ["model"], registry=r
        )
        self.fallback_sequences = Counter(
            "m3engine_fallback_sequences",
            "Texts (or pairs) run by the --fallback backend",
            ["model"],
            registry=r,
        )
        self.batch_failures = Counter(
            "m3engine_batch_failures", "Forward passes that failed, by error label", ["error"], registry=r
        )
        self.oom_splits = Counter(
            "m3engine_oom_splits", "Batches split in two after an out-of-memory error", registry=r
        )
        self.queue_depth = Gauge(
            "m3engine_queue_depth",
            "Sequences waiting for a batch",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.admitted_requests = Gauge(
            "m3engine_admitted_requests",
            "Requests holding admission",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.admitted_tokens = Gauge(
            "m3engine_admitted_tokens", "Tokens holding admission", registry=r, multiprocess_mode="livesum"
        )
        self.admitted_answer_bytes = Gauge(
            "m3engine_admitted_answer_bytes",
            "Memory reserved for answers being built or sent",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.precision_fallback = Gauge(
            "m3engine_precision_fallback",
            "1 when the model runs in a fallback dtype because the reduced precision tried at load "
            "(fp8, or bf16 for auto on a CPU) failed the accuracy gate or ran slower (/info's "
            "precision says why), else 0",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            "m3engine_ready", "1 when /ready answers 200", registry=r, multiprocess_mode="livemin"
        )
        self.gpu_memory = Gauge(
            "m3engine_gpu_memory_bytes",
            "CUDA memory allocated by torch",
            registry=r,
            multiprocess_mode="livesum",
        )

        # Per process (label `process`: main, or frontend-i): one stalled frontend must show as itself.
        self.loop_lag = Histogram(
            "m3engine_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 10 ms (loopwatch.py)",
            ["process"],
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.loop_stalls = Counter(
            "m3engine_event_loop_stalls",
            "Timer ticks late by 10 ms or more, by cause: gc (collections took at least half of it) or other",
            ["process", "cause"],
            registry=r,
        )
        self.gc_pauses = Histogram(
            "m3engine_gc_pause_seconds",
            "Cyclic garbage-collector pauses, by generation",
            ["process", "generation"],
            buckets=_GC_BUCKETS,
            registry=r,
        )

    def loop_sink(self, process: str) -> LoopSink:
        """Where a LoopWatch of this process writes (its labelled children, looked up once)."""
        return LoopSink(self, process)

    def count(self, route: str, outcome: str) -> None:
        key = (route, outcome if outcome in OUTCOMES else "internal")
        counter = self._counters.get(key)
        if counter is None:  # labels() checks and locks on every call: once per label set instead
            counter = self._counters[key] = self.requests.labels(route=key[0], outcome=key[1])
        counter.inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        histogram = self._stages.get(stage)
        if histogram is None:
            histogram = self._stages[stage] = self.stage_seconds.labels(stage=stage)
        histogram.observe(seconds)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.refresh()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    def track_admission(
        self,
        requests: Callable[[], float],
        tokens: Callable[[], float],
        answer_bytes: Callable[[], float] | None = None,
    ) -> None:
        self._track(self.admitted_requests, requests)
        self._track(self.admitted_tokens, tokens)
        if answer_bytes is not None:
            self._track(self.admitted_answer_bytes, answer_bytes)

    def track_gpu(self) -> None:
        """Only where the models run: reading it imports torch."""
        self._track(self.gpu_memory, _gpu_memory)

    def refresh(self) -> None:
        """Multiprocess mode: write the function-backed gauges of this process to its files now."""
        for gauge, function in self._functions:
            gauge.set(function())

    def _track(self, gauge: Gauge, function: Callable[[], float]) -> None:
        if self.multiprocess_dir is None:
            gauge.set_function(function)
        else:  # the merging collector reads files only; refresh() keeps them current
            self._functions.append((gauge, function))


def _gpu_memory() -> float:
    # torch only if a backend loaded it: a scrape must not import it into a server that runs without it
    torch = sys.modules.get("torch")
    if torch is None:
        return 0.0
    return float(torch.cuda.memory_allocated()) if torch.cuda.is_available() else 0.0


class LoopSink:
    """loopwatch.WatchSink over the loop and GC metrics of one process."""

    def __init__(self, metrics: Metrics, process: str) -> None:
        self._lag = metrics.loop_lag.labels(process=process)
        self._stalls = {c: metrics.loop_stalls.labels(process=process, cause=c) for c in ("gc", "other")}
        self._gc = [metrics.gc_pauses.labels(process=process, generation=str(g)) for g in range(3)]

    def lag(self, seconds: float) -> None:
        self._lag.observe(seconds)

    def gc_pause(self, generation: int, seconds: float) -> None:
        self._gc[min(generation, 2)].observe(seconds)

    def stall(self, cause: str) -> None:
        self._stalls[cause].inc()
