"""Metrics of one backend's outputs against the fp32 reference's on the same inputs.

Shared by `m3engine bench`, `m3engine validate` / `build` and fp8's check at load, so each of them
measures drift the same way; records (results.py) in, a flat dict of floats out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from m3engine.results import Embedding


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays, in float32 (ColBERT rows are float16 from half precision)."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    out: np.ndarray = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)
    return out


def embedding_accuracy(ours: list[Embedding], ref: list[Embedding], k: int = 10) -> dict[str, Any]:
    """Dense cosine, sparse top-k overlap and weight error, ColBERT per-vector cosine."""
    dense = cosines(np.stack([o.dense for o in ours]), np.stack([r.dense for r in ref]))  # type: ignore[misc]
    overlaps, weight_errors, colbert = [], [], []
    for o, r in zip(ours, ref, strict=True):
        if o.sparse is not None and r.sparse is not None and len(r.sparse.values):
            kk = min(k, len(r.sparse.values))
            top_o, top_r = set(o.sparse.top_k(kk).indices), set(r.sparse.top_k(kk).indices)
            overlaps.append(len(top_o & top_r) / kk)
            od, rd = o.sparse.to_dict(), r.sparse.to_dict()
            shared = od.keys() & rd.keys()
            if shared:
                weight_errors.append(max(abs(od[t] - rd[t]) for t in shared))
        if o.colbert is not None and r.colbert is not None and len(r.colbert):
            colbert.append(cosines(o.colbert, r.colbert))
    out: dict[str, Any] = {"dense_cos_mean": float(dense.mean()), "dense_cos_min": float(dense.min())}
    if overlaps:
        out["sparse_top10_overlap_mean"] = float(np.mean(overlaps))
        out["sparse_weight_abs_err_max"] = float(np.max(weight_errors)) if weight_errors else 0.0
    if colbert:
        allc = np.concatenate(colbert)
        out["colbert_cos_mean"] = float(allc.mean())
        out["colbert_cos_min"] = float(allc.min())
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(len(x))
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])
