"""Reranker parity with FlagEmbedding's FlagReranker: raw and normalised scores, its truncation rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3engine import Engine
from tests.texts import LONG, MULTILINGUAL

MAX_LEN = 128


@pytest.fixture(scope="module")
def flag_reranker(reranker_dir: Path) -> Any:
    from FlagEmbedding import FlagReranker

    return FlagReranker(str(reranker_dir), use_fp16=False, devices="cpu", max_length=MAX_LEN)


def _pairs() -> list[tuple[str, str]]:
    query = MULTILINGUAL[1]
    pairs = [(query, doc) for doc in MULTILINGUAL]
    pairs.append((LONG, MULTILINGUAL[2]))  # a query over 3/4 of the budget: capped at 96 tokens
    pairs.append((LONG[:150], LONG))  # a mid-length query: only the passage is cut
    pairs.append(("a", "b"))
    return pairs


def _round_trips(reranker: Engine, text: str) -> bool:
    """Whether decoding the text's ids gives back the same ids.

    FlagEmbedding 1.4 on transformers 5 builds each pair by decoding the truncated ids to text and
    tokenizing the pair again (tokenizer_compat.prepare_for_model_compat); where that round trip is
    lossy (an <unk> piece decodes to the string "<unk>") it scores other ids than its own id-level
    rule says. We keep the id-level rule and compare on texts that round-trip.
    """
    tok = reranker.tokenizer
    ids = tok.encode([text], 10_000)[0].ids
    return tok.encode([tok.decode(ids)], 10_000)[0].ids == ids


@pytest.mark.parametrize("normalize", [False, True])
def test_pair_scores_match(reranker: Engine, flag_reranker: Any, normalize: bool) -> None:
    pairs = [p for p in _pairs() if _round_trips(reranker, p[0]) and _round_trips(reranker, p[1])]
    assert len(pairs) >= 8
    ref = np.asarray(flag_reranker.compute_score(pairs, normalize=normalize))
    mine = np.asarray(reranker.score_pairs(pairs, normalize=normalize))
    np.testing.assert_allclose(mine, ref, atol=1e-5)
    assert np.unique(np.round(ref, 3)).size > len(pairs) // 2  # the scores differ, so order is tested


def test_query_cap_and_passage_truncation(reranker: Engine) -> None:
    tok = reranker.tokenizer
    (long_query,) = tok.encode_pairs([LONG], ["short passage"], MAX_LEN, MAX_LEN * 3 // 4)
    (mid_query,) = tok.encode_pairs([LONG[:150]], [LONG], MAX_LEN, MAX_LEN * 3 // 4)
    assert len(long_query) <= MAX_LEN and long_query.truncated
    assert len(mid_query) == MAX_LEN and mid_query.truncated
    # the query part (between <s> and the first </s>) keeps at most 3/4 of the budget
    first_sep = long_query.ids.index(2)
    assert first_sep - 1 == MAX_LEN * 3 // 4
    # the mid-length query is kept whole: only the passage was cut
    whole_query = len(tok.encode([LONG[:150]], 10_000)[0]) - 2
    assert mid_query.ids.index(2) - 1 == whole_query


def test_rerank_orders_and_truncates_to_top_n(reranker: Engine, flag_reranker: Any) -> None:
    query = MULTILINGUAL[1]
    docs = [d for d in MULTILINGUAL if _round_trips(reranker, d)]
    ref = np.asarray(flag_reranker.compute_score([(query, d) for d in docs], normalize=True))
    ranked = reranker.rerank(query, docs, top_n=5, return_documents=True)
    assert [r.index for r in ranked] == list(np.argsort(-ref, kind="stable")[:5])
    assert all(r.document == docs[r.index] for r in ranked)
    assert all(0.0 <= r.score <= 1.0 for r in ranked)
    assert ranked[0].score == pytest.approx(1 / (1 + np.exp(-ranked[0].logit)), abs=1e-6)


def test_configured_query_cap_holds_under_a_per_call_budget(reranker_dir: Path) -> None:
    from FlagEmbedding import FlagReranker

    engine = Engine.load(str(reranker_dir), dtype="fp32", query_max_length=20)
    ref = FlagReranker(str(reranker_dir), use_fp16=False, devices="cpu", max_length=100, query_max_length=20)
    docs = [d for d in MULTILINGUAL if _round_trips(engine, d)][:4]
    query = LONG[:400]  # well over 20 tokens
    mine = {r.index: r.logit for r in engine.rerank(query, docs, max_length=100, normalize=False)}
    expected = ref.compute_score([(query, d) for d in docs], normalize=False)
    np.testing.assert_allclose([mine[i] for i in range(len(docs))], expected, atol=1e-5)


def test_ranking_uses_logits_where_sigmoids_saturate(reranker: Engine) -> None:
    from m3engine.types import BatchOutputs

    task = reranker.tasks.rerank("q", ["a", "b", "c"])
    ranked = task.finish(BatchOutputs(logits=np.array([[20.0], [25.0], [17.0]], dtype=np.float32)))
    assert [r.index for r in ranked] == [1, 0, 2]
