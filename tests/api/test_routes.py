"""Every route's response shape (reference/api.md), over the fake backend, in-process."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from m3engine.engine import Engine
from tests.api.conftest import MakeClient, backend_of

pytestmark = pytest.mark.anyio


async def test_openai_embeddings_float_and_base64(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    r = await client.post(
        "/v1/embeddings", json={"input": ["hello world", "a second text"], "model": "bge-m30"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == m3_fake.spec.name
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    direct = m3_fake.embed(["hello world", "a second text"])  # same engine, no server
    for d, e in zip(body["data"], direct, strict=True):
        assert np.allclose(d["embedding"], e.dense, atol=1e-6)
    r64 = await client.post("/v1/embeddings", json={"input": "hello world", "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(r64.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vec, direct[0].dense, atol=1e-6)


async def test_openai_token_ids_and_dimensions(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    ids = [0, 10, 11, 12, 2]
    r = await client.post("/v1/embeddings", json={"input": [ids, ids[:3]], "dimensions": 8})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data[0]["embedding"]) == 8
    assert np.isclose(np.linalg.norm(data[0]["embedding"]), 1.0, atol=1e-5)
    assert ids in backend_of(m3_fake).seen  # token ids run as given


async def test_models_route_lists_both(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    kinds = {m["kind"] for m in r.json()["data"]}
    assert kinds == {"bge-m3", "reranker"}


async def test_tei_embed_sparse_and_all(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    r = await client.post("/embed", json={"inputs": "hello world"})
    assert r.status_code == 200 and len(r.json()) == 1 and len(r.json()[0]) == m3_fake.spec.hidden_size
    r = await client.post("/embed_sparse", json={"inputs": ["hello world"]})
    sparse = r.json()[0]
    assert sparse and all(set(x) == {"index", "value"} for x in sparse)
    ids = m3_fake.tokenizer.encode(["hello world"], 100)[0].ids
    assert {x["index"] for x in sparse} == set(ids) - m3_fake.tokenizer.special_ids
    r = await client.post("/embed_all", json={"inputs": ["hello world"]})
    assert np.array(r.json()[0]).shape == (len(ids) - 1, m3_fake.spec.hidden_size)


async def test_tei_rerank_sorted_with_text(client: httpx.AsyncClient, reranker_fake: Engine) -> None:
    docs = ["first doc", "second document here", "third"]
    r = await client.post("/rerank", json={"query": "q text", "texts": docs, "return_text": True})
    assert r.status_code == 200, r.text
    out = r.json()
    scores = [x["score"] for x in out]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert all(x["text"] == docs[x["index"]] for x in out)
    direct = reranker_fake.rerank("q text", docs)
    assert [x["index"] for x in out] == [d.index for d in direct]
    raw = await client.post("/rerank", json={"query": "q text", "texts": docs, "raw_scores": True})
    assert np.allclose(sorted(x["score"] for x in raw.json()), sorted(d.logit for d in direct), atol=1e-5)


async def test_tokenize_and_decode(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    r = await client.post("/tokenize", json={"inputs": "hello world", "model": "bge-m30"})
    tokens = r.json()[0]
    assert tokens[0] == {"id": 0, "text": "<s>", "special": True, "start": None, "stop": None}
    assert tokens[1]["start"] == 0 and not tokens[1]["special"]
    ids = [t["id"] for t in tokens]
    r = await client.post("/decode", json={"ids": ids, "model": "bge-m30"})
    assert r.json() == ["hello world"]
    r = await client.post("/decode", json={"ids": [10**7], "model": "bge-m30"})
    assert r.status_code == 422 and "outside the vocabulary" in r.json()["error"]


async def test_cohere_v1_v2_and_jina_shapes(client: httpx.AsyncClient) -> None:
    docs = ["alpha doc", {"text": "beta document"}, "gamma"]
    body = {"query": "q", "documents": docs, "top_n": 2, "return_documents": True}
    v1 = (await client.post("/v1/rerank", json=body)).json()
    assert v1["meta"]["api_version"]["version"] == "1" and len(v1["results"]) == 2
    assert all(set(x) == {"index", "relevance_score", "document"} for x in v1["results"])
    v2 = (await client.post("/v2/rerank", json={"query": "q", "documents": docs})).json()
    assert v2["meta"]["api_version"] == {"version": "2", "is_experimental": False}
    assert len(v2["results"]) == 3 and "document" not in v2["results"][0]
    assert v2["usage"]["total_tokens"] > 0  # Jina's field


async def test_embed_m3_all_outputs(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    body = {"inputs": ["hello world"], "return_colbert": True, "return_tokens": True, "sparse_top_k": 2}
    item = (await client.post("/v1/embed_m3", json=body)).json()["data"][0]
    assert set(item) >= {"dense", "sparse", "colbert", "num_tokens"}
    assert len(item["sparse"]["indices"]) == 2 == len(item["sparse"]["tokens"])
    b64 = {
        "inputs": "hello world",
        "return_colbert": True,
        "encoding_format": "base64",
        "sparse_format": "tei",
    }
    item = (await client.post("/v1/embed_m3", json=b64)).json()["data"][0]
    colbert = np.frombuffer(base64.b64decode(item["colbert"]), dtype="<f2").reshape(
        -1, m3_fake.spec.hidden_size
    )
    assert colbert.shape[0] == item["num_tokens"] - 1
    assert isinstance(item["sparse"], list)


async def test_score_matches_engine(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    pairs = [["what is it", "it is a thing"], ["what is it", "another passage"]]
    r = await client.post("/v1/score", json={"pairs": pairs, "weights": [0.4, 0.2, 0.4]})
    assert r.status_code == 200, r.text
    direct = m3_fake.score(pairs, [0.4, 0.2, 0.4])
    for got, want in zip(r.json()["data"], direct, strict=True):
        assert got["colbert+sparse+dense"] == pytest.approx(want.colbert_sparse_dense, rel=1e-5)


@pytest.mark.parametrize("weights", [[1.0, -1.0, 1.0], [0.0, 0.0, 1.0]])
async def test_bad_score_weights_are_refused_before_any_work(
    client: httpx.AsyncClient, m3_fake: Engine, weights: list[float]
) -> None:
    forwarded = len(backend_of(m3_fake).seen)
    r = await client.post("/v1/score", json={"pairs": [["q", "p"]], "weights": weights})
    assert r.status_code == 422 and "weights must be" in r.text
    assert len(backend_of(m3_fake).seen) == forwarded  # ScoreOptions refused it: nothing ran


async def test_predict_and_classify(make_client, classifier_fake: Engine) -> None:  # type: ignore[no-untyped-def]
    client = await make_client([classifier_fake]).start()
    one = (await client.post("/predict", json={"inputs": "great movie"})).json()
    assert {x["label"] for x in one} == {"negative", "neutral", "positive"}
    assert sum(x["score"] for x in one) == pytest.approx(1.0, abs=1e-5)
    batch = (await client.post("/predict", json={"inputs": [["a", "b"], ["c", "d"]]})).json()
    assert len(batch) == 2 and len(batch[0]) == 3
    out = (await client.post("/classify", json={"input": ["x y", "z"]})).json()
    assert out["object"] == "classify" and len(out["data"]) == 2


async def test_routing_by_model_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/embeddings", json={"input": "x", "model": "no-such-model"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "model_not_served"
    r = await client.post("/v1/embeddings", json={"input": "x", "model": "bge-reranker-v2-m30"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "unsupported_task"


async def test_info_lists_settings_and_timing_headers(client: httpx.AsyncClient) -> None:
    info = (await client.get("/info")).json()
    assert info["server"]["host"] == "127.0.0.1" and len(info["models"]) == 2
    r = await client.post("/embed", json={"inputs": "hello"}, headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert float(r.headers["x-inference-time"]) >= 0 and "x-queue-time" in r.headers


async def test_rerank_chunks_long_documents_and_keeps_best_window(
    client: httpx.AsyncClient, reranker_fake: Engine
) -> None:
    long_doc = " ".join(f"word{i % 50} text" for i in range(300))  # far over the 128-token limit
    docs = [long_doc, "a short document"]
    body = {"query": "which window", "documents": docs, "max_chunks_per_doc": 4, "raw_scores": True}
    r = await client.post("/v1/rerank", json=body)
    assert r.status_code == 200, r.text
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    windows = reranker_fake.tokenizer.encode_pair_chunks(
        "which window", docs, reranker_fake.max_length, reranker_fake.query_max_length, 4
    )
    assert len(windows[0]) == 4 and len(windows[1]) == 1
    assert all(len(w) <= reranker_fake.max_length for w in windows[0])
    fake = backend_of(reranker_fake)
    best = max(float(fake.logits_of(w.ids, 1)[0]) for w in windows[0])
    assert got[0] == pytest.approx(best, rel=1e-6)
    plain = await client.post("/v1/rerank", json={**body, "max_chunks_per_doc": None})
    unchunked = {x["index"]: x["relevance_score"] for x in plain.json()["results"]}
    assert got[1] == pytest.approx(unchunked[1], rel=1e-6)  # a short document is one window either way


async def test_huge_text_is_cut_before_tokenizing(client: httpx.AsyncClient, m3_fake: Engine) -> None:
    huge = "alpha beta " * 200_000  # 2.2 MB: far past what 128 tokens can use
    r = await client.post("/v1/embed_m3", json={"inputs": huge, "return_sparse": False})
    assert r.status_code == 200
    item = r.json()["data"][0]
    assert item["truncated"] and item["num_tokens"] == m3_fake.max_length
    assert float(r.headers["x-tokenization-time"]) < 1000  # ms; the whole text would take longer


async def test_float16_colbert_rows_through_every_route(make_client: MakeClient, m3_fake: Engine) -> None:
    """A bf16/fp16 engine's ColBERT rows are float16: float lists, base64 and hybrid scores all serve them."""
    fake = backend_of(m3_fake)
    as_float32 = fake.colbert_of
    fake.colbert_of = lambda ids: as_float32(ids).astype(np.float16)  # type: ignore[method-assign]
    client = await make_client([m3_fake]).start()
    want = m3_fake.embed(["hello world"], colbert=True)[0].colbert
    assert want is not None and want.dtype == np.float16
    body = {"inputs": ["hello world"], "return_colbert": True}
    floats = (await client.post("/v1/embed_m3", json=body)).json()["data"][0]["colbert"]
    # JSON carries each value's shortest form for its own type (orjson): the same float16 values
    assert np.array_equal(np.array(floats, dtype=np.float16), want)
    b64 = (await client.post("/v1/embed_m3", json={**body, "encoding_format": "base64"})).json()
    assert np.array_equal(np.frombuffer(base64.b64decode(b64["data"][0]["colbert"]), "<f2"), want.ravel())
    pairs = [["what is it", "it is a thing"], ["what is it", "another passage"]]
    got = (await client.post("/v1/score", json={"pairs": pairs})).json()["data"]
    for answer, direct in zip(got, m3_fake.score(pairs), strict=True):
        assert answer["colbert"] == pytest.approx(direct.colbert, rel=1e-6)
        assert 0.0 < abs(answer["colbert"]) < 1.0 + 1e-3  # a mean of unit-vector dot products
