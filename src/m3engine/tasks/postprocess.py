"""From backend outputs to user results: reassembly in input order, normalisation, activations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m3engine.errors import InputError
from m3engine.models.scores import colbert_score, dense_score, hybrid_score, lexical_matching_score
from m3engine.results import Embedding, HybridScore
from m3engine.types import BatchOutputs, FloatArray


def gather(parts: Sequence[tuple[list[int], BatchOutputs]], count: int) -> BatchOutputs:
    """Merge per-batch outputs (each for the input indices given) into one, in input order."""
    if len(parts) == 1 and parts[0][0] == list(range(count)):  # one batch, in input order: as it is
        out = parts[0][1]
        return BatchOutputs(_f32(out.dense), out.sparse, out.colbert, _f32(out.logits))
    merged = BatchOutputs()
    for indices, out in parts:
        if out.dense is not None:
            if merged.dense is None:
                merged.dense = np.zeros((count, out.dense.shape[1]), dtype=np.float32)
            merged.dense[indices] = out.dense
        if out.logits is not None:
            if merged.logits is None:
                merged.logits = np.zeros((count, out.logits.shape[1]), dtype=np.float32)
            merged.logits[indices] = out.logits
        for name in ("sparse", "colbert"):
            rows = getattr(out, name)
            if rows is None:
                continue
            if getattr(merged, name) is None:
                setattr(merged, name, [None] * count)
            target = getattr(merged, name)
            for i, row in zip(indices, rows, strict=True):
                target[i] = row
    return merged


def _f32(rows: FloatArray | None) -> FloatArray | None:
    return None if rows is None else np.asarray(rows, dtype=np.float32)


def finish_dense(vectors: FloatArray, dimensions: int | None, normalize: bool) -> FloatArray:
    """Keep the first `dimensions` values (Matryoshka slice), then L2-normalise if asked."""
    if dimensions is not None:
        if not 1 <= dimensions <= vectors.shape[1]:
            raise InputError(f"dimensions must be between 1 and {vectors.shape[1]}; got {dimensions}")
        vectors = vectors[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)  # as torch.nn.functional.normalize
    return np.ascontiguousarray(vectors, dtype=np.float32)


def sigmoid(x: FloatArray) -> FloatArray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def label_probabilities(logits: FloatArray, multi_label: bool) -> FloatArray:
    """Softmax across labels; sigmoid per label for one-label and multi-label models."""
    if multi_label or logits.shape[1] == 1:
        return sigmoid(logits)
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs: FloatArray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return probs


def hybrid(query: Embedding, passage: Embedding, weights: Sequence[float]) -> HybridScore:
    assert query.dense is not None and passage.dense is not None
    assert query.sparse is not None and passage.sparse is not None
    assert query.colbert is not None and passage.colbert is not None
    return hybrid_score(
        dense_score(query.dense, passage.dense),
        lexical_matching_score(query.sparse, passage.sparse),
        colbert_score(query.colbert, passage.colbert),
        weights,
    )
