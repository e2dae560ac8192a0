"""`m3engine bench serve`: drive a running server over real HTTP at a fixed concurrency.

    m3engine bench serve --url http://127.0.0.1:8080 --workload passages --concurrency 32 --duration 30 \\
        --output bench.json --plot bench.png

Each of N clients sends its next request as soon as its previous one is answered (closed loop), for
`duration` seconds. The report gives throughput, latency percentiles of successful requests, and
errors by status (0 = transport error), as JSON (stdout and --output) and a PNG plot (--plot).
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

import httpx

from m3engine.bench.http_report import Sample, plot, summarize
from m3engine.bench.http_workloads import WORKLOADS
from m3engine.bench.inprocess import add_inprocess_parser


async def run(
    url: str,
    workload: str,
    concurrency: int,
    duration: float,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
) -> tuple[list[Sample], float]:
    make = WORKLOADS[workload]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    samples: list[Sample] = []
    begin = time.perf_counter()
    stop_at = begin + duration

    async def client(seed: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < stop_at:
            path, body, inputs = make(rng, model)
            start = time.perf_counter()
            try:
                status = (await http.post(path, json=body)).status_code
            except httpx.TransportError:
                status = 0
            samples.append(Sample(start - begin, time.perf_counter() - start, status, inputs))

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout) as http:
        await asyncio.gather(*(client(i, http) for i in range(concurrency)))
    return samples, time.perf_counter() - begin


def _run_share(
    job: tuple[str, str, int, float, str | None, str | None, float, int],
) -> tuple[list[Sample], float]:
    *params, seed = job
    random.seed(seed)
    return asyncio.run(run(*params))  # type: ignore[arg-type]


def run_processes(
    processes: int,
    url: str,
    workload: str,
    concurrency: int,
    duration: float,
    model: str | None,
    api_key: str | None,
    timeout: float,
) -> tuple[list[Sample], float]:
    """The clients split over `processes` processes: one Python client process tops out at a few
    hundred requests a second (httpx's pool and JSON cost CPU), well below what the server answers."""
    if processes <= 1:
        return asyncio.run(run(url, workload, concurrency, duration, model, api_key, timeout))
    import multiprocessing

    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    jobs = [(url, workload, c, duration, model, api_key, timeout, i) for i, c in enumerate(shares) if c > 0]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        results = pool.map(_run_share, jobs)
    return [s for samples, _ in results for s in samples], max(elapsed for _, elapsed in results)


def cmd_bench_serve(args: argparse.Namespace) -> int:
    processes = args.processes or max(1, min(args.concurrency, (os.cpu_count() or 2) // 2))
    samples, elapsed = run_processes(
        processes,
        args.url,
        args.workload,
        args.concurrency,
        args.duration,
        args.model,
        args.api_key,
        args.timeout,
    )
    settings: dict[str, Any] = {
        "url": args.url,
        "workload": args.workload,
        "concurrency": args.concurrency,
        "client_processes": processes,
        "model": args.model,
    }
    summary = summarize(samples, elapsed, settings)
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
    serve.add_argument("--output", help="Also write the JSON report here.")
    serve.add_argument("--plot", help="Write a PNG plot of throughput and latency over time here.")
    serve.set_defaults(func=cmd_bench_serve)
    add_inprocess_parser(kinds)
