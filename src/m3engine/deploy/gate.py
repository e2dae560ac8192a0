"""The accuracy gate, as deploy/ has always named it: it lives in accuracy/gate.py (core layer),
where the engine's fp8 check at load can use it too."""

from m3engine.accuracy.gate import (
    FP8_GATE,
    Gate,
    cosines,
    dense_metrics,
    neighbour_agreement,
    ranking_metrics,
    retrieval_agreement,
    top_k,
)

__all__ = [
    "FP8_GATE",
    "Gate",
    "cosines",
    "dense_metrics",
    "neighbour_agreement",
    "ranking_metrics",
    "retrieval_agreement",
    "top_k",
]
