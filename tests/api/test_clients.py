"""Real client SDKs against a real server on loopback: openai, cohere (v1 and v2), huggingface_hub."""

from __future__ import annotations

import base64
import dataclasses
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.conftest import backend_of
from tests.api.live import LiveServer

KEY = "test-key-123"


@pytest.fixture
def live(m3_fake: Engine, reranker_fake: Engine) -> Iterator[LiveServer]:
    settings = dataclasses.replace(ServerSettings(), api_keys=(KEY,))
    with LiveServer([m3_fake, reranker_fake], settings) as server:
        yield server


def test_openai_sdk(live: LiveServer, m3_fake: Engine) -> None:
    import openai

    client = openai.OpenAI(base_url=live.url + "/v1", api_key=KEY, max_retries=0)
    texts = ["hello world", "a second text"]
    out = client.embeddings.create(model="bge-m30", input=texts)
    assert [d.index for d in out.data] == [0, 1] and out.usage.total_tokens > 0
    direct = m3_fake.embed(texts)
    assert np.allclose(out.data[1].embedding, direct[1].dense, atol=1e-6)
    # Asked for explicitly, base64 comes back as the string (the SDK decodes only its own default).
    b64 = client.embeddings.create(model="bge-m30", input="hello world", encoding_format="base64")
    raw = base64.b64decode(b64.data[0].embedding)  # type: ignore[arg-type]
    assert np.allclose(np.frombuffer(raw, dtype="<f4"), direct[0].dense, atol=1e-6)
    floats = client.embeddings.create(model="bge-m30", input="hello world", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, direct[0].dense, atol=1e-6)
    assert {m.id for m in client.models.list()} == {m3_fake.spec.name, "bge-reranker-v2-m30"}
    bad = openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="bge-m30", input="x")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def test_cohere_sdk_v1_and_v2(live: LiveServer, reranker_fake: Engine) -> None:
    import cohere

    docs = ["first document", "second one here", "third"]
    direct = reranker_fake.rerank("a query", docs)
    v1 = cohere.Client(api_key=KEY, base_url=live.url, max_retries=0)
    r1 = v1.rerank(
        model="bge-reranker-v2-m30", query="a query", documents=docs, top_n=2, return_documents=True
    )
    assert [r.index for r in r1.results] == [d.index for d in direct[:2]]
    assert r1.results[0].relevance_score == pytest.approx(direct[0].score, rel=1e-5)
    assert r1.results[0].document is not None and r1.results[0].document.text == docs[direct[0].index]
    v2 = cohere.ClientV2(api_key=KEY, base_url=live.url, max_retries=0)
    r2 = v2.rerank(model="bge-reranker-v2-m30", query="a query", documents=docs, max_tokens_per_doc=64)
    assert [r.index for r in r2.results] == [d.index for d in direct]
    assert all(0 <= r.relevance_score <= 1 for r in r2.results)


def test_huggingface_inference_client_tei_routes(
    live: LiveServer, m3_fake: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test session is offline for the Hub; this client only talks to our loopback server.
    import huggingface_hub.constants
    from huggingface_hub import InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    embed = InferenceClient(model=live.url + "/embed", token=KEY)
    vectors = embed.feature_extraction("hello world")
    assert np.allclose(vectors[0], m3_fake.embed(["hello world"])[0].dense, atol=1e-6)
    with pytest.raises(Exception, match="401"):
        InferenceClient(model=live.url + "/embed", token="wrong").feature_extraction("hello world")


def test_httpx_rest_of_routes(live: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=live.url, headers=headers) as http:
        m3 = http.post("/v1/embed_m3", json={"inputs": ["x y"], "return_colbert": True}).json()
        assert {"dense", "sparse", "colbert"} <= set(m3["data"][0])
        assert http.post("/rerank", json={"query": "q", "texts": ["a", "b"]}).status_code == 200
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/openapi.json").json()["paths"].keys() >= {"/v1/embeddings", "/v2/rerank", "/embed"}


def test_disconnected_client_is_never_executed(live: LiveServer, m3_fake: Engine) -> None:
    backend = backend_of(m3_fake)
    backend.delay_s = 0.5
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=live.url, headers=headers, timeout=10) as http:
        import threading

        busy = threading.Thread(target=lambda: http.post("/v1/embed_m3", json={"inputs": "busy worker"}))
        busy.start()
        time.sleep(0.1)
        # A raw client that sends its request, then hangs up while it waits in the queue.
        body = b'{"inputs": "gone before its turn"}'
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.1)
        busy.join()
        time.sleep(0.7)  # the worker would have run it by now
        gone = m3_fake.tokenizer.encode(["gone before its turn"], 100)[0].ids
        assert gone not in backend.seen
        metrics = http.get("/metrics").text
        assert 'm3engine_requests_total{outcome="cancelled",route="/embed"} 1.0' in metrics
        assert live.app.state.server.admission.requests == 0
