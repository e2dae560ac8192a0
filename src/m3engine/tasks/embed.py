"""Embedding tasks (BGE-M3 and dense embedders): texts or token ids -> records; BGE-M3's hybrid scores."""

from __future__ import annotations

from collections.abc import Sequence

from m3engine.errors import InputError, InputTooLongError
from m3engine.results import Embedding, HybridScore
from m3engine.tasks import postprocess
from m3engine.tasks.context import TaskContext, split_pairs
from m3engine.tasks.options import EmbedOptions, ScoreOptions
from m3engine.tasks.prepared import Bulk, Prepared, estimate_tokens
from m3engine.tokenization.tokenizer import check_texts
from m3engine.types import BatchOutputs, Encoded, FloatArray, HeadRequest


def embed_bulk(ctx: TaskContext, texts: str | Sequence[str], options: EmbedOptions) -> Bulk[list[Embedding]]:
    heads = ctx.embed_heads(options)
    items = check_texts(texts)
    limit = ctx.text_limit(options.input_type, options.max_length)
    dimensions, normalize = options.dimensions, ctx.normalize(options.normalize)
    return Bulk(
        estimate_tokens(items, limit),
        lambda a, b: ctx.encode_texts(items[a:b], options.input_type, options.max_length, options.truncate),
        heads,
        lambda encoded, out: embeddings(encoded, out, dimensions, normalize),
        # per batch (pipeline.py): dense normalisation and slicing are per row, so per-batch
        # records equal the whole list's
        lambda indices, encoded, out: embeddings(encoded, out, dimensions, normalize, indices),
        list,
    )


def embed_ids(
    ctx: TaskContext, sequences: Sequence[Sequence[int]], options: EmbedOptions
) -> Prepared[list[Embedding]]:
    """Pre-tokenized inputs (OpenAI's token-id form), run as given: no special tokens nor instruction
    are added, and the limit is the passage one whatever `input_type` says."""
    heads = ctx.embed_heads(options)
    limit = ctx.limit(options.max_length, ctx.max_length, "max_length")
    if len(sequences) == 0:
        raise InputError("the input list is empty; pass at least one token-id list")
    encoded = []
    vocab = ctx.spec.vocab_size
    for i, ids in enumerate(sequences):
        if len(ids) == 0:
            raise InputError(f"input {i} is an empty token-id list")
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
            raise InputError(f"input {i} holds token ids outside the vocabulary [0, {vocab})")
        if len(ids) > limit and not options.truncate:
            raise InputTooLongError(
                f"input {i} has {len(ids)} tokens, over the limit of {limit}; enable truncation"
            )
        encoded.append(Encoded(ids=list(ids[:limit]), truncated=len(ids) > limit))
    dimensions, normalize = options.dimensions, ctx.normalize(options.normalize)
    return Prepared(encoded, heads, lambda out: embeddings(encoded, out, dimensions, normalize))


def score_bulk(
    ctx: TaskContext, pairs: Sequence[Sequence[str]], options: ScoreOptions
) -> Bulk[list[HybridScore]]:
    """FlagEmbedding's `compute_score`: each distinct text runs once, queries under the query policy."""
    ctx.require("score")
    queries, passages = split_pairs(pairs)
    unique_q, unique_p = list(dict.fromkeys(queries)), list(dict.fromkeys(passages))
    nq = len(unique_q)
    q_max, p_max = options.query_max_length, options.max_length
    sizes = estimate_tokens(unique_q, ctx.text_limit("query", q_max))
    sizes += estimate_tokens(unique_p, ctx.text_limit("passage", p_max))
    heads = HeadRequest(dense=True, sparse=True, colbert=True)

    def encode(a: int, b: int) -> list[Encoded]:
        # inputs 0:nq are the distinct queries, nq: the distinct passages;
        # compute_score tokenizes the raw queries: the query length, no instruction
        out = []
        if a < nq:
            out += ctx.encode_texts(unique_q[a : min(b, nq)], "query", q_max, True, False)
        if b > nq:
            out += ctx.encode_texts(unique_p[max(a - nq, 0) : b - nq], "passage", p_max, True)
        return out

    def finish(encoded: list[Encoded], out: BatchOutputs) -> list[HybridScore]:
        records = embeddings(encoded, out, None, ctx.spec.normalize)
        q_rec = dict(zip(unique_q, records[:nq], strict=True))
        p_rec = dict(zip(unique_p, records[nq:], strict=True))
        return [
            postprocess.hybrid(q_rec[q], p_rec[p], options.weights)
            for q, p in zip(queries, passages, strict=True)
        ]

    return Bulk(sizes, encode, heads, finish)


def embeddings(
    encoded: list[Encoded],
    out: BatchOutputs,
    dimensions: int | None,
    normalize: bool,
    indices: list[int] | None = None,  # each input's index in the request (default: 0, 1, ...)
) -> list[Embedding]:
    """One record per input from the outputs of its sequences (dense sliced and normalised here)."""
    vectors: FloatArray | None = None
    if out.dense is not None:
        vectors = postprocess.finish_dense(out.dense, dimensions, normalize)
    return [
        Embedding(
            index=i if indices is None else indices[i],
            num_tokens=len(enc),
            truncated=enc.truncated,
            dense=None if vectors is None else vectors[i],
            sparse=None if out.sparse is None else out.sparse[i],
            colbert=None if out.colbert is None else out.colbert[i],
        )
        for i, enc in enumerate(encoded)
    ]
