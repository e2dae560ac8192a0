"""`m3engine bench`: the issue's workloads on a synthetic (or real) model, engine vs transformers.

m3engine bench --synthetic bge-m3 --tokenizer ../shared/fixtures/xlmr-tokenizer --out bench-results
m3engine bench --synthetic bge-reranker-v2-m3 --tokenizer ... --out bench-results
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from m3engine.bench.synthetic import MODELS, Architecture


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--synthetic", choices=MODELS, default="bge-m3", help="build this architecture, random weights"
    )
    source.add_argument("--model", type=Path, help="a real checkpoint directory instead")
    parser.add_argument(
        "--tokenizer", type=Path, help="tokenizer files for the synthetic model (else a made-up one)"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32", "fp8"])
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--long-docs", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-lengths", type=_ints, default=(128, 256, 512, 1024, 2048, 4096, 8192))
    parser.add_argument("--batch-sizes", type=_ints, default=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    parser.add_argument(
        "--tiny", action="store_true", help="a 2-layer, 64-wide model and small workloads (a smoke test)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `bench` on an argparse subparsers object; the handler is in `func`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="benchmark the engine against plain transformers"
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)
    from m3engine.bench.serve import add_http_parsers

    # `m3engine bench serve|inprocess ...`: the HTTP load test; plain `m3engine bench` is unchanged.
    add_http_parsers(parser.add_subparsers(dest="bench_command", metavar="{serve,inprocess}"))
    return parser


def run_command(args: argparse.Namespace) -> int:
    from m3engine.bench.report import markdown, write
    from m3engine.bench.runner import BenchConfig, run

    arch = Architecture(layers=2, hidden=64, heads=4, ffn=128) if args.tiny else Architecture()
    derived = {"synthetic", "accuracy_texts", "arch"}
    given = {f.name for f in dataclasses.fields(BenchConfig)} & set(vars(args)) - derived
    config = BenchConfig(
        **{name: getattr(args, name) for name in given},  # flags named as the config's fields
        synthetic=None if args.model else args.synthetic,
        accuracy_texts=min(200, args.passages),
        arch=arch,
    )
    report = run(config)
    stem = f"{report['model'].replace('/', '_')}-{args.dtype}"
    paths = write(report, args.out, stem)
    print(markdown(report))
    print("wrote", ", ".join(str(p) for p in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="m3engine bench", description=__doc__)
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
