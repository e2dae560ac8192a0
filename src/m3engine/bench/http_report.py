"""Summaries of a benchmark run (JSON) and its plot (PNG)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Sample:
    start: float  # seconds since the run began
    latency: float  # seconds
    status: int  # HTTP status; 0 for a transport error (refused, reset, timed out)
    inputs: int
    server_ms: float | None = None  # the server's x-total-time (inside the app), when it sent one
    frontend: str | None = None  # the x-m3engine-frontend that answered (serve --frontends N)


def _percentiles(values_ms: list[float], qs: tuple[int, ...] = (50, 99)) -> dict[str, float] | None:
    if not values_ms:
        return None
    return {f"p{q}": round(float(np.percentile(values_ms, q)), 2) for q in qs}


def diagnostics(ok: list[Sample], duration: float) -> dict[str, Any]:
    """Where an admitted request's time goes, for finding a latency tail: the server's own time in
    the app against the client's (the difference is sockets, HTTP parsing and event-loop waits, on
    either side), the p99 per frontend process, and the p99 of each second of the run."""
    inside = [s.server_ms for s in ok if s.server_ms is not None]
    by_frontend: dict[str, list[float]] = {}
    for s in ok:
        if s.frontend is not None:
            by_frontend.setdefault(s.frontend, []).append(s.latency * 1000)
    by_second: list[list[float]] = [[] for _ in range(max(1, int(np.ceil(duration))))]
    for s in ok:
        by_second[min(len(by_second) - 1, int(s.start + s.latency))].append(s.latency * 1000)
    return {
        "server_time_ms": _percentiles(inside),
        "latency_ms_by_frontend": {
            name: {**(_percentiles(lat) or {}), "requests": len(lat)}
            for name, lat in sorted(by_frontend.items())
        },
        "p99_ms_by_second": [round(float(np.percentile(lat, 99)), 2) if lat else None for lat in by_second],
    }


def summarize(samples: list[Sample], duration: float, settings: dict[str, Any]) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200]
    latencies = np.array([s.latency for s in ok]) * 1000 if ok else np.zeros(0)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)), 2) if len(latencies) else None

    return {
        **settings,
        "duration_s": round(duration, 2),
        "requests": len(samples),
        "ok": len(ok),
        "errors_by_status": {
            str(k): v for k, v in sorted(Counter(s.status for s in samples if s.status != 200).items())
        },
        "throughput_rps": round(len(ok) / duration, 2),
        "throughput_inputs_per_s": round(sum(s.inputs for s in ok) / duration, 2),
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": pct(100)},
        "error_latency_ms": {  # how fast refusals come back (a 429 should cost next to nothing)
            str(status): {
                "p50": round(float(np.percentile(lat, 50)) * 1000, 2),
                "p99": round(float(np.percentile(lat, 99)) * 1000, 2),
            }
            for status, lat in _by_status(samples).items()
            if status != 200
        },
        "diagnostics": diagnostics(ok, duration),
    }


def _by_status(samples: list[Sample]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for s in samples:
        out.setdefault(s.status, []).append(s.latency)
    return out


def plot(samples: list[Sample], summary: dict[str, Any], path: Path) -> None:
    """Per-second throughput (by status) and latency percentiles of successful requests."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError("the plot needs matplotlib: pip install matplotlib") from error
    seconds = int(np.ceil(summary["duration_s"])) or 1
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for status in sorted({s.status for s in samples}):
        counts = np.bincount(
            [int(s.start + s.latency) for s in samples if s.status == status], minlength=seconds
        )
        top.plot(np.arange(len(counts)), counts, label=f"status {status or 'transport error'}")
    top.set_ylabel("responses / s")
    top.legend()
    for q in (50, 90, 99):
        series = []
        for second in range(seconds):
            lat = [
                s.latency * 1000 for s in samples if s.status == 200 and int(s.start + s.latency) == second
            ]
            series.append(np.percentile(lat, q) if lat else np.nan)
        bottom.plot(np.arange(seconds), series, label=f"p{q}")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("time (s)")
    bottom.legend()
    title = f"{summary['workload']} @ concurrency {summary['concurrency']}: {summary['throughput_rps']} req/s"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
