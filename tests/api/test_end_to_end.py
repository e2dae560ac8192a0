"""The real engines (reference backend, tiny checkpoints) behind the server: HTTP answers equal the
in-process Engine's, through the scheduler's cross-request batches."""

from __future__ import annotations

import base64
import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.live import LiveServer
from tests.texts import MULTILINGUAL


@pytest.fixture(scope="module")
def live(bge_m3: Engine, reranker: Engine) -> Iterator[LiveServer]:
    with LiveServer([bge_m3, reranker], ServerSettings()) as server:  # warm-up on: the real shape runs
        yield server


def test_concurrent_requests_match_the_engine(live: LiveServer, bge_m3: Engine) -> None:
    import openai

    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    texts = MULTILINGUAL[:6]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:  # six requests that share batches
        answers = list(pool.map(lambda t: client.embeddings.create(model="bge-m30", input=t), texts))
    direct = bge_m3.embed(texts)
    for answer, record in zip(answers, direct, strict=True):
        assert np.allclose(answer.data[0].embedding, record.dense, atol=1e-5)


def test_embed_m3_all_three_match_the_engine(live: LiveServer, bge_m3: Engine) -> None:
    texts = MULTILINGUAL[:3]
    body = {"inputs": texts, "return_colbert": True, "encoding_format": "base64", "return_tokens": True}
    data = httpx.post(live.url + "/v1/embed_m3", json=body, timeout=30).json()["data"]
    direct = bge_m3.embed(texts, sparse=True, colbert=True)
    for item, record in zip(data, direct, strict=True):
        assert record.dense is not None and record.sparse is not None and record.colbert is not None
        dense = np.frombuffer(base64.b64decode(item["dense"]), dtype="<f4")
        assert np.allclose(dense, record.dense, atol=1e-5)
        assert item["sparse"]["indices"] == record.sparse.indices.tolist()
        assert np.allclose(item["sparse"]["values"], record.sparse.values, atol=1e-4)
        colbert = np.frombuffer(base64.b64decode(item["colbert"]), dtype="<f2").reshape(record.colbert.shape)
        assert np.allclose(colbert, record.colbert, atol=2e-3)  # float16 transport


def test_rerank_and_score_match_the_engine(live: LiveServer, bge_m3: Engine, reranker: Engine) -> None:
    docs = MULTILINGUAL[1:5]
    got = httpx.post(live.url + "/v2/rerank", json={"query": MULTILINGUAL[0], "documents": docs}).json()
    direct = reranker.rerank(MULTILINGUAL[0], docs)
    assert [r["index"] for r in got["results"]] == [r.index for r in direct]
    assert np.allclose([r["relevance_score"] for r in got["results"]], [r.score for r in direct], atol=1e-5)
    pairs = [[MULTILINGUAL[0], d] for d in docs]
    scores = httpx.post(live.url + "/v1/score", json={"pairs": pairs}).json()["data"]
    expected = bge_m3.score(pairs)
    assert np.allclose(
        [s["colbert+sparse+dense"] for s in scores], [e.colbert_sparse_dense for e in expected], atol=1e-4
    )


def test_fast_backend_behind_the_server(bge_m3_dir: Path, bge_m3: Engine) -> None:
    """The packed (unpadded) backend: the former counts sum(len), and answers equal the reference's."""
    fast = Engine.load(str(bge_m3_dir), backend="fast", device="cpu", dtype="fp32", max_batch_tokens=256)
    assert not fast.backend.info.padded
    texts = MULTILINGUAL[:8]

    def call(url: str, text: str) -> list[list[float]]:
        answer: list[list[float]] = httpx.post(url + "/embed", json={"inputs": text}, timeout=30).json()
        return answer

    # eight requests at once, so that they share batches
    with LiveServer([fast], ServerSettings()) as server, concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda t: call(server.url, t), texts))
    for answer, record in zip(answers, bge_m3.embed(texts), strict=True):
        np.testing.assert_allclose(answer[0], record.dense, atol=1e-5)
