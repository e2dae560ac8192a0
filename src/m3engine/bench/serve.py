"""`m3engine bench serve`: drive a running server over real HTTP at a fixed concurrency.

    m3engine bench serve --url http://127.0.0.1:8080 --workload passages --concurrency 32 --duration 30 \\
        --output bench.json --plot bench.png

Each of N clients sends its next request as soon as its previous one is answered (closed loop), for
`duration` seconds. The report gives throughput, latency percentiles of successful requests, and
errors by status (0 = transport error) with their own latencies (how fast a 429 came back), as JSON
(stdout and --output) and a PNG plot (--plot).

A refused client retries at once by default: the worst case a server must survive. With
--honour-retry-after it first waits the response's Retry-After (up to 60 s), as the OpenAI and
Cohere SDKs do; the wait is not part of any request's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from m3engine.bench.http_client import Connection, host_port
from m3engine.bench.http_report import Sample, plot, summarize
from m3engine.bench.http_workloads import WORKLOADS
from m3engine.bench.inprocess import add_inprocess_parser
from m3engine.bench.loop_stats import client_loop, scrape, server_loops
from m3engine.process.loopwatch import LoopWatch, Recorder

PREPARED_BODIES = 64  # distinct requests per client, cycled
MAX_RETRY_AFTER_S = 60.0  # the OpenAI SDK's cap: a longer Retry-After is not honoured as given


async def run(
    url: str,
    workload: str,
    concurrency: int,
    duration: float,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    seed: int = 0,
    honour_retry_after: bool = False,
    recorder: Recorder | None = None,
) -> tuple[list[Sample], float]:
    """`concurrency` closed-loop clients for `duration` seconds; client i's requests come from seed
    `seed * 1_000_003 + i`, so a run is repeatable and processes (distinct seeds) differ. A
    `recorder` gets this loop's lag and GC pauses meanwhile."""
    make = WORKLOADS[workload]
    host, port = host_port(url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    samples: list[Sample] = []
    begin = time.perf_counter()
    stop_at = begin + duration

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        # Bodies made ahead: JSON encoding in the loop would cost the client, not the server, CPU.
        prepared = [make(rng, model) for _ in range(PREPARED_BODIES)]
        bodies = [(path, json.dumps(body).encode(), inputs) for path, body, inputs in prepared]
        conn = Connection(host, port, headers, timeout)
        i = 0
        while time.perf_counter() < stop_at:
            path, body, inputs = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            status = await conn.post(path, body)
            now = time.perf_counter()
            samples.append(Sample(start - begin, now - start, status, inputs, conn.server_ms, conn.frontend))
            if honour_retry_after and status != 200 and conn.retry_after_s:
                await asyncio.sleep(min(conn.retry_after_s, MAX_RETRY_AFTER_S, max(0.0, stop_at - now)))
        await conn.close()

    watch = LoopWatch(recorder) if recorder is not None else None
    if watch is not None:
        watch.start()
    try:
        await asyncio.gather(*(client(seed * 1_000_003 + i) for i in range(concurrency)))
    finally:
        if watch is not None:
            await watch.stop()
    return samples, time.perf_counter() - begin


Job = tuple[str, str, int, float, str | None, str | None, float, int, bool]


def _run_share(job: Job) -> tuple[list[Sample], float, dict[str, Any]]:
    recorder = Recorder()
    samples, elapsed = asyncio.run(run(*job, recorder=recorder))
    return samples, elapsed, client_loop(recorder)


def run_processes(
    processes: int,
    url: str,
    workload: str,
    concurrency: int,
    duration: float,
    model: str | None,
    api_key: str | None,
    timeout: float,
    honour_retry_after: bool = False,
) -> tuple[list[Sample], float, list[dict[str, Any]]]:
    """The clients split over `processes` processes, so that the load generator is not the limit;
    also each process's loop lag and GC pauses (loop_stats.client_loop)."""
    if processes <= 1:
        samples, elapsed, loop = _run_share(
            (url, workload, concurrency, duration, model, api_key, timeout, 0, honour_retry_after)
        )
        return samples, elapsed, [loop]
    import multiprocessing

    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    jobs: list[Job] = [
        (url, workload, c, duration, model, api_key, timeout, i, honour_retry_after)
        for i, c in enumerate(shares)
        if c > 0
    ]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_run_share, jobs)
    samples = [s for share, _, _ in results for s in share]
    return samples, max(elapsed for _, elapsed, _ in results), [loop for _, _, loop in results]


def cmd_bench_serve(args: argparse.Namespace) -> int:
    processes = args.processes or max(1, min(args.concurrency, (os.cpu_count() or 2) // 2))
    before = scrape(args.url, args.api_key)
    samples, elapsed, client_loops = run_processes(
        processes,
        args.url,
        args.workload,
        args.concurrency,
        args.duration,
        args.model,
        args.api_key,
        args.timeout,
        args.honour_retry_after,
    )
    settings: dict[str, Any] = {
        "url": args.url,
        "workload": args.workload,
        "concurrency": args.concurrency,
        "client_processes": processes,
        "model": args.model,
        "honour_retry_after": args.honour_retry_after,
    }
    summary = summarize(samples, elapsed, settings)
    # Loop lag and GC pauses during the run: the server's per process (from /metrics), and ours.
    summary["diagnostics"]["server_loops"] = server_loops(before, scrape(args.url, args.api_key))
    summary["diagnostics"]["client_loops"] = client_loops
    text = json.dumps(summary, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    if args.plot:
        plot(samples, summary, Path(args.plot))
    return 0


def add_http_parsers(kinds: Any) -> None:
    """Add `serve` and `inprocess` under `m3engine bench` (its subparsers object)."""
    serve = kinds.add_parser("serve", help="Load a running server over HTTP.", description=__doc__)
    serve.add_argument("--url", default="http://127.0.0.1:8080", help="The server's base URL.")
    serve.add_argument("--workload", choices=sorted(WORKLOADS), default="queries")
    serve.add_argument("--concurrency", type=int, default=16, help="Clients sending at once (closed loop).")
    serve.add_argument("--duration", type=float, default=30.0, help="Seconds to run.")
    serve.add_argument("--model", help="The `model` field to send; the server's default when omitted.")
    serve.add_argument("--api-key", help="Bearer key, when the server needs one.")
    serve.add_argument("--timeout", type=float, default=60.0, help="Per-request client timeout, seconds.")
    serve.add_argument(
        "--processes",
        type=int,
        default=0,
        help="Client processes sharing the concurrency (default: cores / 2).",
    )
    serve.add_argument(
        "--honour-retry-after",
        action="store_true",
        help="After a refusal, wait its Retry-After before the next request (as the OpenAI and Cohere "
        "SDKs do); by default a refused client retries at once (the worst case).",
    )
    serve.add_argument("--output", help="Also write the JSON report here.")
    serve.add_argument("--plot", help="Write a PNG plot of throughput and latency over time here.")
    serve.set_defaults(func=cmd_bench_serve)
    add_inprocess_parser(kinds)
