"""Cross-encoder tasks: a query against documents (ranked), and (query, passage) pairs (scored in order)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from m3engine.errors import InvalidInputTypeError
from m3engine.results import RerankResult
from m3engine.tasks import postprocess
from m3engine.tasks.context import TaskContext, split_pairs
from m3engine.tasks.options import PairScoreOptions, RerankOptions
from m3engine.tasks.prepared import Bulk, Prepared, estimate_tokens
from m3engine.tokenization.tokenizer import check_texts
from m3engine.types import BatchOutputs, Encoded, HeadRequest


def rerank(
    ctx: TaskContext, query: str, documents: Sequence[str], options: RerankOptions
) -> Prepared[list[RerankResult]]:
    """Tokenized at once; `options.max_chunks_per_doc` > 1 scores each document as windows."""
    if not options.chunked:
        return rerank_bulk(ctx, query, documents, options).prepare()
    query, docs = _inputs(ctx, query, documents)
    assert options.max_chunks_per_doc is not None
    limit, q_limit = ctx.pair_limits(options.max_length, options.query_max_length)
    windows = ctx.tokenizer.encode_pair_chunks(query, docs, limit, q_limit, options.max_chunks_per_doc)
    bounds = np.cumsum([0] + [len(w) for w in windows])  # doc i owns rows bounds[i]:bounds[i+1]
    encoded = [e for w in windows for e in w]

    def finish(out: BatchOutputs) -> list[RerankResult]:
        assert out.logits is not None
        # Sigmoid is monotonic, so the best window by logit is the best by score.
        logits = np.array([out.logits[a:b, 0].max() for a, b in itertools.pairwise(bounds)])
        sizes = [(sum(len(e) for e in w), w[0].truncated) for w in windows]
        return _ranked(logits, sizes, docs, options)

    return Prepared(encoded, HeadRequest(logits=True), finish)


def rerank_bulk(
    ctx: TaskContext, query: str, documents: Sequence[str], options: RerankOptions
) -> Bulk[list[RerankResult]]:
    """One sequence per document (`max_chunks_per_doc` is for `rerank`, which tokenizes at once)."""
    query, docs = _inputs(ctx, query, documents)
    max_length, query_max = options.max_length, options.query_max_length
    limit, _ = ctx.pair_limits(max_length, query_max)
    sizes = estimate_tokens([query + d for d in docs], limit)

    def encode(a: int, b: int) -> list[Encoded]:
        return ctx.encode_pairs([query] * (b - a), docs[a:b], options.truncate, max_length, query_max)

    def finish(encoded: list[Encoded], out: BatchOutputs) -> list[RerankResult]:
        assert out.logits is not None
        sizes = [(len(e), e.truncated) for e in encoded]
        return _ranked(out.logits[:, 0], sizes, docs, options)

    return Bulk(sizes, encode, HeadRequest(logits=True), finish)


def score_pairs_bulk(
    ctx: TaskContext, pairs: Sequence[Sequence[str]], options: PairScoreOptions
) -> Bulk[list[float]]:
    """FlagReranker's `compute_score`: one score per (query, passage) pair, in input order."""
    ctx.require("score_pairs")
    queries, passages = split_pairs(pairs)
    sizes = estimate_tokens([q + p for q, p in zip(queries, passages, strict=True)], ctx.max_length)

    def encode(a: int, b: int) -> list[Encoded]:
        return ctx.encode_pairs(queries[a:b], passages[a:b], options.truncate, None, None)

    def finish(encoded: list[Encoded], out: BatchOutputs) -> list[float]:
        assert out.logits is not None
        logits = out.logits[:, 0]
        return (postprocess.sigmoid(logits) if options.normalize else logits).tolist()  # type: ignore[no-any-return]

    return Bulk(sizes, encode, HeadRequest(logits=True), finish)


def _inputs(ctx: TaskContext, query: str, documents: Sequence[str]) -> tuple[str, list[str]]:
    ctx.require("rerank")
    if not isinstance(query, str):
        raise InvalidInputTypeError(f"the query is a {type(query).__name__}, not a string")
    return check_texts([query], "query")[0], check_texts(documents, "document")


def _ranked(
    logits: np.ndarray,  # (N,) one logit per document
    sizes: list[tuple[int, bool]],  # (tokens, truncated) per document
    docs: list[str],
    options: RerankOptions,
) -> list[RerankResult]:
    scores = postprocess.sigmoid(logits) if options.normalize else logits
    # by logit: float32 sigmoids of logits above ~17 are all 1.0 and would tie
    order = np.argsort(-logits, kind="stable")[: options.top_n or len(docs)]
    return [
        RerankResult(
            index=int(i),
            score=float(scores[i]),
            logit=float(logits[i]),
            num_tokens=sizes[i][0],
            truncated=sizes[i][1],
            document=docs[i] if options.return_documents else None,
        )
        for i in order
    ]
