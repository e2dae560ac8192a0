"""Prometheus metrics, one registry per server (tests build many servers in one process).

Error labels come from the closed set in errors.py; anything else is counted as "internal", so a
label can never carry user input or grow without bound.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from m3engine.errors import error_labels

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)
OUTCOMES = error_labels() | {"ok", "cancelled"}
STAGES = ("tokenize", "queue", "forward", "total")


class Metrics:
    def __init__(self) -> None:
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
        self.batch_failures = Counter(
            "m3engine_batch_failures", "Forward passes that failed, by error label", ["error"], registry=r
        )
        self.oom_splits = Counter(
            "m3engine_oom_splits", "Batches split in two after an out-of-memory error", registry=r
        )
        self.queue_depth = Gauge(
            "m3engine_queue_depth", "Sequences waiting for a batch", ["model"], registry=r
        )
        self.admitted_requests = Gauge("m3engine_admitted_requests", "Requests holding admission", registry=r)
        self.admitted_tokens = Gauge("m3engine_admitted_tokens", "Tokens holding admission", registry=r)
        self.ready = Gauge("m3engine_ready", "1 when /ready answers 200", registry=r)
        self.gpu_memory = Gauge("m3engine_gpu_memory_bytes", "CUDA memory allocated by torch", registry=r)
        self.gpu_memory.set_function(_gpu_memory)

    def count(self, route: str, outcome: str) -> None:
        self.requests.labels(route=route, outcome=outcome if outcome in OUTCOMES else "internal").inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def track_admission(self, requests: Callable[[], float], tokens: Callable[[], float]) -> None:
        self.admitted_requests.set_function(requests)
        self.admitted_tokens.set_function(tokens)


def _gpu_memory() -> float:
    try:
        import torch
    except ImportError:
        return 0.0
    return float(torch.cuda.memory_allocated()) if torch.cuda.is_available() else 0.0
