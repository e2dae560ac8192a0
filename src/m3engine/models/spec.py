"""ModelSpec: everything the engine needs to know about a checkpoint, read once from its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3engine.errors import UnknownModelKindError
from m3engine.models.kinds import (
    ModelKind,
    detect_kind,
    label_count,
    read_json,
    read_json_list,
    require_head_files,
)

# RoBERTa-style models number positions from padding_idx + 1, so two positions are never usable.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"}
_SUPPORTED_TYPES = {"bert", "roberta", "xlm-roberta", "camembert"}
_ST_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # as the user gave it (hub id or path)
    path: Path
    kind: ModelKind
    model_type: str  # config.json's model_type: xlm-roberta, bert, ...
    hidden_size: int
    vocab_size: int
    max_length: int  # the hard limit of the position table, special tokens included
    default_max_length: int  # the checkpoint's own truncation length (<= max_length)
    pooling: str = "cls"  # cls or mean; how the dense vector is formed
    normalize: bool = True  # whether the dense vector is L2-normalised by default
    labels: tuple[str, ...] = ()  # classifier / reranker label names, by logit index
    multi_label: bool = False  # sigmoid per label instead of softmax across labels

    @property
    def is_cross_encoder(self) -> bool:
        return self.kind in (ModelKind.RERANKER, ModelKind.CLASSIFIER)


def _position_limit(config: dict[str, Any], model_type: str) -> int:
    positions = int(config.get("max_position_embeddings", 512))
    if model_type in _OFFSET_POSITIONS:
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


def _checkpoint_max_length(path: Path, limit: int) -> int:
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        value = read_json(st_config).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return min(value, limit)
    tok_config = path / "tokenizer_config.json"
    if tok_config.is_file():
        value = read_json(tok_config).get("model_max_length")
        if isinstance(value, int | float) and 0 < value < 1e9:
            return min(int(value), limit)
    return limit


def _pooling_mode(config: dict[str, Any], where: Path) -> str:
    """CLS or mean, from a Pooling config in either sentence-transformers format.

    Version 6 writes {"pooling_mode": "mean", "include_prompt": true}; earlier versions write one
    boolean per mode ({"pooling_mode_mean_tokens": true, ...}).
    """
    if isinstance(config.get("pooling_mode"), str):
        modes = [config["pooling_mode"]]
    else:
        modes = [
            k.removeprefix("pooling_mode_") for k, v in config.items() if k.startswith("pooling_mode") and v
        ]
    names = {"cls": "cls", "cls_token": "cls", "mean": "mean", "mean_tokens": "mean"}
    if len(modes) != 1 or modes[0] not in names:
        raise UnknownModelKindError(
            f"{where} asks for pooling {modes}; m3engine supports exactly one of CLS or mean pooling"
        )
    if config.get("include_prompt") is False:
        raise UnknownModelKindError(
            f"{where} pools without the prompt tokens (include_prompt: false), which m3engine does not do"
        )
    return names[modes[0]]


def _sentence_transformers_pooling(path: Path) -> tuple[str, bool]:
    """(pooling, normalize) from modules.json and the Pooling config; CLS and no norm otherwise."""
    pooling, normalize = "cls", False
    pooling_dir = path / "1_Pooling"
    if (path / "modules.json").is_file():
        for module in read_json_list(path / "modules.json"):
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind not in _ST_MODULES:
                raise UnknownModelKindError(
                    f"{path}: sentence-transformers module {module.get('path')!r} of type {kind} is not "
                    f"supported; m3engine serves {' + '.join(_ST_MODULES)} pipelines"
                )
            if kind == "Pooling":
                pooling_dir = path / str(module.get("path", "1_Pooling"))
            normalize = normalize or kind == "Normalize"
    if (pooling_dir / "config.json").is_file():
        pooling = _pooling_mode(read_json(pooling_dir / "config.json"), pooling_dir / "config.json")
    return pooling, normalize


def inspect_model(path: Path, name: str | None = None, kind: ModelKind | None = None) -> ModelSpec:
    """Read a checkpoint directory into a ModelSpec; `kind` overrides detection."""
    kind = kind or detect_kind(path)
    config = read_json(path / "config.json")
    model_type = str(config.get("model_type", ""))
    if model_type not in _SUPPORTED_TYPES:
        raise UnknownModelKindError(
            f"{path}: model_type {model_type!r} is not supported; m3engine serves the BERT and XLM-R "
            f"families ({', '.join(sorted(_SUPPORTED_TYPES))})"
        )
    limit = _position_limit(config, model_type)
    pooling, normalize = "cls", True
    labels: tuple[str, ...] = ()
    if kind is ModelKind.BGE_M3:
        require_head_files(path)
    elif kind is ModelKind.EMBEDDING:
        pooling, normalize = _sentence_transformers_pooling(path)
    else:
        id2label = config.get("id2label") or {}
        count = label_count(config)
        labels = tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count))
    return ModelSpec(
        name=name or str(path),
        path=path,
        kind=kind,
        model_type=model_type,
        hidden_size=int(config["hidden_size"]),
        vocab_size=int(config["vocab_size"]),
        max_length=limit,
        default_max_length=_checkpoint_max_length(path, limit),
        pooling=pooling,
        normalize=normalize,
        labels=labels,
        multi_label=config.get("problem_type") == "multi_label_classification",
    )
