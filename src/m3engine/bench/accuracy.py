"""How far the engine's outputs are from the fp32 reference (transformers) on the same inputs.

The shared metrics live in accuracy/outputs.py; the reranker form of one query is here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from m3engine.accuracy.outputs import embedding_accuracy as embedding_accuracy  # where callers find it
from m3engine.accuracy.outputs import spearman


def score_accuracy(ours: np.ndarray, ref: np.ndarray, k: int = 10) -> dict[str, Any]:
    """Reranker logits: Spearman rank correlation, top-k agreement, largest absolute error."""
    top_o, top_r = set(np.argsort(-ours)[:k]), set(np.argsort(-ref)[:k])
    return {
        "spearman": spearman(ours, ref),
        "top10_agreement": len(top_o & top_r) / k,
        "logit_abs_err_max": float(np.abs(ours - ref).max()),
    }
