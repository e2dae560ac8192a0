"""BGE-M3 parity with FlagEmbedding's BGEM3FlagModel on the same checkpoint and texts, in fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3engine import Engine
from tests.texts import LONG, MULTILINGUAL

MAX_LEN = 128


@pytest.fixture(scope="module")
def flag_model(bge_m3_dir: Path) -> Any:
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(
        str(bge_m3_dir), use_fp16=False, devices="cpu", query_max_length=MAX_LEN, passage_max_length=MAX_LEN
    )


@pytest.fixture(scope="module")
def texts(bge_m3: Engine) -> list[str]:
    """The multilingual texts plus prefixes of a long text that end just below, at and above the limit."""
    by_length: dict[int, str] = {}
    for n in range(1, 400):  # character prefixes: token counts grow by 0-2 per character
        text = LONG[:n].strip()
        by_length.setdefault(len(bge_m3.tokenizer.encode([text], 10_000)[0]), text)
    wanted = [length for length in (MAX_LEN - 1, MAX_LEN, MAX_LEN + 1) if length in by_length]
    assert MAX_LEN in wanted, "no prefix lands exactly at the limit"
    return [*MULTILINGUAL, LONG, *(by_length[length] for length in wanted)]


@pytest.fixture(scope="module")
def reference(flag_model: Any, texts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = flag_model.encode(
        texts, return_dense=True, return_sparse=True, return_colbert_vecs=True, max_length=MAX_LEN
    )
    return out


@pytest.fixture(scope="module")
def ours(bge_m3: Engine, texts: list[str]) -> list[Any]:
    return bge_m3.embed(texts, dense=True, sparse=True, colbert=True)


def test_lengths_cover_one_token_to_the_limit(ours: list[Any]) -> None:
    lengths = [r.num_tokens for r in ours]
    assert min(lengths) <= 3 and max(lengths) == MAX_LEN
    assert any(r.truncated for r in ours) and not all(r.truncated for r in ours)


def test_dense_matches(ours: list[Any], reference: dict[str, Any]) -> None:
    ref = np.asarray(reference["dense_vecs"])
    mine = np.stack([r.dense for r in ours])
    cosine = (ref * mine).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(mine, axis=1))
    assert cosine.min() >= 0.99999
    np.testing.assert_allclose(mine, ref, atol=1e-5)
    # different texts must give clearly different vectors, or the check above proves nothing
    distinct = mine[: len(MULTILINGUAL)]  # the truncated long texts share their first 128 tokens
    assert (distinct @ distinct.T - np.eye(len(distinct))).max() < 0.99


def test_sparse_matches(ours: list[Any], reference: dict[str, Any]) -> None:
    for mine, ref in zip(ours, reference["lexical_weights"], strict=True):
        got = mine.sparse.to_dict()
        assert set(got) == set(ref)
        for token, weight in ref.items():
            assert got[token] == pytest.approx(float(weight), abs=1e-5)
    assert sum(len(r.sparse.indices) for r in ours) > 50  # weights exist to compare


def test_colbert_matches(ours: list[Any], reference: dict[str, Any]) -> None:
    for mine, ref in zip(ours, reference["colbert_vecs"], strict=True):
        assert mine.colbert.shape == ref.shape == (mine.num_tokens - 1, mine.colbert.shape[1])
        np.testing.assert_allclose(mine.colbert, ref, atol=1e-5)


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [0.4, 0.2, 0.4]])
def test_compute_score_matches(bge_m3: Engine, flag_model: Any, weights: list[float]) -> None:
    pairs = [
        (MULTILINGUAL[0], MULTILINGUAL[1]),
        (MULTILINGUAL[5], MULTILINGUAL[5]),
        ("hello hello world", MULTILINGUAL[12]),
        (MULTILINGUAL[7], LONG),
    ]
    mine = bge_m3.score(pairs, weights=weights)
    for (query, passage), got in zip(pairs, mine, strict=True):
        # one pair per call: FlagEmbedding's batched MaxSim also takes the max over padding vectors
        ref = flag_model.compute_score([(query, passage)], weights_for_different_modes=weights)
        for key, value in got.to_json().items():
            assert value == pytest.approx(ref[key][0], abs=1e-5), key
    assert len({round(s.dense, 4) for s in mine}) == len(pairs)


def test_matryoshka_dimensions(bge_m3: Engine, reference: dict[str, Any], texts: list[str]) -> None:
    short = bge_m3.embed(texts[:3], dimensions=8)
    ref = np.asarray(reference["dense_vecs"])[:3, :8]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack([r.dense for r in short]), ref, atol=1e-5)


def test_compute_score_ignores_the_query_instruction(bge_m3_dir: Path, bge_m3: Engine) -> None:
    instructed = Engine.load(str(bge_m3_dir), dtype="fp32", query_instruction="query: ")
    pair = [(MULTILINGUAL[0], MULTILINGUAL[1])]
    assert instructed.score(pair)[0].to_json() == pytest.approx(bge_m3.score(pair)[0].to_json(), abs=1e-6)
    (a,), (b,) = instructed.embed([MULTILINGUAL[0]], input_type="query"), bge_m3.embed([MULTILINGUAL[0]])
    assert a.num_tokens > b.num_tokens  # while embed(input_type="query") does apply it
