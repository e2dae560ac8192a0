"""Real weights: all-MiniLM-L6-v2 (BERT, mean pooling, normalised) against sentence-transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3engine import Engine, ModelKind
from tests.texts import LONG, MULTILINGUAL


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> Engine:
    return Engine.load(str(minilm_dir), device="cpu", dtype="fp32")


def test_minilm_matches_sentence_transformers(minilm: Engine, minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [*MULTILINGUAL, LONG]  # LONG is over the model's 256-token length: truncated alike
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(texts, convert_to_numpy=True)
    mine = np.stack([r.dense for r in minilm.embed(texts)])
    cosine = (ref * mine).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(mine, axis=1))
    assert cosine.min() >= 0.99999
    np.testing.assert_allclose(mine, ref, atol=1e-5)


def test_minilm_is_read_as_a_mean_pooled_normalised_embedder(minilm: Engine) -> None:
    assert minilm.spec.kind is ModelKind.EMBEDDING
    assert (minilm.spec.pooling, minilm.spec.normalize, minilm.max_length) == ("mean", True, 256)


def test_trained_weights_rank_by_meaning(minilm: Engine) -> None:
    query, close, far = minilm.embed(
        [
            "How many people live in Tokyo?",
            "Tokyo has a population of about 37 million.",
            "Bamboo is eaten by pandas.",
        ]
    )
    assert query.dense is not None and close.dense is not None and far.dense is not None
    assert float(query.dense @ close.dense) > float(query.dense @ far.dense) + 0.2
