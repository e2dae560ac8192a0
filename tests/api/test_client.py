"""m3engine.client, sync and async, against a real server on loopback (the fake backend behind it):
the records match what the in-process Engine gives for the same texts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from m3engine.client import AsyncClient, Client, ServerError
from m3engine.engine import Engine
from m3engine.settings import ServerSettings
from tests.api.live import LiveServer
from tests.fakes import process_env

TEXTS = ["BGE-M3 gives three outputs.", "a second text", "and a third, a little longer than the others"]
PAIRS = [("what is it", "it is a thing"), ("what is it", "another passage")]


@pytest.fixture(scope="module")
def live(bge_m3_dir, reranker_dir) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    from tests.api.conftest import fake_engine

    engines = [fake_engine(bge_m3_dir), fake_engine(reranker_dir)]
    settings = ServerSettings(served_model_name=("bge-m3", f"{reranker_dir.name}=reranker"))
    with LiveServer(engines, settings) as server:
        server.engines = engines  # type: ignore[attr-defined]
        yield server


def _m3(live: LiveServer) -> Engine:
    engine: Engine = live.engines[0]  # type: ignore[attr-defined]
    return engine


def test_sync_client_embeds_all_three_outputs_as_the_engine_does(live: LiveServer) -> None:
    direct = _m3(live).embed(TEXTS, sparse=True, colbert=True)
    with Client(live.url, model="bge-m3", batch_size=2) as client:  # two requests, offsets kept
        got = client.embed(TEXTS, colbert=True)
        assert client.models() == ["bge-m3", "reranker"]
    assert [e.index for e in got] == [0, 1, 2]
    for g, d in zip(got, direct, strict=True):
        assert g.dense is not None and d.dense is not None and g.sparse is not None and d.sparse is not None
        np.testing.assert_allclose(g.dense, d.dense, atol=1e-6)  # float32 over base64: exact
        assert g.sparse.indices.tolist() == d.sparse.indices.tolist()
        np.testing.assert_allclose(g.sparse.values, d.sparse.values, rtol=1e-6)
        assert g.colbert is not None and d.colbert is not None
        np.testing.assert_allclose(g.colbert, d.colbert, atol=1e-3)  # float16 rows
        assert g.num_tokens == d.num_tokens and g.truncated == d.truncated


def test_sync_client_scores_and_reranks(live: LiveServer, reranker_dir) -> None:  # type: ignore[no-untyped-def]
    with Client(live.url, model="bge-m3", reranker="reranker") as client:
        scores = client.score(PAIRS, (0.4, 0.2, 0.4))
        ranked = client.rerank("what is it", ["a thing", "another", "third"], top_n=2, return_documents=True)
        with pytest.raises(ServerError) as caught:
            client.embed("x", model="no-such-model")
    direct = _m3(live).score([list(p) for p in PAIRS], [0.4, 0.2, 0.4])
    for s, d in zip(scores, direct, strict=True):
        assert s.colbert_sparse_dense == pytest.approx(d.colbert_sparse_dense, rel=1e-5)
    assert len(ranked) == 2 and ranked[0].score >= ranked[1].score and ranked[0].document is not None
    assert caught.value.status == 404 and caught.value.label == "model_not_served"
    assert "bge-m3" in caught.value.message


@pytest.mark.anyio
async def test_async_client_gives_the_same_records(live: LiveServer) -> None:
    async with AsyncClient(live.url, batch_size=1, reranker="reranker") as client:
        got = await client.embed(TEXTS, dense=True, sparse=True)
        ranked = await client.rerank("q", ["d1", "d2"])
        scores = await client.score(PAIRS)
    direct = _m3(live).embed(TEXTS, sparse=True)
    assert [e.index for e in got] == [0, 1, 2]
    for g, d in zip(got, direct, strict=True):
        np.testing.assert_allclose(g.dense, d.dense, atol=1e-6)  # type: ignore[arg-type]
    assert {r.index for r in ranked} == {0, 1} and len(scores) == 2


def test_429_is_retried_after_the_delay_the_server_asks_for() -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(
                429, headers={"retry-after-ms": "1"}, json={"error": {"type": "overloaded"}}
            )
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://test")
    client = Client(http=http, retries=2)
    assert client._post("/v1/embed_m3", {}) == {"object": "list", "data": [{"id": "m"}]}
    calls.clear()
    with pytest.raises(ServerError, match="429 overloaded"):
        Client(http=http, retries=1)._post("/v1/embed_m3", {})


def test_the_client_never_imports_torch_the_engine_or_the_server() -> None:
    code = (
        "import sys, m3engine.client, m3engine.client.protocol;"
        "bad = [m for m in ('torch', 'm3engine.engine', 'm3engine.server', 'fastapi') if m in sys.modules];"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], env=process_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_both_clients_show_the_shared_calls_signatures() -> None:
    """embed/score/rerank are written once (m3engine.client.calls); each client's look as before."""
    import inspect

    from m3engine.client import ClientSettings

    for cls in (Client, AsyncClient):
        embed = inspect.signature(cls.embed)
        assert (
            list(embed.parameters)[:2] == ["self", "texts"] and embed.return_annotation == "list[Embedding]"
        )
        assert embed.parameters["dense"].kind is inspect.Parameter.KEYWORD_ONLY
        assert list(inspect.signature(cls.score).parameters) == ["self", "pairs", "weights", "model"]
        assert issubclass(cls, ClientSettings) and cls.rerank.__doc__
    assert inspect.iscoroutinefunction(AsyncClient.rerank) and not inspect.iscoroutinefunction(Client.rerank)
    with pytest.raises(TypeError):
        Client("http://a", "positional-model")  # type: ignore[misc]
