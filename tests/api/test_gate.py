"""The cheap refusal (server/gate.py) on a real uvicorn server on loopback, with real clients.

One request holds the whole budget (`max_concurrent_requests=1`, a forward pass held open); every
other request to an admitted route must then get 429 without its body being read or its route
running, after auth, while health and info routes keep answering.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from m3engine.engine import Engine
from m3engine.server.gate import OverloadGate
from m3engine.server.state import ServerState
from m3engine.settings import ServerSettings
from tests.api.conftest import backend_of
from tests.api.live import LiveServer

ADMITTED_ROUTES = {
    "/v1/embeddings",
    "/embed",
    "/embed_sparse",
    "/embed_all",
    "/rerank",
    "/predict",
    "/tokenize",
    "/v1/rerank",
    "/v2/rerank",
    "/v1/embed_m3",
    "/v1/score",
    "/classify",
}


def live(engines: list[Engine], http: str = "auto", **settings: Any) -> LiveServer:
    base = ServerSettings(max_concurrent_requests=1)
    return LiveServer(engines, dataclasses.replace(base, **settings), http=http)


def state_of(server: LiveServer) -> ServerState:
    state: ServerState = server.app.state.server
    return state


@contextmanager
def held(server: LiveServer, headers: dict[str, str] | None = None) -> Iterator[None]:
    """One admitted request in flight until the block ends: the only request slot is taken."""
    release = threading.Event()
    for model in state_of(server).models:  # the fake's per-batch hook holds the forward pass open
        assert isinstance(model.engine, Engine)
        backend_of(model.engine).fail_if = lambda _batch: not release.wait(30)
    statuses: list[int] = []
    body = {"inputs": "holds the only slot"}
    holder = threading.Thread(
        target=lambda: statuses.append(
            httpx.post(server.url + "/embed", json=body, headers=headers, timeout=30).status_code
        )
    )
    holder.start()
    deadline = time.monotonic() + 10
    while state_of(server).admission.requests < 1:
        assert time.monotonic() < deadline, "the holding request was not admitted"
        time.sleep(0.01)
    try:
        yield
    finally:
        release.set()
        holder.join(timeout=30)
    assert statuses == [200]


def raw_exchange(url: str, request: bytes, timeout: float = 5) -> bytes:
    """The response head to `request` sent as is on a new connection (no body unless it holds one)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.lower()


def test_the_gate_covers_exactly_the_admitted_routes(m3_fake: Engine) -> None:
    server = live([m3_fake])
    gates = [m for m in server.app.user_middleware if m.cls is OverloadGate]
    assert len(gates) == 1 and set(gates[0].kwargs["routes"]) == ADMITTED_ROUTES


def test_a_full_server_refuses_without_reading_the_body_or_running_the_route(m3_fake: Engine) -> None:
    with live([m3_fake]) as server:
        with held(server):
            backend = backend_of(m3_fake)
            seen = len(backend.seen)
            # Headers that announce a body which never comes: only a server that does not read it answers.
            head = raw_exchange(
                server.url,
                b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 40\r\n\r\n",
            )
            assert head.startswith(b"http/1.1 429") and b"retry-after: " in head
            assert b"connection: close" not in head  # a small body: the connection stays
            # A body that is not even JSON: 429, not 422 (admission is decided before the body is looked at).
            for path in sorted(ADMITTED_ROUTES):
                r = httpx.post(
                    server.url + path, content=b"{not json", headers={"Content-Type": "application/json"}
                )
                assert r.status_code == 429, path
                assert int(r.headers["retry-after"]) >= 1
                seconds = int(r.headers["retry-after"])
                assert 500 * seconds <= int(r.headers["retry-after-ms"]) <= 1500 * seconds
                if path.startswith(("/v1/", "/v2/")):
                    assert r.json()["error"]["type"] == "overloaded" and r.json()["message"]
                else:
                    assert r.json()["error_type"] == "overloaded"
            # Past the body limit, or of unknown length: refused too, and the connection closes.
            # A client waiting for 100 Continue may never send the body: close too.
            for framing in (
                b"Content-Length: 999999999\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"Content-Length: 40\r\nExpect: 100-continue\r\n",
            ):
                head = raw_exchange(server.url, b"POST /embed HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n")
                assert head.startswith(b"http/1.1 429") and b"connection: close" in head
            assert len(backend.seen) == seen  # nothing reached the model
            metrics = httpx.get(server.url + "/metrics").text
            refused = len(ADMITTED_ROUTES) + 4
            assert 'm3engine_requests_total{outcome="overloaded",route="/embed"} ' in metrics
            total = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith('m3engine_requests_total{outcome="overloaded"')
            )
            assert total == refused
        assert httpx.post(server.url + "/embed", json={"inputs": "room again"}).status_code == 200


def test_401_comes_before_429(m3_fake: Engine) -> None:
    auth = {"Authorization": "Bearer the-key"}
    with live([m3_fake], api_keys=("the-key",)) as server, held(server, auth):
        no_key = httpx.post(server.url + "/embed", json={"inputs": "x"})
        assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(
            server.url + "/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer no"}
        )
        assert wrong.status_code == 401
        assert httpx.post(server.url + "/embed", json={"inputs": "x"}, headers=auth).status_code == 429


def test_health_info_and_unadmitted_routes_answer_while_full(m3_fake: Engine) -> None:
    with live([m3_fake]) as server, held(server):
        for path in ("/live", "/ready", "/health", "/metrics", "/info", "/v1/models", "/openapi.json"):
            assert httpx.get(server.url + path).status_code == 200, path
        decoded = httpx.post(server.url + "/decode", json={"ids": [0, 5, 2]})
        assert decoded.status_code == 200
        # Not ready (draining here) takes precedence: 503 tells a balancer to go elsewhere, as before.
        state_of(server).draining = True
        try:
            r = httpx.post(server.url + "/embed", json={"inputs": "x"})
            assert r.status_code == 503 and r.json()["error_type"] == "not_ready"
        finally:
            state_of(server).draining = False


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_keep_alive_connection_serves_after_an_unread_body(m3_fake: Engine, http: str) -> None:
    if http == "httptools":
        pytest.importorskip("httptools")
    big = {"inputs": "word " * 40_000}  # 200 kB: over uvicorn's 64 kB read buffer
    with (
        live([m3_fake], http=http) as server,
        httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=1)) as client,
    ):
        with held(server):
            refused = client.post("/embed", json=big)
            assert refused.status_code == 429 and "connection" not in refused.headers
        ok = client.post("/embed", json={"inputs": "on the same connection"})
        assert ok.status_code == 200 and len(ok.json()) == 1
        first = refused.extensions["network_stream"].get_extra_info("client_addr")
        assert ok.extensions["network_stream"].get_extra_info("client_addr") == first
