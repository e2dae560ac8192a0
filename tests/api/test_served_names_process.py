"""`--served-model-name` in a real `m3engine serve` process: every HTTP frontend answers to the
aliases, and a wrong alias stops the server before it loads anything, saying why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.api.frontend_server import FRONTEND, FrontendServer
from tests.fakes import BACKEND, process_env


def test_every_frontend_answers_to_the_aliases(bge_m3_dir: Path) -> None:
    server = FrontendServer(bge_m3_dir, "--backend", BACKEND, env={"M3ENGINE_SERVED_MODEL_NAME": "m3,bge-m3"})
    try:
        server.wait_all_ready()
        assert [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]] == ["m3", "bge-m3"]
        seen = set()
        for _ in range(12):  # new connections spread over the frontends
            r = httpx.post(server.url + "/v1/embeddings", json={"input": "hello", "model": "bge-m3"})
            assert r.status_code == 200 and r.json()["model"] == "m3", r.text
            seen.add(r.headers[FRONTEND])
        assert len(seen) == 2
    finally:
        server.stop()


def test_an_alias_for_a_model_not_served_stops_the_start(bge_m3_dir: Path) -> None:
    cmd = [sys.executable, "-m", "m3engine", "serve", "--model", str(bge_m3_dir), "--backend", BACKEND]
    cmd += ["--served-model-name", "reranker=x", "--port", "0"]
    done = subprocess.run(cmd, env=process_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "no served model is called 'reranker'" in done.stderr and bge_m3_dir.name in done.stderr
