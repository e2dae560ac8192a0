"""Each task split in two: `prepare` (validate + tokenize) and `finish` (backend outputs -> results).

Each task is first a `Bulk` (validated; tokenized by pieces: pipeline.py) and `prepare()` makes it a
`Prepared` (tokenized at once); prepared.py holds both. The split lets two runners share the same
semantics: `Engine` runs a prepared task's batches itself,
one call at a time; the server's scheduler forms batches across many prepared tasks (requests) and
calls `finish` when every sequence of a task has come back.

    >>> task = builder.embed(["a text"], dense=True)      # validated and tokenized, nothing run yet
    >>> task.encoded, task.heads                          # what the backend must see
    >>> results = task.finish(outputs_in_input_order)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from m3engine.errors import InputError, InputTooLongError, InvalidInputTypeError, UnsupportedTaskError
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.results import Classification, Embedding, HybridScore, RerankResult
from m3engine.settings import EngineSettings
from m3engine.tasks import postprocess
from m3engine.tasks.prepared import Bulk as Bulk
from m3engine.tasks.prepared import Prepared as Prepared
from m3engine.tasks.prepared import estimate_tokens
from m3engine.tokenization.tokenizer import TextTokenizer, check_texts
from m3engine.types import BatchOutputs, Encoded, FloatArray, HeadRequest

CHARS_PER_TOKEN_CAP = 250  # no tokenizer of these families averages 250 characters per token (TEI's cap)


class TaskBuilder:
    """Validation, tokenization and result shaping of every task, for one model."""

    def __init__(self, spec: ModelSpec, tokenizer: TextTokenizer, settings: EngineSettings) -> None:
        self.spec, self.tokenizer, self.settings = spec, tokenizer, settings
        self.max_length = self.limit(settings.max_length, spec.default_max_length, "max_length")
        default_query = self.max_length * 3 // 4 if spec.is_cross_encoder else self.max_length
        self.query_max_length = self.limit(settings.query_max_length, default_query, "query_max_length")

    # ---- embeddings -------------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str], **options: Any) -> Prepared[list[Embedding]]:
        """`embed_bulk`, tokenized at once."""
        return self.embed_bulk(texts, **options).prepare()

    def embed_bulk(
        self,
        texts: str | Sequence[str],
        *,
        dense: bool = True,
        sparse: bool = False,
        colbert: bool = False,
        input_type: str = "passage",
        max_length: int | None = None,
        truncate: bool = True,
        dimensions: int | None = None,
        normalize: bool | None = None,
    ) -> Bulk[list[Embedding]]:
        heads = self._embed_heads(dense, sparse, colbert, dimensions)
        items = check_texts(texts)
        limit = self._text_limit(input_type, max_length)
        keep_norm = self.spec.normalize if normalize is None else normalize
        return Bulk(
            estimate_tokens(items, limit),
            lambda a, b: self.encode_texts(items[a:b], input_type, max_length, truncate),
            heads,
            lambda encoded, out: _embeddings(encoded, out, dimensions, keep_norm),
            # per batch (pipeline.py): dense normalisation and slicing are per row, so per-batch
            # records equal the whole list's
            lambda indices, encoded, out: _embeddings(encoded, out, dimensions, keep_norm, indices),
            list,
        )

    def embed_ids(
        self,
        sequences: Sequence[Sequence[int]],
        *,
        truncate: bool = True,
        dimensions: int | None = None,
        normalize: bool | None = None,
    ) -> Prepared[list[Embedding]]:
        """Pre-tokenized inputs (OpenAI's token-id form), run as given: special tokens are not added."""
        heads = self._embed_heads(True, False, False, dimensions)
        if len(sequences) == 0:
            raise InputError("the input list is empty; pass at least one token-id list")
        encoded = []
        for i, ids in enumerate(sequences):
            if len(ids) == 0:
                raise InputError(f"input {i} is an empty token-id list")
            if any(not isinstance(t, int) or not 0 <= t < self.spec.vocab_size for t in ids):
                raise InputError(
                    f"input {i} holds token ids outside the vocabulary [0, {self.spec.vocab_size})"
                )
            if len(ids) > self.max_length and not truncate:
                raise InputTooLongError(
                    f"input {i} has {len(ids)} tokens, over the limit of {self.max_length}; enable truncation"
                )
            encoded.append(Encoded(ids=list(ids[: self.max_length]), truncated=len(ids) > self.max_length))
        keep_norm = self.spec.normalize if normalize is None else normalize
        return Prepared(encoded, heads, lambda out: _embeddings(encoded, out, dimensions, keep_norm))

    def score(
        self, pairs: Sequence[Sequence[str]], *args: Any, **options: Any
    ) -> Prepared[list[HybridScore]]:
        """`score_bulk`, tokenized at once."""
        return self.score_bulk(pairs, *args, **options).prepare()

    def score_bulk(
        self,
        pairs: Sequence[Sequence[str]],
        weights: Sequence[float] = (1.0, 1.0, 1.0),
        *,
        query_max_length: int | None = None,
        max_length: int | None = None,
    ) -> Bulk[list[HybridScore]]:
        """FlagEmbedding's `compute_score`: each distinct text runs once, queries under the query policy."""
        self.require("score", ModelKind.BGE_M3)
        queries, passages = split_pairs(pairs)
        unique_q, unique_p = list(dict.fromkeys(queries)), list(dict.fromkeys(passages))
        nq = len(unique_q)
        sizes = estimate_tokens(unique_q, self._text_limit("query", query_max_length))
        sizes += estimate_tokens(unique_p, self._text_limit("passage", max_length))
        heads = HeadRequest(dense=True, sparse=True, colbert=True)

        def encode(a: int, b: int) -> list[Encoded]:
            # inputs 0:nq are the distinct queries, nq: the distinct passages;
            # compute_score tokenizes the raw queries: the query length, no instruction
            out = []
            if a < nq:
                out += self.encode_texts(unique_q[a : min(b, nq)], "query", query_max_length, True, False)
            if b > nq:
                out += self.encode_texts(unique_p[max(a - nq, 0) : b - nq], "passage", max_length, True)
            return out

        def finish(encoded: list[Encoded], out: BatchOutputs) -> list[HybridScore]:
            records = _embeddings(encoded, out, None, self.spec.normalize)
            q_rec = dict(zip(unique_q, records[: len(unique_q)], strict=True))
            p_rec = dict(zip(unique_p, records[len(unique_q) :], strict=True))
            return [
                postprocess.hybrid(q_rec[q], p_rec[p], weights)
                for q, p in zip(queries, passages, strict=True)
            ]

        return Bulk(sizes, encode, heads, finish)

    # ---- cross-encoders ---------------------------------------------------------------------
    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        normalize: bool = True,
        truncate: bool = True,
        max_length: int | None = None,
        query_max_length: int | None = None,
        return_documents: bool = False,
        max_chunks_per_doc: int | None = None,
    ) -> Prepared[list[RerankResult]]:
        """`max_chunks_per_doc`: score long documents as windows and keep each one's best (Cohere v1)."""
        if max_chunks_per_doc is None or max_chunks_per_doc <= 1:
            bulk = self.rerank_bulk(
                query,
                documents,
                top_n=top_n,
                normalize=normalize,
                truncate=truncate,
                max_length=max_length,
                query_max_length=query_max_length,
                return_documents=return_documents,
            )
            return bulk.prepare()
        query, docs = self._rerank_inputs(query, documents, top_n)
        return self._rerank_chunks(
            query, docs, max_chunks_per_doc, top_n, normalize, max_length, query_max_length, return_documents
        )

    def rerank_bulk(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        normalize: bool = True,
        truncate: bool = True,
        max_length: int | None = None,
        query_max_length: int | None = None,
        return_documents: bool = False,
    ) -> Bulk[list[RerankResult]]:
        query, docs = self._rerank_inputs(query, documents, top_n)
        limit, _ = self._pair_limits(max_length, query_max_length)
        sizes = estimate_tokens([query + d for d in docs], limit)

        def encode(a: int, b: int) -> list[Encoded]:
            return self._encode_pairs([query] * (b - a), docs[a:b], truncate, max_length, query_max_length)

        def finish(encoded: list[Encoded], out: BatchOutputs) -> list[RerankResult]:
            assert out.logits is not None
            sizes = [(len(e), e.truncated) for e in encoded]
            return _ranked(out.logits[:, 0], sizes, docs, normalize, top_n, return_documents)

        return Bulk(sizes, encode, HeadRequest(logits=True), finish)

    def _rerank_inputs(
        self, query: str, documents: Sequence[str], top_n: int | None
    ) -> tuple[str, list[str]]:
        self.require("rerank", ModelKind.RERANKER)
        if not isinstance(query, str):
            raise InvalidInputTypeError(f"the query is a {type(query).__name__}, not a string")
        query = check_texts([query], "query")[0]
        docs = check_texts(documents, "document")
        if top_n is not None and top_n < 1:
            raise InputError(f"top_n must be >= 1, got {top_n}")
        return query, docs

    def _rerank_chunks(
        self,
        query: str,
        docs: list[str],
        max_chunks: int,
        top_n: int | None,
        normalize: bool,
        max_length: int | None,
        query_max_length: int | None,
        return_documents: bool,
    ) -> Prepared[list[RerankResult]]:
        limit, q_limit = self._pair_limits(max_length, query_max_length)
        windows = self.tokenizer.encode_pair_chunks(query, docs, limit, q_limit, max_chunks)
        bounds = np.cumsum([0] + [len(w) for w in windows])  # doc i owns rows bounds[i]:bounds[i+1]
        encoded = [e for w in windows for e in w]

        def finish(out: BatchOutputs) -> list[RerankResult]:
            assert out.logits is not None
            # Sigmoid is monotonic, so the best window by logit is the best by score.
            logits = np.array([out.logits[a:b, 0].max() for a, b in itertools.pairwise(bounds)])
            sizes = [(sum(len(e) for e in w), w[0].truncated) for w in windows]
            return _ranked(logits, sizes, docs, normalize, top_n, return_documents)

        return Prepared(encoded, HeadRequest(logits=True), finish)

    def score_pairs(self, pairs: Sequence[Sequence[str]], **options: Any) -> Prepared[list[float]]:
        """`score_pairs_bulk`, tokenized at once."""
        return self.score_pairs_bulk(pairs, **options).prepare()

    def score_pairs_bulk(
        self, pairs: Sequence[Sequence[str]], *, normalize: bool = True, truncate: bool = True
    ) -> Bulk[list[float]]:
        self.require("score_pairs", ModelKind.RERANKER)
        queries, passages = split_pairs(pairs)
        sizes = estimate_tokens([q + p for q, p in zip(queries, passages, strict=True)], self.max_length)

        def encode(a: int, b: int) -> list[Encoded]:
            return self._encode_pairs(queries[a:b], passages[a:b], truncate, None, None)

        def finish(encoded: list[Encoded], out: BatchOutputs) -> list[float]:
            assert out.logits is not None
            logits = out.logits[:, 0]
            return (postprocess.sigmoid(logits) if normalize else logits).tolist()  # type: ignore[no-any-return]

        return Bulk(sizes, encode, HeadRequest(logits=True), finish)

    def classify(self, texts: str | Sequence[str], **options: Any) -> Prepared[list[Classification]]:
        """`classify_bulk`, tokenized at once."""
        return self.classify_bulk(texts, **options).prepare()

    def classify_bulk(
        self,
        texts: str | Sequence[str],
        *,
        truncate: bool = True,
        max_length: int | None = None,
        raw_scores: bool = False,
    ) -> Bulk[list[Classification]]:
        self.require("classify", ModelKind.CLASSIFIER, ModelKind.RERANKER)
        items = check_texts(texts)
        limit = self._text_limit("passage", max_length)
        return Bulk(
            estimate_tokens(items, limit),
            lambda a, b: self.encode_texts(items[a:b], "passage", max_length, truncate),
            HeadRequest(logits=True),
            lambda encoded, out: self._labels(encoded, out, raw_scores),
        )

    def classify_pairs(
        self, pairs: Sequence[Sequence[str]], *, truncate: bool = True, raw_scores: bool = False
    ) -> Prepared[list[Classification]]:
        """Sequence-pair classification (TEI's /predict with [text_a, text_b] inputs)."""
        self.require("classify", ModelKind.CLASSIFIER, ModelKind.RERANKER)
        firsts, seconds = split_pairs(pairs)
        encoded = self._encode_pairs(firsts, seconds, truncate, None, None)
        return Prepared(encoded, HeadRequest(logits=True), lambda out: self._labels(encoded, out, raw_scores))

    def _labels(self, encoded: list[Encoded], out: BatchOutputs, raw_scores: bool) -> list[Classification]:
        assert out.logits is not None
        probs = (
            out.logits if raw_scores else postprocess.label_probabilities(out.logits, self.spec.multi_label)
        )
        labels = self.spec.labels
        return [
            Classification(
                index=i,
                label=labels[int(np.argmax(row))],
                score=float(np.max(row)),
                scores={label: float(p) for label, p in zip(labels, row, strict=True)},
                num_tokens=len(encoded[i]),
                truncated=encoded[i].truncated,
            )
            for i, row in enumerate(probs)
        ]

    # ---- shared pieces ----------------------------------------------------------------------
    def require(self, task: str, *kinds: ModelKind) -> None:
        if self.spec.kind not in kinds:
            wanted = " or ".join(k.value for k in kinds)
            raise UnsupportedTaskError(
                f"{task} needs a {wanted} model; {self.spec.name} is a {self.spec.kind.value} model. "
                f"Load a {wanted} model for it (or pass --kind if the kind was detected wrongly)"
            )

    def limit(self, value: int | None, default: int, name: str) -> int:
        if value is None:
            return default
        if not 2 < value <= self.spec.max_length:
            raise InputError(
                f"{name} must be between 3 and the model's limit {self.spec.max_length}; got {value}"
            )
        return value

    def encode_texts(
        self,
        texts: list[str],
        input_type: str,
        max_length: int | None,
        truncate: bool,
        instruction: bool = True,
    ) -> list[Encoded]:
        limit = self._text_limit(input_type, max_length)
        query = input_type == "query"
        if truncate:
            # TEI's pre-tokenizer cap: a text far longer than any token count can use is cut first,
            # so a 4 MB body does not hold a tokenizer thread for what truncation would drop anyway.
            cap = limit * CHARS_PER_TOKEN_CAP
            texts = [t[:cap] for t in texts]
        if query and instruction:
            texts = [self.settings.query_instruction + t for t in texts]
        return self.tokenizer.encode(texts, limit, truncate)

    def _text_limit(self, input_type: str, max_length: int | None) -> int:
        if input_type not in ("query", "passage"):
            raise InputError(f"input_type must be 'query' or 'passage', got {input_type!r}")
        default = self.query_max_length if input_type == "query" else self.max_length
        return self.limit(max_length, default, "max_length")

    def _encode_pairs(
        self,
        queries: list[str],
        passages: list[str],
        truncate: bool,
        max_length: int | None,
        query_max: int | None,
    ) -> list[Encoded]:
        limit, q_limit = self._pair_limits(max_length, query_max)
        if truncate:  # the character cap of encode_texts, for the same reason
            queries = [q[: q_limit * CHARS_PER_TOKEN_CAP] for q in queries]
            passages = [p[: limit * CHARS_PER_TOKEN_CAP] for p in passages]
        return self.tokenizer.encode_pairs(queries, passages, limit, q_limit, truncate)

    def _pair_limits(self, max_length: int | None, query_max: int | None) -> tuple[int, int]:
        """FlagReranker's rule: the query cap given, else the configured one, else 3/4 of the budget."""
        limit = self.limit(max_length, self.max_length, "max_length")
        configured = self.settings.query_max_length
        default = configured if configured is not None else limit * 3 // 4
        return limit, self.limit(query_max, default, "query_max_length")

    def _embed_heads(self, dense: bool, sparse: bool, colbert: bool, dimensions: int | None) -> HeadRequest:
        self.require("embed", ModelKind.BGE_M3, ModelKind.EMBEDDING)
        if (sparse or colbert) and self.spec.kind is not ModelKind.BGE_M3:
            raise UnsupportedTaskError(
                f"{self.spec.name} is a {self.spec.kind.value} model: it has a dense output only; "
                "ask for dense alone, or load a BGE-M3 checkpoint for sparse and ColBERT"
            )
        if not (dense or sparse or colbert):
            raise InputError("ask for at least one output: dense, sparse or colbert")
        if dimensions is not None and not 1 <= dimensions <= self.spec.hidden_size:
            raise InputError(f"dimensions must be between 1 and {self.spec.hidden_size}; got {dimensions}")
        return HeadRequest(dense=dense, sparse=sparse, colbert=colbert)


