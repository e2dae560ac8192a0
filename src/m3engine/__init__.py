"""m3engine: BGE-M3 (dense, sparse, ColBERT) and cross-encoder reranking, as the reference computes them.

`Engine` is imported on first use: it loads torch, which an HTTP frontend process
(`m3engine serve --frontends N`) never needs.
"""

import typing as _typing

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
from m3engine.version import __version__ as __version__

if _typing.TYPE_CHECKING:
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


def __getattr__(name: str) -> _typing.Any:
    if name == "Engine":
        from m3engine.engine import Engine

        globals()["Engine"] = Engine  # later lookups find it without this function
        return Engine
    raise AttributeError(f"module 'm3engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "Engine"})
