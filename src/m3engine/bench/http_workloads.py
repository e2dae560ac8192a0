"""Request bodies for the HTTP benchmark: short queries, mixed-length passages, rerank calls.

Texts are synthetic but deterministic (a seeded word sampler), so two runs send the same requests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

WORDS = [
    "retrieval",
    "dense",
    "sparse",
    "vector",
    "model",
    "query",
    "passage",
    "search",
    "index",
    "token",
    "layer",
    "attention",
    "batch",
    "document",
    "ranking",
    "score",
    "embedding",
    "language",
    "multilingual",
    "server",
    "latency",
    "memory",
    "throughput",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "that",
    "this",
    "be",
    "are",
    "it",
    "or",
    "an",
]

Body = tuple[str, dict[str, Any], int]  # (path, JSON body, number of inputs)


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def queries(rng: random.Random, model: str | None) -> Body:
    """One short query per request (the latency-bound case)."""
    return "/v1/embeddings", {"input": _text(rng, rng.randint(4, 16)), "model": model}, 1


def passages(rng: random.Random, model: str | None) -> Body:
    """Eight passages per request, 20 to 400 words each (the throughput-bound case)."""
    texts = [_text(rng, rng.choice((20, 50, 100, 200, 400))) for _ in range(8)]
    return "/v1/embeddings", {"input": texts, "model": model}, len(texts)


def rerank(rng: random.Random, model: str | None) -> Body:
    """One query against sixteen documents of 30 to 200 words."""
    docs = [_text(rng, rng.randint(30, 200)) for _ in range(16)]
    return "/v1/rerank", {"query": _text(rng, 8), "documents": docs, "model": model}, len(docs)


WORKLOADS: dict[str, Callable[[random.Random, str | None], Body]] = {
    "queries": queries,
    "passages": passages,
    "rerank": rerank,
}
