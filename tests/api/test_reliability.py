"""The server's promises under overload, deadlines and failures (reference/reliability.md §6)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from m3engine.engine import Engine
from m3engine.server.state import ServerState
from tests.api.conftest import MakeClient, backend_of

pytestmark = pytest.mark.anyio
SECRET = "do-not-echo-this-secret-text"


def state_of(client: httpx.AsyncClient) -> ServerState:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app.state.server  # type: ignore[attr-defined,no-any-return]


async def test_overload_gives_fast_429_and_recovers(make_client: MakeClient, m3_fake: Engine) -> None:
    backend_of(m3_fake).delay_s = 0.2
    client = await make_client([m3_fake], max_concurrent_requests=2).start()
    rs = await asyncio.gather(*(client.post("/embed", json={"inputs": f"text {i}"}) for i in range(8)))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 2 and codes.count(429) >= 4 and set(codes) <= {200, 429}
    refused = next(r for r in rs if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error_type"] == "overloaded"
    # the same delay, spread: refused clients that honour it do not all come back together
    delays = {int(r.headers["retry-after-ms"]) for r in rs if r.status_code == 429}
    assert all(500 <= d <= 1500 for d in delays) and len(delays) > 1
    assert state_of(client).admission.requests == 0 and state_of(client).admission.tokens == 0
    assert (await client.post("/embed", json={"inputs": "after"})).status_code == 200  # recovers at once


async def test_token_budget_refuses_before_tokenizing(make_client: MakeClient, m3_fake: Engine) -> None:
    backend_of(m3_fake).delay_s = 0.3
    client = await make_client([m3_fake], max_queued_tokens=60).start()
    first = asyncio.ensure_future(client.post("/embed", json={"inputs": "x" * 50}))
    await asyncio.sleep(0.05)
    second = await client.post("/embed", json={"inputs": "y" * 50})
    assert second.status_code == 429
    assert (await first).status_code == 200


async def test_deadline_exceeded_is_503_and_never_runs(make_client: MakeClient, m3_fake: Engine) -> None:
    backend = backend_of(m3_fake)
    backend.delay_s = 0.4
    client = await make_client([m3_fake]).start()
    busy = asyncio.ensure_future(client.post("/v1/embed_m3", json={"inputs": "keeps the worker busy"}))
    await asyncio.sleep(0.05)
    late = await client.post("/embed", json={"inputs": "late text"}, headers={"X-Request-Timeout": "0.1"})
    assert late.status_code == 503 and late.json()["error_type"] == "deadline_exceeded"
    assert late.headers["retry-after"] == "1"
    assert (await busy).status_code == 200
    await asyncio.sleep(0.5)
    late_ids = m3_fake.tokenizer.encode(["late text"], 100)[0].ids
    assert late_ids not in backend.seen


async def test_deadline_header_may_only_lower(make_client: MakeClient, m3_fake: Engine) -> None:
    client = await make_client([m3_fake], deadline_s=5).start()
    ok = await client.post("/embed", json={"inputs": "x"}, headers={"X-Request-Timeout": "9999"})
    assert ok.status_code == 200
    bad = await client.post("/embed", json={"inputs": "x"}, headers={"X-Request-Timeout": "soon"})
    assert bad.status_code == 422


async def test_backend_error_fails_only_its_batch(make_client: MakeClient, m3_fake: Engine) -> None:
    backend = backend_of(m3_fake)
    bad_ids, good_ids = (e.ids for e in m3_fake.tokenizer.encode(["poison words", "healthy text"], 100))
    poison = set(bad_ids) - set(good_ids)
    backend.fail_if = lambda batch: bool(poison & set(batch.input_ids.tolist()))
    backend.delay_s = 0.1
    client = await make_client([m3_fake]).start()
    bad, good = await asyncio.gather(
        client.post("/embed", json={"inputs": "poison words"}),
        client.post("/v1/embed_m3", json={"inputs": "healthy text"}),  # other heads: another batch
    )
    assert bad.status_code == 503 and bad.json()["error_type"] == "backend"
    assert good.status_code == 200
    assert (await client.get("/ready")).status_code == 200
    assert (await client.post("/embed", json={"inputs": "healthy text"})).status_code == 200


async def test_oom_splits_the_batch_once(make_client: MakeClient, m3_fake: Engine) -> None:
    backend = backend_of(m3_fake)
    texts = ["alpha beta", "gamma delta", "hello world", "more words"]
    lengths = [len(e) for e in m3_fake.tokenizer.encode(texts, 100)]
    backend.oom_over_tokens = max(lengths) * 2  # four fail together; two at a time fit
    client = await make_client([m3_fake]).start()
    r = await client.post("/embed", json={"inputs": texts})
    assert r.status_code == 200, r.text
    assert backend.batches == [2, 2]
    metrics = (await client.get("/metrics")).text
    assert "m3engine_oom_splits_total 1.0" in metrics
    backend.oom_over_tokens = 1  # even one sequence fails: the halves fail, the request gets 503
    r = await client.post("/embed", json={"inputs": texts})
    assert r.status_code == 503 and r.json()["error_type"] == "oom"
    assert "m3engine_oom_splits_total 2.0" in (await client.get("/metrics")).text


async def test_worker_death_flips_ready(make_client: MakeClient, m3_fake: Engine) -> None:
    client = await make_client([m3_fake]).start()
    assert (await client.get("/ready")).status_code == 200
    backend_of(m3_fake).die = True
    r = await client.post("/embed", json={"inputs": "kills the worker"})
    assert r.status_code == 503 and r.json()["error_type"] == "not_ready"
    ready = await client.get("/ready")
    assert ready.status_code == 503 and "worker stopped" in ready.json()["reason"]
    assert (await client.get("/health")).status_code == 503
    assert (await client.get("/live")).status_code == 200
    again = await client.post("/embed", json={"inputs": "after death"})
    assert again.status_code == 503


async def test_draining_refuses_new_work(client: httpx.AsyncClient) -> None:
    state_of(client).draining = True
    assert (await client.get("/ready")).status_code == 503
    r = await client.post("/embed", json={"inputs": "x"})
    assert r.status_code == 503 and r.json()["error_type"] == "not_ready"


async def test_limits_413_and_422(make_client: MakeClient, m3_fake: Engine) -> None:
    client = await make_client([m3_fake], max_request_bytes=2000, max_inputs_per_request=3).start()
    r = await client.post("/embed", json={"inputs": ["x" * 3000]})
    assert r.status_code == 413 and r.json()["error_type"] == "request_too_large"

    async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 500

    r = await client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = await client.post("/v1/embeddings", json={"input": ["a", "b", "c", "d"]})
    assert r.status_code == 422 and r.json()["error"]["type"] == "too_many_inputs"
    r = await client.post("/embed", json={"inputs": [SECRET * 20], "truncate": False})
    assert r.status_code == 422 and r.json()["error_type"] == "input_too_long"
    assert SECRET not in r.text and "truncat" in r.json()["error"]
    r = await client.post("/embed", json={"inputs": ["ok", "  "]})
    assert r.status_code == 422 and "input 1" in r.json()["error"]
    r = await client.post("/v1/embeddings", json={"input": [SECRET, 3]})
    assert r.status_code == 422 and SECRET not in r.text


async def test_auth(make_client: MakeClient, m3_fake: Engine) -> None:
    client = await make_client([m3_fake], api_keys=("key-one", "key-two")).start()
    missing = await client.post("/embed", json={"inputs": "x"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = await client.post("/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer key-three"})
    assert wrong.status_code == 401
    for key in ("key-one", "key-two"):
        ok = await client.post("/embed", json={"inputs": "x"}, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    assert (await client.get("/live")).status_code == 200 and (await client.get("/ready")).status_code == 200
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/docs")).status_code == 401
    info = await client.get("/info", headers={"Authorization": "Bearer key-one"})
    assert "key-one" not in info.text and info.json()["server"]["api_keys"] == "***"


async def test_public_metrics_and_labels(make_client: MakeClient, m3_fake: Engine) -> None:
    client = await make_client([m3_fake], api_keys=("k",), public_metrics=True).start()
    await client.post("/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer k"})
    await client.post("/embed", json={"inputs": "x"})
    text = (await client.get("/metrics")).text
    assert 'm3engine_requests_total{outcome="ok",route="/embed"} 1.0' in text
    assert 'm3engine_requests_total{outcome="unauthorized",route="/embed"} 1.0' in text
    assert "m3engine_stage_seconds_bucket" in text and "m3engine_batch_tokens_bucket" in text


async def test_cors_off_by_default_and_listed_origins(make_client: MakeClient, m3_fake: Engine) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    off = await make_client([m3_fake]).start()
    r = await off.options("/embed", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    on = await make_client([m3_fake], cors_origins=("https://app.example",)).start()
    r = await on.options("/embed", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = await on.options("/embed", headers={**preflight, "Origin": "https://evil.example"})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_query_does_not_wait_behind_a_bulk_upload(make_client: MakeClient, m3_fake: Engine) -> None:
    backend_of(m3_fake).delay_s = 0.1  # per forward pass
    client = await make_client([m3_fake], short_query_tokens=16).start()
    long_texts = [" ".join(f"w{i} word{j}" for j in range(30)) for i in range(64)]  # 8 batches at 512 tokens
    bulk = asyncio.ensure_future(client.post("/embed", json={"inputs": long_texts}))
    await asyncio.sleep(0.05)
    start = asyncio.get_running_loop().time()
    query = await client.post("/embed", json={"inputs": "a short query"})
    query_s = asyncio.get_running_loop().time() - start
    assert query.status_code == 200 and (await bulk).status_code == 200
    bulk_batches = len(backend_of(m3_fake).batches) - 1
    assert bulk_batches >= 6  # the bulk needed many passes ...
    assert query_s < 0.35  # ... and the query waited for at most one of them, plus its own
