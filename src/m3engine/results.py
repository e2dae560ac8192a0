"""The records the Engine returns: plain dataclasses with numpy arrays, and JSON-ready forms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from m3engine.types import FloatArray, SparseVector


@dataclass
class Embedding:
    """All requested outputs for one input text, at its position in the request."""

    index: int
    num_tokens: int  # tokens the model saw, special tokens included
    truncated: bool
    dense: FloatArray | None = None  # (D,)
    sparse: SparseVector | None = None
    colbert: FloatArray | None = None  # (num_tokens - 1, D_colbert); float16 from a bf16/fp16 encoder

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "num_tokens": self.num_tokens,
            "truncated": self.truncated,
        }
        if self.dense is not None:
            out["dense"] = self.dense.tolist()
        if self.sparse is not None:
            out["sparse"] = {"indices": self.sparse.indices.tolist(), "values": self.sparse.values.tolist()}
        if self.colbert is not None:
            out["colbert"] = self.colbert.tolist()
        return out


@dataclass
class RerankResult:
    """One document's relevance to the query; `index` is its position in the request."""

    index: int
    score: float  # sigmoid(logit) when normalised, else the raw logit
    logit: float
    num_tokens: int
    truncated: bool
    document: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "score": self.score, "logit": self.logit}
        if self.document is not None:
            out["document"] = self.document
        return out


@dataclass
class HybridScore:
    """FlagEmbedding's `compute_score` fields for one (query, passage) pair."""

    dense: float
    sparse: float
    colbert: float
    sparse_dense: float
    colbert_sparse_dense: float

    def to_json(self) -> dict[str, float]:
        """The reference's key names: dense, sparse, colbert, sparse+dense, colbert+sparse+dense."""
        return {
            "dense": self.dense,
            "sparse": self.sparse,
            "colbert": self.colbert,
            "sparse+dense": self.sparse_dense,
            "colbert+sparse+dense": self.colbert_sparse_dense,
        }


@dataclass
class Classification:
    """The label of one text, with the probability of every label."""

    index: int
    label: str
    score: float
    scores: dict[str, float]
    num_tokens: int
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": self.score, "scores": self.scores}
