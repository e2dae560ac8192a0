"""The options objects: what each checks without a model, how a call's options are resolved, and that
the Engine hands them down whole (so a new option needs no change in the Engine)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from m3engine import InputError
from m3engine.tasks.options import (
    ClassifyOptions,
    EmbedOptions,
    PairScoreOptions,
    RerankOptions,
    ScoreOptions,
    resolve,
)

BAD: list[tuple[type[Any], dict[str, Any], str]] = [
    (EmbedOptions, {"dense": False}, "at least one output: dense, sparse or colbert"),
    (EmbedOptions, {"input_type": "document"}, "input_type must be 'query' or 'passage'"),
    (EmbedOptions, {"max_length": 2}, "max_length must be >= 3"),
    (EmbedOptions, {"max_length": 12.5}, "max_length must be a whole number"),
    (EmbedOptions, {"dimensions": 0}, "dimensions must be >= 1"),
    (EmbedOptions, {"dimensions": True}, "dimensions must be a whole number"),
    (EmbedOptions, {"sparse": "yes"}, "sparse must be true or false"),
    (EmbedOptions, {"normalize": "no"}, "normalize must be true or false"),
    (ScoreOptions, {"weights": (1.0, 1.0)}, r"weights must be \[w_dense, w_sparse, w_colbert\]; got 2"),
    (ScoreOptions, {"weights": "abc"}, r"weights must be \[w_dense, w_sparse, w_colbert\]"),
    (ScoreOptions, {"weights": (1.0, "a", 1.0)}, "weights must be three numbers"),
    (ScoreOptions, {"weights": (1.0, -0.5, 1.0)}, "finite and >= 0"),
    (ScoreOptions, {"weights": (math.nan, 1.0, 1.0)}, "finite and >= 0"),
    (ScoreOptions, {"weights": (math.inf, 1.0, 1.0)}, "finite and >= 0"),
    (ScoreOptions, {"weights": (0.0, 0.0, 1.0)}, r"w_dense \+ w_sparse > 0"),
    (ScoreOptions, {"query_max_length": 1}, "query_max_length must be >= 3"),
    (RerankOptions, {"top_n": 0}, "top_n must be >= 1"),
    (RerankOptions, {"max_chunks_per_doc": 0}, "max_chunks_per_doc must be >= 1"),
    (RerankOptions, {"query_max_length": 2}, "query_max_length must be >= 3"),
    (RerankOptions, {"return_documents": None}, "return_documents must be true or false"),
    (PairScoreOptions, {"truncate": "false"}, "truncate must be true or false"),
    (ClassifyOptions, {"max_length": 0}, "max_length must be >= 3"),
    (ClassifyOptions, {"raw_scores": 2}, "raw_scores must be true or false"),
]


@pytest.mark.parametrize(("kind", "fields", "message"), BAD, ids=[f"{k.__name__}-{m}" for k, _, m in BAD])
def test_each_bad_option_says_what_is_wrong(kind: type[Any], fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        kind(**fields)


def test_good_options_are_kept_as_given_and_frozen() -> None:
    options = EmbedOptions(sparse=True, colbert=True, dense=False, dimensions=np.int64(8), max_length=16)
    assert (options.dense, options.sparse, options.colbert, options.dimensions) == (False, True, True, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.dense = True  # type: ignore[misc]
    weights = ScoreOptions(weights=[0.4, 0, np.float32(0.4)]).weights
    assert weights == (0.4, 0.0, pytest.approx(0.4)) and isinstance(weights, tuple)
    assert RerankOptions(max_chunks_per_doc=4).chunked and not RerankOptions(max_chunks_per_doc=1).chunked
    assert PairScoreOptions(normalize=np.bool_(False)).normalize == 0  # numpy's bool is a bool here


def test_resolve_puts_keywords_over_the_options() -> None:
    assert resolve(EmbedOptions, None, {}) == EmbedOptions()
    assert resolve(EmbedOptions, None, {"sparse": True}) == EmbedOptions(sparse=True)
    base = EmbedOptions(sparse=True, dimensions=8)
    assert resolve(EmbedOptions, base, {}) is base
    assert resolve(EmbedOptions, base, {"dimensions": 4}) == EmbedOptions(sparse=True, dimensions=4)
    with pytest.raises(InputError, match="at least one output"):  # the result is checked again
        resolve(EmbedOptions, EmbedOptions(dense=False, sparse=True), {"sparse": False})


def test_unknown_keywords_and_wrong_options_are_type_errors() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'sparce' for EmbedOptions; .*sparse"):
        resolve(EmbedOptions, None, {"sparce": True})
    with pytest.raises(TypeError, match="options must be a RerankOptions, got a EmbedOptions"):
        resolve(RerankOptions, EmbedOptions(), {})  # type: ignore[type-var]
