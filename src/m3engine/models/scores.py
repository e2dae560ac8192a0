"""Scores between BGE-M3 outputs, as FlagEmbedding computes them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from m3engine.errors import InputError
from m3engine.results import HybridScore
from m3engine.types import FloatArray, SparseVector

HUGE_WEIGHT = 1e100  # above it, a weighted sum could overflow (scores are small numbers)
LexicalWeights = SparseVector | Mapping[str, float] | Mapping[int, float]


def _as_dict(weights: LexicalWeights) -> dict[int, float]:
    if isinstance(weights, SparseVector):
        return {int(i): float(v) for i, v in zip(weights.indices, weights.values, strict=True)}
    return {int(k): float(v) for k, v in weights.items()}


def lexical_matching_score(query: LexicalWeights, passage: LexicalWeights) -> float:
    """sum over shared token ids of query weight * passage weight."""
    q, p = _as_dict(query), _as_dict(passage)
    return float(sum(w * p[t] for t, w in q.items() if t in p))


def colbert_score(query: FloatArray, passage: FloatArray) -> float:
    """MaxSim: the mean over query vectors of their best dot product with a passage vector."""
    if len(query) == 0 or len(passage) == 0:
        return 0.0
    sims = query.astype(np.float32) @ passage.astype(np.float32).T  # (Lq, Lp)
    return float(sims.max(axis=1).sum() / len(query))


def dense_score(query: FloatArray, passage: FloatArray) -> float:
    return float(np.dot(query.astype(np.float32), passage.astype(np.float32)))


def hybrid_score(dense: float, sparse: float, colbert: float, weights: Sequence[float]) -> HybridScore:
    """Each combination is a weighted sum divided by the sum of its weights (`compute_score`)."""
    if len(weights) != 3:
        raise InputError(f"weights must be [w_dense, w_sparse, w_colbert]; got {len(weights)} values")
    w_dense, w_sparse, w_colbert = (float(w) for w in weights)
    if (
        not all(math.isfinite(w) and w >= 0 for w in (w_dense, w_sparse, w_colbert))
        or w_dense + w_sparse <= 0
    ):
        raise InputError(f"weights must be finite and >= 0 with w_dense + w_sparse > 0; got {list(weights)}")
    top = max(w_dense, w_sparse, w_colbert)
    if top > HUGE_WEIGHT:
        # Only the weights' ratios count: scaled down, weighted sums near the float limit stay finite.
        w_dense, w_sparse, w_colbert = w_dense / top, w_sparse / top, w_colbert / top
    return HybridScore(
        dense=dense,
        sparse=sparse,
        colbert=colbert,
        sparse_dense=(dense * w_dense + sparse * w_sparse) / (w_dense + w_sparse),
        colbert_sparse_dense=(dense * w_dense + sparse * w_sparse + colbert * w_colbert)
        / (w_dense + w_sparse + w_colbert),
    )
