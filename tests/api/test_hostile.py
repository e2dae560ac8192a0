"""Issue 21: requests a hostile or careless client sends, against a real server on loopback.

Each test is one case of the issue; each failed before the fix. The rule behind them: every
request's cost is bounded before work starts, nothing heavy runs on the event loop, no input gets a
500, and slow clients cannot hold the server.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.conftest import fake_engine
from tests.api.live import LiveServer

KEY = "hostile-test-key"


@pytest.fixture(scope="module")
def server(bge_m3_dir: Path, reranker_dir: Path, classifier_dir: Path) -> Iterator[LiveServer]:
    """One server for the tests that need no settings of their own (each starts in about a second)."""
    engines = [fake_engine(d, max_batch_tokens=512, max_batch_size=16) for d in (bge_m3_dir, reranker_dir)]
    engines.append(fake_engine(classifier_dir, max_batch_tokens=512, max_batch_size=16))
    with LiveServer(engines, ServerSettings()) as live:
        yield live


def live_stall_during(url: str, work: Callable[[], Any]) -> tuple[Any, float]:
    """Runs `work` in a thread while probing /live; (its result, the slowest /live in seconds)."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", work()), daemon=True)
    thread.start()
    slowest = 0.0
    with httpx.Client(timeout=120) as probe:
        while thread.is_alive():
            start = time.monotonic()
            probe.get(url + "/live")
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.01)
    thread.join()
    return out.get("result"), slowest


