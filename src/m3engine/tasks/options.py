"""One options object per task: built once (Python keywords, CLI flags, a request body), passed down whole.

    >>> options = EmbedOptions(dense=True, sparse=True)      # checked here: ranges, enums, outputs
    >>> engine.embed(texts, options=options)                 # or engine.embed(texts, dense=True, sparse=True)
    >>> builder.embed_bulk(texts, options)                   # the model's own limits: tasks/context.py

What an options object checks needs no model: ranges, names, at least one output. What needs the model
(dimensions <= hidden size, max_length <= the model's limit, the heads its kind has) is checked in one
place, `TaskContext` (context.py), when a task is built.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from m3engine.errors import InputError

INPUT_TYPES = ("query", "passage")
MIN_LENGTH = 3  # the smallest max_length that leaves room for a token between the special ones


@dataclass(frozen=True)
class EmbedOptions:
    """What `embed` returns and how it reads its texts.

    `input_type` "query" applies the query instruction and query_max_length; "passage" max_length.
    `dimensions` keeps the first D dense values (then re-normalises); `normalize=None` follows the
    model (BGE-M3: normalised). `truncate=False` fails on a text over the limit instead of cutting it.
    """

    dense: bool = True
    sparse: bool = False
    colbert: bool = False
    input_type: str = "passage"
    max_length: int | None = None
    truncate: bool = True
    dimensions: int | None = None
    normalize: bool | None = None

    def __post_init__(self) -> None:
        _flags(self, "dense", "sparse", "colbert", "truncate")
        if self.normalize is not None:
            _flags(self, "normalize")
        if self.input_type not in INPUT_TYPES:
            raise InputError(f"input_type must be 'query' or 'passage', got {self.input_type!r}")
        if not (self.dense or self.sparse or self.colbert):
            raise InputError("ask for at least one output: dense, sparse or colbert")
        _at_least(self, "max_length", MIN_LENGTH)
        _at_least(self, "dimensions", 1)


@dataclass(frozen=True)
class ScoreOptions:
    """BGE-M3's hybrid scores (FlagEmbedding's `compute_score`): weights of dense, sparse, ColBERT."""

    weights: Sequence[float] = (1.0, 1.0, 1.0)
    query_max_length: int | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        weights = self.weights
        if isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) != 3:
            count = len(weights) if isinstance(weights, Sequence) else "no"
            raise InputError(f"weights must be [w_dense, w_sparse, w_colbert]; got {count} values")
        if any(isinstance(w, bool) or not isinstance(w, numbers.Real) for w in weights):
            raise InputError("weights must be three numbers [w_dense, w_sparse, w_colbert]")
        values = tuple(float(w) for w in weights)
        if not all(math.isfinite(w) and w >= 0 for w in values) or values[0] + values[1] <= 0:
            raise InputError(
                f"weights must be finite and >= 0 with w_dense + w_sparse > 0; got {list(values)}"
            )
        object.__setattr__(self, "weights", values)  # a tuple: the options stay immutable
        _at_least(self, "query_max_length", MIN_LENGTH)
        _at_least(self, "max_length", MIN_LENGTH)


@dataclass(frozen=True)
class RerankOptions:
    """How `rerank` scores and returns documents.

    `normalize` gives sigmoid scores in [0, 1] (False: the logits); `top_n` keeps the best N;
    `max_chunks_per_doc` > 1 scores a long document as up to that many windows and keeps the best
    (Cohere v1); `max_length` caps the (query, document) pair, `query_max_length` the query's share.
    """

    top_n: int | None = None
    normalize: bool = True
    truncate: bool = True
    max_length: int | None = None
    query_max_length: int | None = None
    return_documents: bool = False
    max_chunks_per_doc: int | None = None

    def __post_init__(self) -> None:
        _flags(self, "normalize", "truncate", "return_documents")
        _at_least(self, "top_n", 1)
        _at_least(self, "max_length", MIN_LENGTH)
        _at_least(self, "query_max_length", MIN_LENGTH)
        _at_least(self, "max_chunks_per_doc", 1)

    @property
    def chunked(self) -> bool:
        """Documents run as several windows each (not one sequence per document)."""
        return self.max_chunks_per_doc is not None and self.max_chunks_per_doc > 1


@dataclass(frozen=True)
class PairScoreOptions:
    """FlagReranker's `compute_score`: sigmoid scores (`normalize`) or the logits."""

    normalize: bool = True
    truncate: bool = True

    def __post_init__(self) -> None:
        _flags(self, "normalize", "truncate")


@dataclass(frozen=True)
class ClassifyOptions:
    """`raw_scores` gives the logits instead of label probabilities."""

    truncate: bool = True
    max_length: int | None = None
    raw_scores: bool = False

    def __post_init__(self) -> None:
        _flags(self, "truncate", "raw_scores")
        _at_least(self, "max_length", MIN_LENGTH)


Options = TypeVar("Options", EmbedOptions, ScoreOptions, RerankOptions, PairScoreOptions, ClassifyOptions)


def resolve(kind: type[Options], options: Options | None, keywords: Mapping[str, Any]) -> Options:
    """The options of one call: `options` (default: all defaults) with `keywords` over it.

    Unknown keywords are a TypeError that lists the known ones, as a misspelt keyword argument is.
    """
    if options is not None and not isinstance(options, kind):
        raise TypeError(f"options must be a {kind.__name__}, got a {type(options).__name__}")
    known = {f.name for f in dataclasses.fields(kind if options is None else options)}
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for {kind.__name__}; "
            f"the options are: {', '.join(sorted(known))}"
        )
    if options is None:
        return kind(**keywords)
    return dataclasses.replace(options, **keywords) if keywords else options


def _flags(options: object, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if value not in (True, False):  # bool, numpy's bool, 0 and 1; not "false" nor None
            raise InputError(f"{name} must be true or false, got a {type(value).__name__}")


def _at_least(options: object, name: str, low: int) -> None:
    """An optional integer option: None (the default) or an int >= low."""
    value = getattr(options, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(
            f"{name} must be a whole number >= {low} (or left out), got a {type(value).__name__}"
        )
    if value < low:
        raise InputError(f"{name} must be >= {low} (or left out for the default), got {value}")
