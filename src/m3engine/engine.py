"""The in-process API: Engine.embed / rerank / score / classify, synchronous and asyncio.

    >>> engine = Engine.load("BAAI/bge-m3", device="cpu")
    >>> out = engine.embed(["What is BGE-M3?"], dense=True, sparse=True, colbert=True)
    >>> out[0].dense.shape, out[0].sparse.to_dict(), out[0].colbert.shape

Inputs are validated and tokenized here, grouped by `plan_batches` under the token budget and run
through the backend; results come back with exactly one record per input, in input order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from m3engine import postprocess
from m3engine.backends.base import Backend
from m3engine.backends.registry import create_backend
from m3engine.batching import plan_batches
from m3engine.device import resolve_backend, resolve_device, resolve_dtype
from m3engine.errors import InputError, InvalidInputTypeError, UnsupportedTaskError
from m3engine.models.discovery import resolve_model_path
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec, inspect_model
from m3engine.results import Classification, Embedding, HybridScore, RerankResult
from m3engine.settings import EngineSettings
from m3engine.tokenization import TextTokenizer, check_texts
from m3engine.types import BatchOutputs, Encoded, HeadRequest, PackedBatch, TokenIds

Progress = Callable[[int, int], None]  # called after each forward pass with (texts, tokens) done in it
PIPELINE_CHUNK = 1024  # texts tokenized per step while the previous step runs (unpadded backends)


class Engine:
    def __init__(self, spec: ModelSpec, tokenizer: TextTokenizer, backend: Backend, settings: EngineSettings):
        self.spec, self.tokenizer, self.backend, self.settings = spec, tokenizer, backend, settings
        self.max_length = self._limit(settings.max_length, spec.default_max_length, "max_length")
        default_query = self.max_length * 3 // 4 if spec.is_cross_encoder else self.max_length
        self.query_max_length = self._limit(settings.query_max_length, default_query, "query_max_length")
        self._lock = threading.Lock()  # one forward pass at a time per backend

    @classmethod
    def load(cls, model: str = "BAAI/bge-m3", **overrides: Any) -> Engine:
        """Load a model by hub id or path; keyword arguments are EngineSettings fields."""
        return cls.from_settings(EngineSettings(model=model, **overrides))

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> Engine:
        path = resolve_model_path(settings.model, revision=settings.revision)
        kind = ModelKind.parse(settings.kind) if settings.kind else None
        spec = inspect_model(path, name=settings.model, kind=kind)
        tokenizer = TextTokenizer.load(path)
        device = resolve_device(settings.device)
        name = resolve_backend(settings.backend, device)
        backend = create_backend(
            name,
            spec=spec,
            tokens=TokenIds(pad_id=tokenizer.pad_id, special_ids=tokenizer.special_ids),
            device=device,
            dtype=resolve_dtype(settings.dtype, device, name),
        )
        return cls(spec, tokenizer, backend, settings)

    def info(self) -> dict[str, Any]:
        """What the model is and how it runs (the CLI's `info`, the server's /info)."""
        return {
            "model": self.spec.name,
            "path": str(self.spec.path),
            "kind": self.spec.kind.value,
            "model_type": self.spec.model_type,
            "hidden_size": self.spec.hidden_size,
            "dense_dim": None if self.spec.is_cross_encoder else self.spec.hidden_size,
            "colbert_dim": self.backend.colbert_dim(),
            "pooling": None if self.spec.is_cross_encoder else self.spec.pooling,
            "labels": list(self.spec.labels),
            "model_max_length": self.spec.max_length,
            "max_length": self.max_length,
            "query_max_length": self.query_max_length,
            "backend": self.backend.info.name,
            "device": self.backend.info.device,
            "dtype": self.backend.info.dtype,
        }

    # ---- embeddings -------------------------------------------------------------------------
    def embed(
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
        progress: Progress | None = None,
    ) -> list[Embedding]:
        """Dense, sparse and ColBERT outputs of each text from one forward pass.

        `input_type` "query" applies the query instruction and query_max_length; "passage" applies
        max_length. `dimensions` keeps the first D dense values (then re-normalises);
        `normalize=None` follows the model (BGE-M3: normalised).
        """
        self._require("embed", ModelKind.BGE_M3, ModelKind.EMBEDDING)
        if (sparse or colbert) and self.spec.kind is not ModelKind.BGE_M3:
            raise UnsupportedTaskError(
                f"{self.spec.name} is a {self.spec.kind.value} model: only dense output"
            )
        if not (dense or sparse or colbert):
            raise InputError("ask for at least one output: dense, sparse or colbert")
        items = check_texts(texts)
        heads = HeadRequest(dense=dense, sparse=sparse, colbert=colbert)
        encoded, out = self._encode_and_run(items, input_type, max_length, truncate, heads, progress)
        vectors = None
        if out.dense is not None:
            keep_norm = self.spec.normalize if normalize is None else normalize
            vectors = postprocess.finish_dense(out.dense, dimensions, keep_norm)
        return [
            Embedding(
                index=i,
                num_tokens=len(enc),
                truncated=enc.truncated,
                dense=None if vectors is None else vectors[i],
                sparse=None if out.sparse is None else out.sparse[i],
                colbert=None if out.colbert is None else out.colbert[i],
            )
            for i, enc in enumerate(encoded)
        ]

    def score(
        self,
        pairs: Sequence[Sequence[str]],
        weights: Sequence[float] = (1.0, 1.0, 1.0),
        *,
        query_max_length: int | None = None,
        max_length: int | None = None,
    ) -> list[HybridScore]:
        """FlagEmbedding's `compute_score` for (query, passage) pairs: dense, sparse, ColBERT, hybrids."""
        self._require("score", ModelKind.BGE_M3)
        queries, passages = _split_pairs(pairs)
        q_out = self._embed_unique(queries, "query", query_max_length)
        p_out = self._embed_unique(passages, "passage", max_length)
        return [
            postprocess.hybrid(q_out[q], p_out[p], weights) for q, p in zip(queries, passages, strict=True)
        ]

    def _embed_unique(
        self, texts: list[str], input_type: str, max_length: int | None
    ) -> dict[str, Embedding]:
        unique = list(dict.fromkeys(texts))  # one pass per distinct text: one query, many passages
        records = self.embed(
            unique, dense=True, sparse=True, colbert=True, input_type=input_type, max_length=max_length
        )
        return dict(zip(unique, records, strict=True))

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
    ) -> list[RerankResult]:
        """Documents ranked by relevance to the query, best first; `index` is the input position."""
        self._require("rerank", ModelKind.RERANKER)
        query = check_texts([query], "query")[0] if isinstance(query, str) else _not_text("query", query)
        docs = check_texts(documents, "document")
        if top_n is not None and top_n < 1:
            raise InputError(f"top_n must be >= 1, got {top_n}")
        logits, encoded = self._pair_logits([query] * len(docs), docs, truncate, max_length, query_max_length)
        scores = postprocess.sigmoid(logits) if normalize else logits
        order = np.argsort(-scores, kind="stable")[: top_n or len(docs)]
        return [
            RerankResult(
                index=int(i),
                score=float(scores[i]),
                logit=float(logits[i]),
                num_tokens=len(encoded[i]),
                truncated=encoded[i].truncated,
                document=docs[i] if return_documents else None,
            )
            for i in order
        ]

    def score_pairs(
        self, pairs: Sequence[Sequence[str]], *, normalize: bool = True, truncate: bool = True
    ) -> list[float]:
        """FlagReranker's `compute_score`: one relevance score per (query, passage) pair, in order."""
        self._require("score_pairs", ModelKind.RERANKER)
        queries, passages = _split_pairs(pairs)
        logits, _ = self._pair_logits(queries, passages, truncate, None, None)
        return (postprocess.sigmoid(logits) if normalize else logits).tolist()  # type: ignore[no-any-return]

    def _pair_logits(
        self,
        queries: list[str],
        passages: list[str],
        truncate: bool,
        max_length: int | None,
        query_max: int | None,
    ) -> tuple[np.ndarray, list[Encoded]]:
        limit = self._limit(max_length, self.max_length, "max_length")
        q_limit = self._limit(
            query_max, limit * 3 // 4 if max_length else self.query_max_length, "query_max_length"
        )
        encoded = self.tokenizer.encode_pairs(queries, passages, limit, q_limit, truncate)
        logits = self._run(encoded, HeadRequest(logits=True), None).logits
        assert logits is not None
        return logits[:, 0], encoded

    def classify(
        self, texts: str | Sequence[str], *, truncate: bool = True, max_length: int | None = None
    ) -> list[Classification]:
        """The label of each text: softmax over labels (sigmoid for one label or multi-label models)."""
        self._require("classify", ModelKind.CLASSIFIER, ModelKind.RERANKER)
        items = check_texts(texts)
        encoded = self._encode_texts(items, "passage", max_length, truncate)
        logits = self._run(encoded, HeadRequest(logits=True), None).logits
        assert logits is not None
        probs = postprocess.label_probabilities(logits, multi_label=self.spec.multi_label)
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

    # ---- asyncio forms ----------------------------------------------------------------------
    async def aembed(self, texts: str | Sequence[str], **kwargs: Any) -> list[Embedding]:
        return await asyncio.to_thread(self.embed, texts, **kwargs)

    async def arerank(self, query: str, documents: Sequence[str], **kwargs: Any) -> list[RerankResult]:
        return await asyncio.to_thread(self.rerank, query, documents, **kwargs)

    async def ascore(self, pairs: Sequence[Sequence[str]], **kwargs: Any) -> list[HybridScore]:
        return await asyncio.to_thread(self.score, pairs, **kwargs)

    async def aclassify(self, texts: str | Sequence[str], **kwargs: Any) -> list[Classification]:
        return await asyncio.to_thread(self.classify, texts, **kwargs)

    # ---- internals --------------------------------------------------------------------------
    def _require(self, task: str, *kinds: ModelKind) -> None:
        if self.spec.kind not in kinds:
            wanted = " or ".join(k.value for k in kinds)
            raise UnsupportedTaskError(
                f"{task} needs a {wanted} model; {self.spec.name} is a {self.spec.kind.value} model"
            )

    def _limit(self, value: int | None, default: int, name: str) -> int:
        if value is None:
            return default
        if not 2 < value <= self.spec.max_length:
            raise InputError(
                f"{name} must be between 3 and the model's limit {self.spec.max_length}; got {value}"
            )
        return value

    def _encode_texts(
        self, texts: list[str], input_type: str, max_length: int | None, truncate: bool
    ) -> list[Encoded]:
        if input_type == "query":
            prefix = self.settings.query_instruction
            return self.tokenizer.encode(
                [prefix + t for t in texts],
                self._limit(max_length, self.query_max_length, "max_length"),
                truncate,
            )
        if input_type != "passage":
            raise InputError(f"input_type must be 'query' or 'passage', got {input_type!r}")
        return self.tokenizer.encode(texts, self._limit(max_length, self.max_length, "max_length"), truncate)

    def _encode_and_run(
        self,
        items: list[str],
        input_type: str,
        max_length: int | None,
        truncate: bool,
        heads: HeadRequest,
        progress: Progress | None,
    ) -> tuple[list[Encoded], BatchOutputs]:
        """Tokenize chunk i + 1 on a worker thread while chunk i runs on the device.

        The Rust tokenizers and the device waits both release the GIL, so the two overlap. Only for
        unpadded backends: chunking sorts by length within a chunk, which would cost a padded
        backend more padding, and costs a packed one nothing.
        """
        chunk = PIPELINE_CHUNK
        if self.backend.info.padded or len(items) <= chunk:
            encoded = self._encode_texts(items, input_type, max_length, truncate)
            return encoded, self._run(encoded, heads, progress)
        starts = range(0, len(items), chunk)
        encoded_all: list[Encoded] = []
        parts: list[tuple[list[int], BatchOutputs]] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3engine-tokenize") as pool:
            future = pool.submit(self._encode_texts, items[:chunk], input_type, max_length, truncate)
            for start in starts:
                encoded = future.result()
                if start + chunk < len(items):
                    following = items[start + chunk : start + 2 * chunk]
                    future = pool.submit(self._encode_texts, following, input_type, max_length, truncate)
                parts.append((list(range(start, start + len(encoded))), self._run(encoded, heads, progress)))
                encoded_all += encoded
        return encoded_all, postprocess.gather(parts, len(items))

    def _run(self, encoded: list[Encoded], heads: HeadRequest, progress: Progress | None) -> BatchOutputs:
        """Forward every input under the token budget; outputs come back in input order."""
        lengths = [len(e) for e in encoded]
        batches = plan_batches(
            lengths, self.settings.max_batch_tokens, self.settings.max_batch_size, self.backend.info.padded
        )
        parts: list[tuple[list[int], BatchOutputs]] = []
        for indices in batches:
            with self._lock:
                out = self.backend.forward(PackedBatch.from_encoded([encoded[i] for i in indices]), heads)
            parts.append((indices, out))
            if progress is not None:
                progress(len(indices), sum(lengths[i] for i in indices))
        return postprocess.gather(parts, len(encoded))


def _split_pairs(pairs: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise InputError("pairs must be a non-empty list of (query, passage) pairs")
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidInputTypeError(f"pair {i} is not a (query, passage) pair of two strings")
    queries = check_texts([p[0] for p in pairs], "query")
    passages = check_texts([p[1] for p in pairs], "passage")
    return queries, passages


def _not_text(what: str, value: object) -> str:
    raise InvalidInputTypeError(f"the {what} is a {type(value).__name__}, not a string")
