"""m3engine: BGE-M3 (dense, sparse, ColBERT) and cross-encoder reranking, as the reference computes them.

`Engine` is imported on first use: it loads torch, which an HTTP frontend process
(`m3engine serve --frontends N`) never needs.
"""

from typing import TYPE_CHECKING, Any

from m3engine.errors import (
    BackendError,
    EmptyInputError,
    InputError,
    InputTooLongError,
    InvalidInputTypeError,
    M3EngineError,
    MissingHeadFileError,
    ModelError,
    ModelNotFoundError,
    UnknownModelKindError,
    UnsupportedTaskError,
)
from m3engine.models.kinds import ModelKind
from m3engine.models.scores import colbert_score, lexical_matching_score
from m3engine.results import Classification, Embedding, HybridScore, RerankResult
from m3engine.settings import EngineSettings
from m3engine.types import SparseVector

if TYPE_CHECKING:
    from m3engine.engine import Engine

__all__ = [
    "BackendError",
    "Classification",
    "Embedding",
    "EmptyInputError",
    "Engine",
    "EngineSettings",
    "HybridScore",
    "InputError",
    "InputTooLongError",
    "InvalidInputTypeError",
    "M3EngineError",
    "MissingHeadFileError",
    "ModelError",
    "ModelKind",
    "ModelNotFoundError",
    "RerankResult",
    "SparseVector",
    "UnknownModelKindError",
    "UnsupportedTaskError",
    "colbert_score",
    "lexical_matching_score",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from m3engine.engine import Engine

        return Engine
    raise AttributeError(f"module 'm3engine' has no attribute {name!r}")
