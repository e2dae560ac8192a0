"""Engine configurations timed on the same workloads, in turn, in one process.

    PYTHONPATH=src python benchmarks/settings_ab.py --tokenizer TOKENIZER_DIR \
        --config max_batch_tokens=16384 --config max_batch_tokens=32768 \
        [--workloads passages,passages-all,long] [--rounds 4] [--device cuda] [--json OUT]

Each --config is a comma-separated list of EngineSettings fields (KEY=VALUE, as `m3engine serve`
takes them: max_batch_tokens, max_batch_size, dtype, backend, ...) on top of the common ones
(--backend, --device, --dtype); without --config, one configuration of the defaults (a cold start's
numbers: its first pass against the steady rounds). One Engine is loaded per configuration
(`Engine.load`), and all of them stay loaded. Round after round, every configuration runs every
workload (round 0 warms up: CUDA graphs, pools, kernel compiles), in the given order in odd rounds
and reversed in even ones, so drift on the machine falls on all alike. Prints, per configuration,
the seconds `Engine.load` took, each workload's tokens/s (median of the rounds) and its ratio to the
first configuration, and the warm-up round's time against the steady median (the first pass after
load: in a fresh process, what a cold start costs); --json writes the same numbers.

Without --model it builds a synthetic checkpoint of BGE-M3's (or, with --synthetic
bge-reranker-v2-m3, the reranker's) shape; --tiny makes it one layer deep, a dry run on the CPU:

    PYTHONPATH=src python benchmarks/settings_ab.py --tiny --device cpu --passages 40 --long-docs 2 \
        --rounds 1 --config max_batch_tokens=512 --config max_batch_tokens=2048
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
import typing
from pathlib import Path
from typing import Any

from m3engine import Engine, EngineSettings
from workloads import EMBED, RERANK, add_model_arguments, add_size_arguments, checkpoint, tokens, workloads

FIELDS = {f.name: f for f in dataclasses.fields(EngineSettings)}
HINTS = typing.get_type_hints(EngineSettings)


def _value(key: str, text: str) -> Any:
    """`text` as the type of EngineSettings field `key`."""
    hint = HINTS[key]
    kinds = typing.get_args(hint) or (hint,)
    if text.lower() == "none" and type(None) in kinds:
        return None
    for kind in (bool, int, float):
        if kind in kinds:
            if kind is bool:
                return text.lower() in ("1", "true", "yes", "on")
            return kind(text)
    return text


def parse_config(text: str) -> dict[str, Any]:
    """ "max_batch_tokens=8192,dtype=fp16" -> {"max_batch_tokens": 8192, "dtype": "fp16"}."""
    config: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in FIELDS:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(FIELDS))}"
            )
        try:
            config[key] = _value(key, raw.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{part!r}: {error}") from error
    return config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    add_size_arguments(p)
    p.add_argument(
        "--config",
        type=parse_config,
        action="append",
        help="KEY=VALUE[,KEY=VALUE...] of EngineSettings, once per configuration; without it, one "
        "configuration of the defaults (its first pass against its steady rounds: a cold start)",
    )
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument(
        "--workloads",
        help=f"comma-separated, of {', '.join(EMBED)} (embedders) or {', '.join(RERANK)} (rerankers); "
        "default: all of the model's",
    )
    p.add_argument("--rounds", type=int, default=4, help="timed rounds (after one warm-up round)")
    p.add_argument("--json", type=Path, help="write {config: {workload: tokens/s}} here")
    return p


def label(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "defaults"


def main() -> None:
    args = parser().parse_args()
    common = {"backend": args.backend, "device": args.device, "dtype": args.dtype}
    with tempfile.TemporaryDirectory() as scratch:
        model, reranker = checkpoint(args, Path(scratch))
        names = args.workloads.split(",") if args.workloads else list(RERANK if reranker else EMBED)
        jobs = workloads(args, model, reranker, names)
        configs = args.config or [{}]
        engines, load_s = [], []
        for config in configs:
            start = time.perf_counter()
            engines.append(Engine.load(model, **{**common, **config}))
            load_s.append(time.perf_counter() - start)
        labels = [label(c) for c in configs]
        for name, engine, seconds in zip(labels, engines, load_s, strict=True):
            info = engine.info()
            where = f"{info['backend']} on {info['device']} ({info['dtype']})"
            print(f"{name}: {where}, loaded in {seconds:.1f} s", flush=True)
        counts: dict[str, int] = {}
        first: list[dict[str, float]] = [{} for _ in engines]
        times: list[dict[str, list[float]]] = [{job.name: [] for job in jobs} for _ in engines]
        for round_ in range(args.rounds + 1):
            order = list(range(len(engines)))
            if round_ % 2 == 0:
                order.reverse()
            for i in order:
                for job in jobs:
                    start = time.perf_counter()
                    records = job.call(engines[i], None)
                    seconds = time.perf_counter() - start
                    counts.setdefault(job.name, tokens(records))
                    if round_:
                        times[i][job.name].append(seconds)
                    else:
                        first[i][job.name] = seconds
    rates = [{n: counts[n] / statistics.median(t) for n, t in per.items()} for per in times]
    for name, rate in zip(labels, rates, strict=True):
        cells = [f"{n} {r / 1e3:,.1f} k tok/s ({r / rates[0][n]:.3f}x)" for n, r in rate.items()]
        print(f"{name}: " + " | ".join(cells), flush=True)
    for name, per, cold in zip(labels, times, first, strict=True):
        cells = [
            f"{n} {cold[n]:.3f} s ({cold[n] / statistics.median(t):.2f}x steady)" for n, t in per.items()
        ]
        print(f"{name}: first pass " + " | ".join(cells), flush=True)
    if args.json:
        report = {
            name: {"tokens_per_s": rate, "first_pass_s": cold, "load_s": seconds}
            for name, rate, cold, seconds in zip(labels, rates, first, load_s, strict=True)
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
