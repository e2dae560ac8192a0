"""Event-loop lag and GC pauses during a benchmark run, on both sides of the socket.

Server: `/metrics` is read before and after the run; the difference of the histograms
`m3engine_event_loop_lag_seconds` and `m3engine_gc_pause_seconds` and of the counter
`m3engine_event_loop_stalls` (m3engine/loopwatch.py) gives, per server process (main, frontend-i),
what happened during the run alone. A histogram keeps counts per bucket, not values: p99 is
interpolated inside its bucket and the maximum is known only as the bucket's upper bound
(`max_le_ms`).

Client: each load-generator process runs a LoopWatch of its own (`Recorder`), so a tail made by the
load generator's loop shows as itself.
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from typing import Any

from m3engine.process.loopwatch import Recorder

LAG, GC, STALLS = "m3engine_event_loop_lag_seconds", "m3engine_gc_pause_seconds", "m3engine_event_loop_stalls"
# (metric, process, generation or cause, le) -> value
Scrape = dict[tuple[str, str, str, str], float]


def scrape(url: str, api_key: str | None = None, timeout: float = 10.0) -> Scrape | None:
    """The loop and GC series of a server's /metrics; None when it cannot be read."""
    request = urllib.request.Request(url.rstrip("/") + "/metrics")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return None
    return parse(text)


def parse(text: str) -> Scrape:
    # Imported here: `m3engine serve --frontends N` must set PROMETHEUS_MULTIPROC_DIR before any
    # import of prometheus_client, and the CLI imports this module's parser at start.
    from prometheus_client.parser import text_string_to_metric_families

    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (LAG, GC, STALLS):
            continue
        for sample in family.samples:
            labels = sample.labels
            kind = labels.get("generation") or labels.get("cause") or ""
            suffix = sample.name[len(family.name) :]  # _bucket, _count, _sum, _total
            out[(family.name + suffix, labels.get("process", ""), kind, labels.get("le", ""))] = sample.value
    return out


def server_loops(before: Scrape | None, after: Scrape | None) -> dict[str, Any] | None:
    """Per server process: lag p99 / max, stalls by cause, GC pauses by generation, during the run."""
    if before is None or after is None:
        return None
    delta: Scrape = {key: value - before.get(key, 0.0) for key, value in after.items()}
    processes = sorted({process for (_, process, _, _) in delta})
    report: dict[str, Any] = {}
    for process in processes:
        lag = _buckets(delta, LAG + "_bucket", process, "")
        gc: dict[str, Any] = {}
        for generation in ("0", "1", "2"):
            buckets = _buckets(delta, GC + "_bucket", process, generation)
            count = delta.get((GC + "_count", process, generation, ""), 0.0)
            if count > 0:
                gc[generation] = {
                    "count": int(count),
                    "total_ms": round(1000 * delta.get((GC + "_sum", process, generation, ""), 0.0), 1),
                    **_summary(buckets),
                }
        report[process] = {
            "lag_ticks": int(delta.get((LAG + "_count", process, "", ""), 0.0)),
            "lag": _summary(lag),
            "stalls": {c: int(delta.get((STALLS + "_total", process, c, ""), 0.0)) for c in ("gc", "other")},
            "gc": gc,
        }
    return report


def _buckets(delta: Scrape, name: str, process: str, kind: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) in order of the bound."""
    return sorted(
        (float(le), value)
        for (n, p, k, le), value in delta.items()
        if n == name and p == process and k == kind
    )


def _summary(buckets: list[tuple[float, float]]) -> dict[str, float | None]:
    """p99 (interpolated in its bucket, as PromQL's histogram_quantile) and the maximum's bucket bound."""
    if not buckets or buckets[-1][1] <= 0:
        return {"p99_ms": None, "max_le_ms": None}
    total = buckets[-1][1]
    rank, lower, below, p99 = 0.99 * total, 0.0, 0.0, math.inf
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                p99 = lower
            else:
                p99 = lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
            break
        lower, below = bound, cumulative
    highest = next(bound for bound, cumulative in buckets if cumulative >= total)
    top = None if math.isinf(highest) else round(1000 * highest, 1)
    return {"p99_ms": round(1000 * p99, 2), "max_le_ms": top}


def client_loop(recorder: Recorder) -> dict[str, Any]:
    """One load-generator process: its loop's lag and its GC pauses (exact values: kept in lists)."""
    lags = sorted(recorder.lags)
    by_generation: dict[int, list[float]] = defaultdict(list)
    for generation, seconds in recorder.pauses:
        by_generation[generation].append(seconds)
    return {
        "lag_ticks": len(lags),
        "lag": {
            "p99_ms": round(1000 * lags[int(0.99 * (len(lags) - 1))], 2) if lags else None,
            "max_ms": round(1000 * lags[-1], 2) if lags else None,
        },
        "stalls": dict(recorder.stalls),
        "gc": {
            str(g): {"count": len(p), "total_ms": round(1000 * sum(p), 1), "max_ms": round(1000 * max(p), 2)}
            for g, p in sorted(by_generation.items())
        },
    }
