"""Each sparse format checked against its store: Qdrant's own client (in memory), pgvector's own
parser, and the documented shapes of Elasticsearch / OpenSearch and Vespa (no server installs here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from m3engine import Engine, lexical_matching_score
from m3engine.sparse_formats import SPARSE_STYLES, SparseFormat
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import SparseVector

TEXTS = ["the cat sat on the mat.", "a dog barked at the cat", "U.S. stocks rose 3.5% on Monday"]


@pytest.fixture(scope="module")
def weights(bge_m3: Engine) -> list[SparseVector]:
    out = [e.sparse for e in bge_m3.embed(TEXTS, dense=False, sparse=True)]
    assert all(w is not None and len(w.indices) for w in out)
    return [w for w in out if w is not None]


def test_pgvector_text_reads_back_through_pgvector_with_one_based_indices(
    weights: list[SparseVector], bge_m3: Engine
) -> None:
    pgvector = pytest.importorskip("pgvector")
    dim = bge_m3.spec.vocab_size
    for w in weights:
        text = w.to_pgvector(dim)
        parsed = pgvector.SparseVector.from_text(text)  # pgvector-python: 0-based indices in Python
        assert parsed.dimensions() == dim
        assert parsed.indices() == w.indices.tolist()
        np.testing.assert_array_equal(np.float32(parsed.values()), w.values)  # exact float4 round trip
        # pgvector's own text for the same vector (from its 0-based dict) reads back the same
        own = pgvector.SparseVector(
            dict(zip(w.indices.tolist(), w.values.tolist(), strict=True)), dim
        ).to_text()
        reread = pgvector.SparseVector.from_text(own)
        assert reread.indices() == parsed.indices()
        np.testing.assert_array_equal(np.float32(reread.values()), np.float32(parsed.values()))
        first = text[1:].split(",")[0]
        assert int(first.split(":")[0]) == int(w.indices[0]) + 1


def test_pgvector_refuses_an_id_past_the_dimension() -> None:
    w = SparseVector(np.array([3, 9]), np.array([0.5, 0.25], dtype=np.float32))
    assert w.to_pgvector(10) == "{4:0.5,10:0.25}/10"
    with pytest.raises(ValueError, match="does not fit"):
        w.to_pgvector(9)


def test_qdrant_in_memory_scores_the_lexical_match(weights: list[SparseVector]) -> None:
    qdrant_client = pytest.importorskip("qdrant_client")
    models = qdrant_client.models
    client = qdrant_client.QdrantClient(":memory:")
    client.create_collection(
        "docs", vectors_config={}, sparse_vectors_config={"sparse": models.SparseVectorParams()}
    )
    client.upsert(
        "docs",
        [
            models.PointStruct(id=i, vector={"sparse": models.SparseVector(**w.to_qdrant())})
            for i, w in enumerate(weights)
        ],
    )
    query = weights[1]
    hits = client.query_points("docs", query=models.SparseVector(**query.to_qdrant()), using="sparse").points
    assert hits[0].id == 1  # a text matches itself best
    for hit in hits:  # Qdrant's sparse dot product is FlagEmbedding's lexical matching score
        assert math.isclose(hit.score, lexical_matching_score(query, weights[hit.id]), rel_tol=1e-5)


def test_elasticsearch_objects_follow_the_documented_rules(
    weights: list[SparseVector], bge_m3_dir: Path
) -> None:
    # sparse_vector / rank_features: "a hash with string keys and strictly positive numeric values",
    # single-valued; rank_features (and sparse_vector before 8.16) refuse dots in feature names.
    tokenizer = TextTokenizer.load(bge_m3_dir)
    for w in weights:
        by_id = w.to_elasticsearch()
        assert all(isinstance(k, str) and "." not in k for k in by_id)
        assert all(isinstance(v, float) and v > 0 for v in by_id.values())
        assert [int(k) for k in by_id] == w.indices.tolist()
        tokens = [tokenizer.id_to_token(int(i)) for i in w.indices]
        by_token = w.to_elasticsearch(tokens)
        assert list(by_token) == tokens and len(set(tokens)) == len(tokens)  # one value per feature
        assert json.loads(json.dumps(by_token)) == by_token
    assert not set(SPARSE_STYLES) - {
        "indices_values",
        "tei",
        "flag_dict",
        "pgvector",
        "elasticsearch",
        "vespa",
    }


def test_vespa_short_form_of_a_mapped_tensor(weights: list[SparseVector]) -> None:
    # "Short form for tensors with a single mapped dimension: a map with the dimension key as key
    # and the value as value", e.g. {"a": 2.0, "b": 3.0} for tensor<float>(token{}).
    w = weights[0]
    cells = w.to_vespa()
    assert cells == {str(int(i)): float(v) for i, v in zip(w.indices, w.values, strict=True)}
    verbose = [{"address": {"token": k}, "value": v} for k, v in cells.items()]  # the long form, same cells
    assert len(verbose) == len(w.indices)


def test_sparse_format_renders_each_style_from_one_vector() -> None:
    w = SparseVector(np.array([2, 5, 7]), np.array([0.5, 0.125, 0.25], dtype=np.float32))
    token_of = {2: "▁a", 5: "b.c", 7: "▁d"}.__getitem__
    assert SparseFormat("tei").render(w) == [
        {"index": 2, "value": 0.5},
        {"index": 5, "value": 0.125},
        {"index": 7, "value": 0.25},
    ]
    assert SparseFormat("flag_dict").render(w) == {"2": 0.5, "5": 0.125, "7": 0.25}
    assert SparseFormat("pgvector", dim=8).render(w) == "{3:0.5,6:0.125,8:0.25}/8"
    assert SparseFormat("elasticsearch", token_of=token_of).render(w) == {"▁a": 0.5, "b.c": 0.125, "▁d": 0.25}
    assert SparseFormat("vespa", top_k=2).render(w) == {"2": 0.5, "7": 0.25}
    assert SparseFormat("indices_values", token_of=token_of).render(w)["tokens"] == ["▁a", "b.c", "▁d"]
    with pytest.raises(ValueError, match="vocabulary size"):
        SparseFormat("pgvector")
    with pytest.raises(ValueError, match="use one of"):
        SparseFormat("solr")
