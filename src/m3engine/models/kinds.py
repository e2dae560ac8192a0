"""What a checkpoint is, read from its files: BGE-M3, a sentence embedder, a reranker or a classifier."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from m3engine.errors import MissingHeadFileError, UnknownModelKindError

COLBERT_FILE = "colbert_linear.pt"
SPARSE_FILE = "sparse_linear.pt"


class ModelKind(str, Enum):  # noqa: UP042 - StrEnum would change what str() and f-strings print
    BGE_M3 = "bge-m3"  # XLM-R + colbert_linear.pt + sparse_linear.pt: dense, sparse and ColBERT
    EMBEDDING = "embedding"  # sentence-transformers layout: pooling from 1_Pooling/config.json
    RERANKER = "reranker"  # a cross-encoder with one logit, scoring (query, passage) pairs
    CLASSIFIER = "classifier"  # a sequence classifier with N labels

    @classmethod
    def parse(cls, value: str) -> ModelKind:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(k.value for k in cls)
            raise UnknownModelKindError(f"unknown model kind {value!r}; choose one of: {names}") from None


def read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def read_json_list(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    return [d for d in data if isinstance(d, dict)]


def label_count(config: dict[str, Any]) -> int:
    """Logits of a sequence classifier; transformers omits num_labels / id2label at its default, 2."""
    return int(config.get("num_labels") or len(config.get("id2label") or {}) or 2)


def detect_kind(path: Path) -> ModelKind:
    """The kind of model in `path`, from which files it has and what config.json says."""
    if not (path / "config.json").is_file():
        raise UnknownModelKindError(
            f"{path} has no config.json; is this a transformers checkpoint directory?"
        )
    has_colbert, has_sparse = (path / COLBERT_FILE).is_file(), (path / SPARSE_FILE).is_file()
    if has_colbert and has_sparse:
        return ModelKind.BGE_M3
    if has_colbert or has_sparse:
        missing = SPARSE_FILE if has_colbert else COLBERT_FILE
        raise MissingHeadFileError(
            f"{path} looks like a BGE-M3 checkpoint but has no {missing}; copy it from the original "
            "model repository (BAAI/bge-m3), or pass --kind embedding to use the dense output alone"
        )
    config = read_json(path / "config.json")
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return ModelKind.RERANKER if label_count(config) == 1 else ModelKind.CLASSIFIER
    if (path / "modules.json").is_file() or (path / "1_Pooling" / "config.json").is_file():
        return ModelKind.EMBEDDING
    raise UnknownModelKindError(
        f"cannot tell what {path} is: no BGE-M3 head files, no sequence-classification architecture "
        f"(architectures={architectures}), no sentence-transformers modules.json; pass --kind "
        "(bge-m3, embedding, reranker or classifier)"
    )


def require_head_files(path: Path) -> None:
    """BGE-M3 needs both side heads; FlagEmbedding would silently initialise them at random."""
    missing = [name for name in (COLBERT_FILE, SPARSE_FILE) if not (path / name).is_file()]
    if missing:
        raise MissingHeadFileError(
            f"BGE-M3 checkpoint {path} is missing {', '.join(missing)}; without them the sparse and ColBERT "
            "outputs would be random. Download the full model (BAAI/bge-m3) or pass --kind embedding."
        )
