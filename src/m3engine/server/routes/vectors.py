"""Vectors to JSON: float lists, or base64 of little-endian float32 (OpenAI) / float16 (ColBERT)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from m3engine.sparse_formats import SparseFormat
from m3engine.types import FloatArray, SparseVector


def vector(values: FloatArray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode()
    return values.tolist()  # type: ignore[no-any-return]


def multi_vector(values: FloatArray, encoding_format: str) -> list[list[float]] | str:
    """ColBERT rows: float lists, or base64 of the (rows, dim) float16 array in row-major order."""
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(values, dtype="<f2").tobytes()).decode()
    return values.tolist()  # type: ignore[no-any-return]


def sparse(weights: SparseVector, style: str) -> Any:
    """Lexical weights in one of sparse_formats' styles that need no vocabulary size or tokens."""
    return SparseFormat(style).render(weights)


def label_scores(scores: dict[str, float]) -> list[dict[str, object]]:
    """[{score, label}] best first (TEI's /predict and Infinity's /classify)."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return [{"score": score, "label": label} for label, score in ranked]
