"""The options objects: what each checks without a model, how a call's options are resolved, and that
the Engine hands them down whole (so a new option needs no change in the Engine)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from m3engine import Engine, InputError, UnsupportedTaskError
from m3engine.tasks.options import (
    ClassifyOptions,
    EmbedOptions,
    PairScoreOptions,
    RerankOptions,
    ScoreOptions,
    resolve,
)
from tests.texts import LONG

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


# ---- through the Engine ---------------------------------------------------------------------------
def test_engine_options_object_equals_keywords(bge_m3: Engine, reranker: Engine) -> None:
    texts = ["one text", LONG]
    by_keywords = bge_m3.embed(texts, sparse=True, dimensions=8, input_type="query")
    options = EmbedOptions(sparse=True, dimensions=8, input_type="query")
    by_options = bge_m3.embed(texts, options=options)
    for a, b in zip(by_keywords, by_options, strict=True):
        np.testing.assert_array_equal(a.dense, b.dense)
        assert a.sparse is not None and b.sparse is not None
        np.testing.assert_array_equal(a.sparse.values, b.sparse.values)
    plain = reranker.rerank("q", ["a", "b", "c"], top_n=2)
    assert [r.index for r in reranker.rerank("q", ["a", "b", "c"], options=RerankOptions(top_n=2))] == [
        r.index for r in plain
    ]
    (logit,) = reranker.score_pairs([("q", "a")], options=PairScoreOptions(normalize=False))
    assert logit == pytest.approx(reranker.rerank("q", ["a"], normalize=False)[0].score, abs=1e-5)


def test_a_new_option_reaches_the_task_with_no_change_to_the_engine(
    bge_m3: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field added to EmbedOptions is a keyword of Engine.embed at once, and arrives whole."""
    import m3engine.engine

    @dataclasses.dataclass(frozen=True)
    class WithNewField(EmbedOptions):
        pooling: str = "cls"

    seen: list[EmbedOptions] = []
    build = bge_m3.tasks.embed_bulk

    def spy(texts: Any, options: EmbedOptions) -> Any:
        seen.append(options)
        return build(texts, options)

    monkeypatch.setattr(bge_m3.tasks, "embed_bulk", spy)
    monkeypatch.setattr(m3engine.engine, "EmbedOptions", WithNewField)  # as if the field were added
    bge_m3.embed(["a text"], pooling="mean", sparse=True)
    bge_m3.embed(["a text"], options=WithNewField(pooling="last"), dimensions=8)
    assert seen == [WithNewField(pooling="mean", sparse=True), WithNewField(pooling="last", dimensions=8)]


def test_checks_that_need_the_model(bge_m3: Engine, reranker: Engine) -> None:
    hidden, limit = bge_m3.spec.hidden_size, bge_m3.spec.max_length
    with pytest.raises(InputError, match=f"dimensions must be between 1 and {hidden}; got {hidden + 1}"):
        bge_m3.embed(["x"], dimensions=hidden + 1)
    with pytest.raises(InputError, match=f"max_length must be between 3 and the model's limit {limit}"):
        bge_m3.score([("q", "p")], max_length=limit + 1)
    with pytest.raises(InputError, match="query_max_length must be between 3"):
        reranker.rerank("q", ["d"], query_max_length=limit + 1)
    dense_only = Engine.load(str(bge_m3.spec.path), kind="embedding", device="cpu", dtype="fp32")
    assert dense_only.embed(["x"])[0].dense is not None
    with pytest.raises(UnsupportedTaskError, match="dense output only"):
        dense_only.embed(["x"], sparse=True)
    with pytest.raises(UnsupportedTaskError, match="score_pairs needs a reranker"):
        bge_m3.score_pairs([("q", "p")])


def test_engine_rerank_takes_max_chunks_per_doc(reranker: Engine) -> None:
    """Cohere v1's chunking, which the server had, is an Engine option too (one options class)."""
    (one,) = reranker.rerank("what is it", [LONG], max_chunks_per_doc=4)
    (cut,) = reranker.rerank("what is it", [LONG])
    assert cut.truncated and cut.num_tokens == reranker.max_length
    assert one.num_tokens > cut.num_tokens and one.index == 0
    assert reranker.rerank("what is it", [LONG], max_chunks_per_doc=1)[0].logit == pytest.approx(cut.logit)


def test_classify_raw_scores_are_the_logits(reranker: Engine) -> None:
    (prob,) = reranker.classify(["a text"])
    (raw,) = reranker.classify(["a text"], raw_scores=True)
    assert prob.score == pytest.approx(1 / (1 + math.exp(-raw.score)), rel=1e-5)
