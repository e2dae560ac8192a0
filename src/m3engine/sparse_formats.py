"""BGE-M3's lexical weights in the shape each consumer stores them: one choice, used by the HTTP API
(`sparse_format`), the CLI (`--sparse-format`) and the records (`SparseVector.to_*`).

- `indices_values`: {"indices": [6207, ...], "values": [0.25, ...]}; Qdrant, Milvus, Pinecone (0-based);
- `tei`: [{"index": 6207, "value": 0.25}, ...]; TEI's /embed_sparse clients;
- `flag_dict`: {"6207": 0.25, ...}; FlagEmbedding's lexical_weights, Milvus' BGEM3EmbeddingFunction;
- `pgvector`: "{6208:0.25,...}/250002"; pgvector's `sparsevec` text (1-based indices);
- `elasticsearch`: {"6207": 0.25, ...} or, with token strings, {"▁hello": 0.25, ...}; Elasticsearch
  `sparse_vector`, Elasticsearch and OpenSearch `rank_features`;
- `vespa`: the same object: Vespa's short form of a tensor with one mapped dimension (`token{}`).

Every style keeps FlagEmbedding's rules: special tokens dropped, one weight per token id (the max),
weights > 0 (which Elasticsearch's "strictly positive" requires).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from m3engine.types import SparseVector

SparseStyle = Literal["indices_values", "tei", "flag_dict", "pgvector", "elasticsearch", "vespa"]
SPARSE_STYLES: tuple[str, ...] = get_args(SparseStyle)
# Styles whose keys become token strings when tokens are asked for (`return_tokens`).
TOKEN_KEYED = ("elasticsearch", "vespa")


@dataclass(frozen=True)
class SparseFormat:
    """How to render one text's weights. `dim`: the vocabulary size, which pgvector's text form
    carries; `token_of`: id -> token string, when token strings are wanted (keys of the
    token-keyed styles, a `tokens` list beside `indices_values`)."""

    style: str = "indices_values"
    dim: int | None = None
    token_of: Callable[[int], str] | None = None
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.style not in SPARSE_STYLES:
            raise ValueError(f"unknown sparse format {self.style!r}; use one of {', '.join(SPARSE_STYLES)}")
        if self.style == "pgvector" and self.dim is None:
            raise ValueError("the pgvector format needs the vocabulary size (dim)")

    def render(self, weights: SparseVector) -> Any:
        if self.top_k is not None:
            weights = weights.top_k(self.top_k)
        tokens = None
        if self.token_of is not None and self.style in (*TOKEN_KEYED, "indices_values"):
            tokens = [self.token_of(int(i)) for i in weights.indices]
        if self.style == "tei":
            return [
                {"index": int(i), "value": float(v)}
                for i, v in zip(weights.indices, weights.values, strict=True)
            ]
        if self.style == "flag_dict":
            return weights.to_dict()
        if self.style == "pgvector":
            assert self.dim is not None  # checked in __post_init__
            return weights.to_pgvector(self.dim)
        if self.style == "elasticsearch":
            return weights.to_elasticsearch(tokens)
        if self.style == "vespa":
            return weights.to_vespa(tokens)
        out: dict[str, Any] = weights.to_qdrant()
        if tokens is not None:
            out["tokens"] = tokens
        return out
