"""The `m3engine` command: embed, rerank, info, serve, bench, build, validate (settings flags = env vars)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from m3engine.errors import InputError, M3EngineError
from m3engine.settings import EngineSettings, add_arguments, from_sources
from m3engine.sparse_formats import SPARSE_STYLES, SparseFormat
from m3engine.tasks.options import EmbedOptions, RerankOptions
from m3engine.tokenization.tokenizer import check_texts

Command = Callable[[argparse.Namespace], int]
ONNX_CAPABLE = ("embed", "rerank", "info", "serve")  # the commands that may load only the onnx backend


def _engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from m3engine.engine import Engine

    settings: EngineSettings = from_sources(EngineSettings, vars(args))
    return Engine.from_settings(settings)


def _texts(args: argparse.Namespace) -> list[str]:
    from m3engine.cli.files import read_texts

    if args.text and args.input:
        raise InputError("give texts with --text or a file with --input, not both")
    if args.input:
        return read_texts(Path(args.input), args.field)
    if args.text:
        return list(args.text)
    raise InputError("nothing to do: pass --text TEXT (repeatable) or --input FILE (.txt, .jsonl, .parquet)")


class _Progress:
    """A tqdm bar with texts/s and tokens/s, fed by the engine after each forward pass."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="text", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        self.tokens = 0
        self.start = time.perf_counter()

    def __call__(self, texts: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tok/s", refresh=False)
        self.bar.update(texts)

    def close(self) -> None:
        self.bar.close()


def _stop_on_sigterm() -> None:
    """SIGTERM ends the command as Ctrl-C does, through its `finally` blocks: an output file being
    written is removed, not left behind half-written."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def cmd_embed(args: argparse.Namespace) -> int:
    from m3engine.cli.corpus import cmd_corpus, is_corpus
    from m3engine.cli.files import EmbeddingWriter

    _stop_on_sigterm()
    if args.chunk_size < 1:
        raise InputError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    options = EmbedOptions(
        dense=args.dense,
        sparse=args.sparse,
        colbert=args.colbert,
        input_type="query" if args.query else "passage",
        truncate=args.truncate,
        dimensions=args.dimensions,
    )
    if is_corpus(args):
        return cmd_corpus(args, options)
    writer = EmbeddingWriter(Path(args.output) if args.output else None, stream=sys.stdout)
    writer.check_outputs(args.sparse, args.colbert)
    texts = check_texts(_texts(args))  # every text checked before anything is written
    engine = _engine(args)
    # pgvector's form carries the vocabulary size, and token keys need the tokenizer: known now
    writer.sparse = SparseFormat(
        args.sparse_format,
        dim=engine.spec.vocab_size,
        token_of=engine.tokenizer.id_to_token if args.sparse_tokens else None,
    )
    if not options.truncate:  # so that an over-long text is named by its place in the whole input
        query = options.input_type == "query"
        prefix = engine.settings.query_instruction if query else ""
        limit = engine.query_max_length if query else engine.max_length
        engine.tokenizer.encode([prefix + t for t in texts], limit, truncate=False)
    progress = _Progress(len(texts)) if args.output else None
    ok = False
    try:
        for start in range(0, len(texts), args.chunk_size):
            chunk = texts[start : start + args.chunk_size]
            records = engine.embed(chunk, options=options, progress=progress)
            writer.write(records, offset=start)
        ok = True
    finally:
        writer.close(ok)
        if progress is not None:
            progress.close()
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from m3engine.cli.files import read_texts

    _stop_on_sigterm()
    documents = list(args.document or [])
    if args.documents:
        documents += read_texts(Path(args.documents), args.field)
    options = RerankOptions(top_n=args.top_n, normalize=not args.raw, truncate=args.truncate)
    engine = _engine(args)
    results = engine.rerank(args.query_text, documents, options=options)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for rank, r in enumerate(results, start=1):
            item = {"rank": rank, **r.to_json(), "document": documents[r.index]}
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    engine = _engine(args)
    print(json.dumps({**engine.info(), "settings": engine.settings.public()}, indent=2))
    return 0


def _input_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", action="append", help="A text to process (repeatable).")
    p.add_argument("--input", help="A file of texts: .txt (a line each), .jsonl or .parquet.")
    p.add_argument("--field", default="text", help="Field / column holding the text in .jsonl and .parquet.")
    p.add_argument(
        "--truncate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Cut texts over the limit (default) or fail on them (--no-truncate).",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m3engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="Embed texts: dense, sparse and ColBERT outputs.")
    _input_flags(embed)
    embed.add_argument(
        "--output",
        help="Write to .jsonl, .npy (dense only), or Parquet: FILE.parquet (one file) or a FOLDER "
        "(parts), both by the corpus job with the same columns; default JSONL on stdout.",
    )
    embed.add_argument("--dense", action=argparse.BooleanOptionalAction, default=True, help="Dense vectors.")
    embed.add_argument("--sparse", action="store_true", help="Sparse lexical weights (BGE-M3).")
    embed.add_argument(
        "--sparse-format",
        default="indices_values",
        choices=SPARSE_STYLES,
        help="How sparse weights are written (default indices_values; see docs/server.md).",
    )
    embed.add_argument(
        "--sparse-tokens",
        action="store_true",
        help="Token strings: keys of elasticsearch / vespa weights, or a tokens list beside indices.",
    )
    embed.add_argument("--colbert", action="store_true", help="ColBERT multi-vectors (BGE-M3).")
    embed.add_argument(
        "--query", action="store_true", help="Texts are queries: instruction and query length."
    )
    embed.add_argument("--dimensions", type=int, help="Keep the first D dense values (then re-normalise).")
    embed.add_argument(
        "--chunk-size", type=int, default=4096, help="Texts written per step (.jsonl and .npy outputs)."
    )
    from m3engine.cli.corpus import add_corpus_flags

    add_corpus_flags(embed)
    add_arguments(embed)
    embed.set_defaults(func=cmd_embed)

    rerank = sub.add_parser("rerank", help="Rank documents by relevance to a query (cross-encoder).")
    rerank.add_argument("--query-text", required=True, help="The query.")
    rerank.add_argument("--document", action="append", help="A document (repeatable).")
    rerank.add_argument("--documents", help="A file of documents: .txt, .jsonl or .parquet.")
    rerank.add_argument("--field", default="text", help="Field / column holding the text.")
    rerank.add_argument("--top-n", type=int, help="Return only the N best documents.")
    rerank.add_argument("--raw", action="store_true", help="Raw logits instead of sigmoid scores.")
    rerank.add_argument("--truncate", action=argparse.BooleanOptionalAction, default=True)
    rerank.add_argument("--output", help="Write the ranking as JSONL here instead of stdout.")
    add_arguments(rerank)
    rerank.set_defaults(func=cmd_rerank)

    info = sub.add_parser("info", help="What the model is: kind, dims, max length, device, dtype, backend.")
    add_arguments(info)
    info.set_defaults(func=cmd_info)

    from m3engine.bench.cli import add_bench_parser
    from m3engine.cli.deploy import add_deploy_parsers
    from m3engine.cli.serve import add_serve_parser

    add_serve_parser(sub)
    add_bench_parser(sub)
    add_deploy_parsers(sub)
    return parser


def _quiet_transformers(args: argparse.Namespace) -> None:
    """transformers' per-load progress bars and notices would drown the command's own output.

    Not where it is not installed (an install for ONNX artifacts), nor for a command whose models run
    on the onnx backend, which never loads it: importing it alone takes about a second.
    """
    if importlib.util.find_spec("transformers") is None:
        return
    if args.command in ONNX_CAPABLE and from_sources(EngineSettings, vars(args)).backend == "onnx":
        return
    from transformers.utils import logging

    logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _quiet_transformers(args)
        code: int = args.func(args)
        return code
    except M3EngineError as error:
        print(f"m3engine: error ({error.label}): {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the output was cleaned up on the way here
        print(
            "m3engine: interrupted; an output file being written was removed (a Parquet output "
            "keeps its finished parts: the same command resumes from them)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