@pytest.mark.parametrize(
    ("documents", "chunks"), [(["d", "e", "f"], 87178291199), ([f"doc {i}" for i in range(100)], 10**6)]
)
def test_1_chunk_count_costs_only_the_windows_a_document_has(
    server: LiveServer, documents: list[str], chunks: int
) -> None:
    body = {"query": "q", "documents": documents, "max_chunks_per_doc": chunks}
    response, stall = live_stall_during(
        server.url, lambda: httpx.post(server.url + "/v1/rerank", json=body, timeout=60)
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == len(documents)
    assert stall < 1.0, f"/live stalled {stall:.2f} s"


TEXT_ROUTES = [
    ("/v1/embeddings", lambda s: {"input": s}),
    ("/embed", lambda s: {"inputs": s}),
    ("/embed_sparse", lambda s: {"inputs": [s]}),
    ("/v1/embed_m3", lambda s: {"inputs": s}),
    ("/v1/rerank", lambda s: {"query": "q", "documents": [s]}),
    ("/v1/rerank", lambda s: {"query": s, "documents": ["d"]}),
    ("/v1/score", lambda s: {"pairs": [["q", s]]}),
    ("/classify", lambda s: {"input": s}),
    ("/predict", lambda s: {"inputs": s}),
    ("/tokenize", lambda s: {"inputs": s}),
]


@pytest.mark.parametrize("bad", ["a\ud800b", "x\udfff", "nul\x00here", "\u200b\u200b"])
def test_2_bad_text_is_a_422_naming_the_input_on_every_text_route(server: LiveServer, bad: str) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:  # one pooled connection throughout
        for path, body in TEXT_ROUTES:
            raw = json.dumps(body(bad))  # ensure_ascii: lone surrogates travel as \ud800 escapes
            r = client.post(path, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert r.headers.get("x-request-id"), path
            assert bad not in r.text and "here" not in r.text
            assert client.post("/embed", json={"inputs": "fine"}).status_code == 200  # same connection


def test_2_an_unexpected_error_is_a_500_with_its_request_id_that_closes_cleanly(
    m3_fake: Engine, classifier_fake: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3engine.tasks.builder import TaskBuilder

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(TaskBuilder, "classify", broken)
    with (
        LiveServer([m3_fake, classifier_fake], ServerSettings()) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        r = client.post("/classify", json={"input": "x"}, headers={"x-request-id": "abc123"})
        assert r.status_code == 500 and r.headers["x-request-id"] == "abc123"
        assert r.headers.get("connection") == "close" and "a bug" not in r.text
        assert client.post("/embed", json={"inputs": "next"}).status_code == 200


def test_3_the_answer_size_is_admitted(m3_fake: Engine) -> None:
    settings = ServerSettings(max_answer_bytes=2_000_000)
    with LiveServer([m3_fake], settings) as live:
        small = {"inputs": ["a short text"], "return_colbert": True}
        assert httpx.post(live.url + "/v1/embed_m3", json=small).status_code == 200
        # 200 texts x ~128 tokens x 32 ColBERT values: over 2 MB however it is encoded
        big = {"inputs": ["word " * 200] * 200, "return_colbert": True}
        r = httpx.post(live.url + "/v1/embed_m3", json=big, timeout=30)
        assert r.status_code == 413 and r.json()["error"]["type"] == "answer_too_large", r.text
        assert "max-answer-bytes" in r.text and "word" not in r.text
        assert "m3engine_admitted_answer_bytes 0.0" in httpx.get(live.url + "/metrics").text


def cancelled_embeds(server: LiveServer) -> float:
    metrics = httpx.get(server.url + "/metrics").text
    line = 'm3engine_requests_total{outcome="cancelled",route="/embed"} '
    return float(next((x[len(line) :] for x in metrics.splitlines() if x.startswith(line)), 0.0))


def test_4_a_client_that_hangs_up_mid_upload_is_a_499_not_a_500(server: LiveServer) -> None:
    before = cancelled_embeds(server)
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n")
            s.sendall(b'content-length: 1000\r\n\r\n{"inputs": "hal')
            time.sleep(0.1)
    time.sleep(0.3)
    metrics = httpx.get(server.url + "/metrics").text
    assert 'outcome="internal"' not in metrics
    assert cancelled_embeds(server) == before + 3


def test_5_tokenize_truncates_to_the_model_limit_and_answers_off_the_loop(
    server: LiveServer, m3_fake: Engine
) -> None:
    texts = ["word " * 5000] * 100
    r, stall = live_stall_during(
        server.url, lambda: httpx.post(server.url + "/tokenize", json={"inputs": texts}, timeout=60)
    )
    assert r.status_code == 200
    assert all(len(tokens) <= m3_fake.max_length for tokens in r.json())
    assert r.json()[0][-1]["special"]  # cut as content: the closing special token is kept
    assert stall < 1.0


def raw_socket(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(5)
    return s


def read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_6_slow_clients_are_cut_off(m3_fake: Engine, http: str) -> None:
    settings = ServerSettings(header_timeout_s=0.5, body_timeout_s=0.5, max_connections=8)
    with LiveServer([m3_fake], settings, http=http) as live:
        trickle = raw_socket(live.url)
        trickle.sendall(b"GET /live HTTP/1.1\r\nhost: x\r\n")  # the headers never end
        start = time.monotonic()
        assert read_all(trickle).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < 3
        body = raw_socket(live.url)
        body.sendall(b"POST /embed HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        answer = read_all(body)  # the body never comes
        assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer.lower()
        idle = [raw_socket(live.url) for _ in range(8)]
        extra = raw_socket(live.url)
        extra.sendall(b"GET /live HTTP/1.1\r\nhost: x\r\n\r\n")
        assert read_all(extra).startswith(b"HTTP/1.1 503")
        for s in [*idle, extra, trickle, body]:
            s.close()
        time.sleep(0.2)
        assert httpx.get(live.url + "/live").status_code == 200
        metrics = httpx.get(live.url + "/metrics").text
        assert 'm3engine_requests_total{outcome="request_timeout",route="/embed"} 1.0' in metrics
        assert 'outcome="internal"' not in metrics and 'outcome="cancelled"' not in metrics


@pytest.mark.parametrize("weights", ["[NaN, 1, 1]", "[1, Infinity, 1]", "[1, 1, -Infinity]"])
def test_7_score_weights_must_be_finite(server: LiveServer, weights: str) -> None:
    raw = '{"pairs": [["q", "p"]], "weights": ' + weights + "}"
    r = httpx.post(server.url + "/v1/score", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_7_huge_weights_do_not_overflow(server: LiveServer) -> None:
    plain = httpx.post(server.url + "/v1/score", json={"pairs": [["q", "p"]]}).json()["data"][0]
    huge = httpx.post(server.url + "/v1/score", json={"pairs": [["q", "p"]], "weights": [1e308] * 3})
    assert huge.status_code == 200
    got = huge.json()["data"][0]
    assert got["colbert+sparse+dense"] == pytest.approx(plain["colbert+sparse+dense"])


def test_8_options_and_head_follow_auth(m3_fake: Engine) -> None:
    with LiveServer([m3_fake], ServerSettings(api_keys=(KEY,))) as live:
        auth = {"authorization": f"Bearer {KEY}"}
        for path in ("/v1/embeddings", "/nothing-here", "/info"):
            assert httpx.options(live.url + path).status_code == 401, path
        assert httpx.head(live.url + "/info").status_code == 401
        assert httpx.head(live.url + "/info", headers=auth).status_code == 200
        assert httpx.head(live.url + "/live").status_code == 200
        assert httpx.head(live.url + "/ready").status_code == 200


def test_10_strict_types_and_plain_messages(server: LiveServer) -> None:
    post: Callable[..., httpx.Response] = lambda path, body: httpx.post(server.url + path, json=body)  # noqa: E731
    assert post("/v1/embeddings", {"input": [True, False]}).status_code == 422
    assert post("/v1/embeddings", {"input": "x", "dimensions": "8"}).status_code == 422
    assert post("/v1/embed_m3", {"inputs": "x", "sparse_top_k": True}).status_code == 422
    short = post("/v1/rerank", {"query": "q", "documents": ["d"], "max_tokens_per_doc": 2})
    assert short.status_code == 422 and "query_max_length" not in short.text
    smallest = post(
        "/v1/rerank", {"query": "a long query " * 20, "documents": ["d"], "max_tokens_per_doc": 8}
    )
    assert smallest.status_code == 200, smallest.text
    missing = post("/embed", {"inputs": "x", "model": "no-such-model"})
    assert missing.status_code == 404 and "/" not in missing.json()["error"]


def test_10_a_large_body_of_wrong_items_does_not_stall_the_loop(server: LiveServer) -> None:
    body = json.dumps({"input": [1.5] * 800_000}).encode()  # ~4 MB: each item wrong for every form
    headers = {"content-type": "application/json"}
    r, stall = live_stall_during(
        server.url,
        lambda: httpx.post(server.url + "/v1/embeddings", content=body, headers=headers, timeout=60),
    )
    assert r.status_code == 422 and len(r.content) < 5000, r.text[:500]
    assert stall < 0.5, f"/live stalled {stall:.2f} s"


def test_10_the_schema_lists_every_status(server: LiveServer) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            documented = set(operation["responses"])
            if path not in ("/live", "/ready"):
                assert {"401", "404", "422"} <= documented, (method, path)
            if method == "post" and path != "/decode":
                assert {"413", "429", "503"} <= documented, (method, path)
