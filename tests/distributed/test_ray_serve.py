"""Ray Serve replicas of the server on a local cluster: the real openai and cohere clients over HTTP,
the same auth and errors as `m3engine serve`, and a replica killed under load."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.fakes import ROOT

KEY = "serve-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(ray_cluster: Any, bge_m3_dir: Path, reranker_dir: Path) -> Iterator[str]:
    from ray import serve

    from m3engine.distributed.serve import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app(
        {
            "model": str(bge_m3_dir),
            "reranker": str(reranker_dir),
            "device": "cpu",
            "api_keys": KEY,
            "max_batch_tokens": 1024,
            "num_replicas": 2,
            "cpus_per_replica": 0.5,  # two replicas on the 2-CPU test cluster
        }
    )
    serve.run(app, name="m3engine", route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def test_openai_and_cohere_clients(served: str, bge_m3_dir: Path, reranker_dir: Path) -> None:
    import cohere
    import openai

    client = openai.OpenAI(base_url=served + "/v1", api_key=KEY, max_retries=0)
    out = client.embeddings.create(model=bge_m3_dir.name, input=["hello world", "a second text"])
    assert len(out.data) == 2 and len(out.data[0].embedding) > 0
    docs = ["first document", "second one here", "third"]
    ranked = cohere.ClientV2(api_key=KEY, base_url=served, max_retries=0).rerank(
        model=reranker_dir.name, query="a query", documents=docs, top_n=2
    )
    assert len(ranked.results) == 2 and all(0 <= r.relevance_score <= 1 for r in ranked.results)


def test_same_auth_limits_and_errors_as_the_server(served: str) -> None:
    assert httpx.get(served + "/ready").status_code == 200  # public, as in m3engine serve
    refused = httpx.post(served + "/v1/embeddings", json={"input": "x"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    auth = {"Authorization": f"Bearer {KEY}"}
    empty = httpx.post(served + "/v1/embeddings", json={"input": ""}, headers=auth)
    assert empty.status_code == 422 and "error" in empty.json()
    devices = httpx.get(served + "/info", headers=auth).json()["models"][0]["devices"]
    assert devices[0]["device"] == "cpu" and devices[0]["healthy"]


def _replica_pids() -> list[int]:
    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            line = " ".join(child.cmdline())
            if "ServeReplica:m3engine:M3Engine" in line and "Ingress" not in line:
                pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


def test_a_replica_killed_under_load(served: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    pids = _replica_pids()
    assert len(pids) == 2, "two replicas"
    failures: list[str] = []
    killed_at = time.monotonic() + 1.0
    stop_at = killed_at + 3.0

    def client(i: int) -> list[tuple[float, int]]:
        """Requests back to back until `stop_at`: (when each finished, its status)."""
        done = []
        while time.monotonic() < stop_at:
            body = {"input": [f"text {i} " * 20] * 8}
            try:
                reply = httpx.post(served + "/v1/embeddings", json=body, headers=auth, timeout=30)
                status = reply.status_code
                if status != 200:
                    failures.append(reply.text)
            except httpx.HTTPError:
                status = -1  # the connection itself failed
            done.append((time.monotonic(), status))
        return done

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client, i) for i in range(6)]
        time.sleep(max(0.0, killed_at - time.monotonic()))
        os.kill(pids[0], signal.SIGKILL)
        results = [r for f in futures for r in f.result()]
    codes = [status for _, status in results]
    after = [status for when, status in results if when > killed_at + 0.5]
    print("status codes under the kill:", {c: codes.count(c) for c in set(codes)}, "after it:", len(after))
    # The requests the killed replica held were sent again, to the other one: none failed.
    assert set(codes) == {200}, (codes, failures[:3])
    assert after  # and the service kept answering after the kill
    again = [httpx.post(served + "/v1/embeddings", json={"input": "x"}, headers=auth) for _ in range(10)]
    assert all(r.status_code == 200 for r in again)


def test_documented_config_builds(ray_cluster: Any) -> None:
    from m3engine.distributed.serve import DEPLOYMENT, INGRESS, settings_from_args

    config = yaml.safe_load((ROOT / "deploy" / "ray-serve.yaml").read_text())
    app = config["applications"][0]
    assert app["import_path"] == "m3engine.distributed.serve:build_app"
    engine, server = settings_from_args(app["args"])
    assert engine.model == "BAAI/bge-m3" and server.reranker == "BAAI/bge-reranker-v2-m3"
    assert engine.max_batch_tokens == 16384 and server.api_keys == ("change-me",)
    assert [d["name"] for d in app["deployments"]] == [DEPLOYMENT, INGRESS]
    deployment = app["deployments"][0]
    assert deployment["name"] == DEPLOYMENT and deployment["ray_actor_options"]["num_gpus"] == 1
    autoscaling = set(deployment["autoscaling_config"])
    assert {"min_replicas", "max_replicas", "target_ongoing_requests"} <= autoscaling
    with pytest.raises(ValueError, match="unknown m3engine argument"):
        settings_from_args({"modle": "x"})


class _DeadReplicas:
    """A handle whose every replica dies under the request."""

    def __init__(self) -> None:
        self.calls = 0
        self.http = self

    async def remote(self, wire: Any) -> Any:
        from ray.exceptions import RayActorError

        self.calls += 1
        raise RayActorError()


def test_the_ingress_retries_then_answers_503() -> None:
    import asyncio

    from starlette.requests import Request

    from m3engine.distributed.serve import M3EngineIngress

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"input": "x"}', "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "query_string": b"", "headers": []}
    replicas = _DeadReplicas()
    reply = asyncio.run(M3EngineIngress(replicas, 1024)(Request(scope, receive)))
    assert replicas.calls == 3 and reply.status_code == 503
    assert b"replica_unavailable" in reply.body and reply.headers["retry-after"] == "1"


def test_the_route_prefix_is_not_the_apps() -> None:
    from m3engine.distributed.serve import _app_path

    assert _app_path({"path": "/m3/v1/embeddings", "root_path": "/m3"}) == "/v1/embeddings"
    assert _app_path({"path": "/v1/embeddings", "root_path": ""}) == "/v1/embeddings"
    assert _app_path({"path": "/m3", "root_path": "/m3"}) == "/"
