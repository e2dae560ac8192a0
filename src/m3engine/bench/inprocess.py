"""`m3engine bench inprocess`: the same workloads through the in-process Engine, the baseline for HTTP.

The requests of `duration` seconds' worth are generated as `bench serve` would send them; their texts
go through one `Engine.embed` / `rerank` call each, back to back, so the engine batches within each
call only. The ratio `bench serve` / `bench inprocess` in inputs/s is the server's overhead (or gain,
when cross-request batching beats per-call batches).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from m3engine.bench.http_workloads import WORKLOADS
from m3engine.settings import EngineSettings, add_arguments, from_sources


def cmd_bench_inprocess(args: argparse.Namespace) -> int:
    from m3engine.engine import Engine

    engine = Engine.from_settings(from_sources(EngineSettings, vars(args)))
    make = WORKLOADS[args.workload]
    rng = random.Random(0)
    engine.embed(["warm up"]) if not engine.spec.is_cross_encoder else engine.rerank("q", ["warm up"])
    inputs = calls = 0
    begin = time.perf_counter()
    while time.perf_counter() - begin < args.duration:
        _, body, count = make(rng, None)
        if args.workload == "rerank":
            engine.rerank(body["query"], body["documents"])
        else:
            engine.embed(body["input"], input_type="query" if args.workload == "queries" else "passage")
        inputs, calls = inputs + count, calls + 1
    elapsed = time.perf_counter() - begin
    report: dict[str, Any] = {
        "workload": args.workload,
        "model": engine.spec.name,
        "calls": calls,
        "duration_s": round(elapsed, 2),
        "throughput_calls_per_s": round(calls / elapsed, 2),
        "throughput_inputs_per_s": round(inputs / elapsed, 2),
    }
    print(json.dumps(report, indent=2))
    return 0


def add_inprocess_parser(kinds: Any) -> None:
    engine = kinds.add_parser(
        "inprocess", help="bench serve's workloads in-process (its baseline).", description=__doc__
    )
    engine.add_argument("--workload", choices=sorted(WORKLOADS), default="passages")
    engine.add_argument("--duration", type=float, default=30.0, help="Seconds to run.")
    add_arguments(engine)
    engine.set_defaults(func=cmd_bench_inprocess)
