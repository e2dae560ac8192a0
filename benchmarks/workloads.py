"""The workloads the benchmarks share (a sibling module: run a benchmark as a script and this
directory is on the path): a checkpoint to load, and the bench's calls on it.

Each workload is one public `Engine` call: the bench's 2,000 mixed passages (lognormal lengths,
median ~200 tokens, up to 2,048), dense or all three outputs; 24 long documents (4,000-8,000
tokens); and one query against 100 passages of 250-350 tokens for the reranker. `queries` is
QUERY_CALLS calls of 1-8 short queries each, one after another (the small batches of online
traffic, which replay CUDA graphs). Their texts are
made from the checkpoint's own tokenizer (`m3engine.bench.texts.TextMaker`).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from m3engine import Embedding, RerankResult
from m3engine.bench.synthetic import MODELS, Architecture, build_synthetic
from m3engine.bench.texts import TextMaker

if TYPE_CHECKING:
    from m3engine import Engine

Progress = Callable[[int, int], None]
TINY = Architecture(layers=1, hidden=64, heads=4, ffn=128, vocab=1000)
EMBED = ("passages", "passages-all", "long", "queries")
QUERY_CALLS = 200  # the queries workload: this many calls of 1-8 queries of 8-40 tokens
RERANK = ("rerank",)


@dataclass(frozen=True)
class Workload:
    name: str
    # (engine, progress) -> one record per input; progress(inputs, tokens) follows each forward
    # pass of an embed call (the rerank takes none)
    call: Callable[[Engine, Progress | None], Sequence[Embedding | RerankResult]]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", help="a checkpoint directory or hub id (default: a synthetic one)")
    group.add_argument(
        "--synthetic",
        choices=MODELS,
        default="bge-m3",
        help="the random-weight checkpoint of this shape to build when --model is not given",
    )
    group.add_argument("--tokenizer", type=Path, help="tokenizer files for the synthetic checkpoint")
    group.add_argument(
        "--tiny", action="store_true", help="a one-layer synthetic checkpoint: a dry run on the CPU"
    )


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload sizes")
    group.add_argument("--passages", type=int, default=2000, help="texts in the passages workloads")
    group.add_argument("--long-docs", type=int, default=24, help="texts in the long workload")
    group.add_argument("--rerank-passages", type=int, default=100, help="passages per rerank query")


def checkpoint(args: argparse.Namespace, scratch: Path) -> tuple[str, bool]:
    """(the model to load, whether it is a reranker)."""
    if args.model:
        from m3engine.models.spec import inspect_model

        return args.model, inspect_model(Path(args.model)).is_cross_encoder
    arch = Architecture()
    if args.tiny:  # a real tokenizer keeps its vocabulary; the made-up one needs few words
        arch = TINY if args.tokenizer is None else dataclasses.replace(TINY, vocab=arch.vocab)
    path = build_synthetic(args.synthetic, scratch / args.synthetic, args.tokenizer, arch)
    return str(path), args.synthetic == "bge-reranker-v2-m3"


def workloads(args: argparse.Namespace, model: str, reranker: bool, names: list[str]) -> list[Workload]:
    from tokenizers import Tokenizer

    path = Path(model)
    tokenizer = (
        Tokenizer.from_file(str(path / "tokenizer.json"))
        if path.is_dir()
        else Tokenizer.from_pretrained(model)
    )
    maker = TextMaker(tokenizer)
    known = RERANK if reranker else EMBED
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown workloads {unknown} for this model; choose from {', '.join(known)}")
    out: list[Workload] = []
    for name in names:
        if name == "rerank":
            query = maker.text(24)
            passages = maker.texts(maker.uniform_lengths(args.rerank_passages, 250, 350))

            def rerank(
                engine: Engine, progress: Progress | None, q: str = query, p: list[str] = passages
            ) -> list[RerankResult]:
                return engine.rerank(q, p, max_length=min(512, engine.max_length))

            out.append(Workload(name, rerank))
            continue
        if name == "queries":
            out.append(Workload(name, _queries(maker)))
            continue
        texts = maker.long_documents(args.long_docs) if name == "long" else maker.passages(args.passages)
        limit, every = (8192, False) if name == "long" else (2048, name == "passages-all")

        def embed(
            engine: Engine, progress: Progress | None, t: list[str] = texts, n: int = limit, m3: bool = every
        ) -> list[Embedding]:
            limit = min(n, engine.max_length)
            return engine.embed(t, max_length=limit, sparse=m3, colbert=m3, progress=progress)

        out.append(Workload(name, embed))
    return out


def _queries(maker: TextMaker) -> Callable[[Engine, Progress | None], list[Embedding]]:
    sizes = maker.uniform_lengths(QUERY_CALLS, 1, 8)
    calls = [maker.texts(maker.uniform_lengths(n, 8, 40)) for n in sizes]

    def queries(engine: Engine, progress: Progress | None) -> list[Embedding]:
        return [record for texts in calls for record in engine.embed(texts)]

    return queries


def tokens(records: Sequence[Embedding | RerankResult]) -> int:
    """The tokens a call's records say the model saw."""
    return sum(r.num_tokens for r in records)