def _embeddings(
    encoded: list[Encoded],
    out: BatchOutputs,
    dimensions: int | None,
    normalize: bool,
    indices: list[int] | None = None,  # each input's index in the request (default: 0, 1, ...)
) -> list[Embedding]:
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


def _ranked(
    logits: np.ndarray,  # (N,) one logit per document
    sizes: list[tuple[int, bool]],  # (tokens, truncated) per document
    docs: list[str],
    normalize: bool,
    top_n: int | None,
    return_documents: bool,
) -> list[RerankResult]:
    scores = postprocess.sigmoid(logits) if normalize else logits
    # by logit: float32 sigmoids of logits above ~17 are all 1.0 and would tie
    order = np.argsort(-logits, kind="stable")[: top_n or len(docs)]
    return [
        RerankResult(
            index=int(i),
            score=float(scores[i]),
            logit=float(logits[i]),
            num_tokens=sizes[i][0],
            truncated=sizes[i][1],
            document=docs[i] if return_documents else None,
        )
        for i in order
    ]


def split_pairs(pairs: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise InputError("pairs must be a non-empty list of (query, passage) pairs")
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidInputTypeError(f"pair {i} is not a (query, passage) pair of two strings")
    queries = check_texts([p[0] for p in pairs], "query")
    passages = check_texts([p[1] for p in pairs], "passage")
    return queries, passages
