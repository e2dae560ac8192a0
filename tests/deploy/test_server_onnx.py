"""ONNX artifacts behind the real HTTP server: answers equal the reference engine's (fp32, 1e-4)."""

from __future__ import annotations

import base64
import concurrent.futures
from pathlib import Path

import httpx
import numpy as np

from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.live import LiveServer
from tests.texts import MULTILINGUAL


def test_the_server_answers_from_onnx_artifacts(
    m3_artifact: Path, reranker_artifact: Path, bge_m3: Engine, reranker: Engine
) -> None:
    engines = [
        Engine.load(str(m3_artifact), backend="onnx", device="cpu", max_batch_tokens=2048),
        Engine.load(str(reranker_artifact), backend="onnx", device="cpu", max_batch_tokens=2048),
    ]
    texts = MULTILINGUAL[:6]
    body = {"inputs": texts[:3], "return_colbert": True, "encoding_format": "base64"}
    docs = MULTILINGUAL[1:5]
    with LiveServer(engines, ServerSettings()) as server:  # the engines warmed up at load
        with concurrent.futures.ThreadPoolExecutor(6) as pool:  # requests that share padded batches
            answers = list(
                pool.map(lambda t: httpx.post(server.url + "/embed", json={"inputs": t}).json(), texts)
            )
        m3 = httpx.post(server.url + "/v1/embed_m3", json=body, timeout=30).json()["data"]
        ranked = httpx.post(
            server.url + "/v2/rerank", json={"query": MULTILINGUAL[0], "documents": docs}
        ).json()
        info = httpx.get(server.url + "/info").json()
    direct = bge_m3.embed(texts, sparse=True, colbert=True)
    for answer, record in zip(answers, direct, strict=True):
        assert np.abs(np.array(answer[0]) - record.dense).max() < 1e-4  # type: ignore[operator]
    for item, record in zip(m3, direct, strict=False):
        assert record.sparse is not None and record.colbert is not None
        assert item["sparse"]["indices"] == record.sparse.indices.tolist()
        colbert = np.frombuffer(base64.b64decode(item["colbert"]), dtype="<f2").reshape(record.colbert.shape)
        assert np.abs(colbert - record.colbert).max() < 2e-3  # float16 transport
    expected = reranker.rerank(MULTILINGUAL[0], docs)
    assert [r["index"] for r in ranked["results"]] == [r.index for r in expected]
    assert "onnx" in str(info)
