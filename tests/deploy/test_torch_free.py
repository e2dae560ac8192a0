"""An ONNX artifact served by an install without torch: `pip install 'm3engine[onnx]'`, in a fresh
virtualenv, loads and serves what the torch install built, with the reference's numbers.

The project goes into that virtualenv from a copy of its sources, with the onnx extra and its
dependencies from the package index this machine's pip is configured with (the one `make setup`
uses): so the test proves the extras too, since pip must bring neither torch nor transformers.
It is skipped only when that index cannot be reached. The quicker tests beside it prove the same
import path in this install, where torch is present but must stay unloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from m3engine.engine import Engine
from m3engine.tokenization.tokenizer import TextTokenizer
from tests.api.server_process import free_port
from tests.texts import MULTILINGUAL

ROOT = Path(__file__).resolve().parents[2]
TEXTS = MULTILINGUAL[:5]
HEAVY = ("torch", "transformers")
PIP_TIMEOUT = 300  # the install took about 35 s on a loaded 2-core machine; room for a slower index

# Run by the virtualenv's python (and by this one): load, embed, and say what was imported.
PROBE = """
import json, sys
missing = []
for name in sys.argv[3:]:
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
from m3engine import Engine
import m3engine
engine = Engine.load(sys.argv[1], backend="onnx")
records = engine.embed(json.loads(sys.argv[2]), sparse=True, colbert=True)
print(json.dumps({
    "file": m3engine.__file__,
    "missing": missing,
    "loaded": [name for name in ("torch", "transformers") if name in sys.modules],
    "info": engine.info(),
    "records": [
        {"dense": r.dense.tolist(), "indices": r.sparse.indices.tolist(),
         "values": r.sparse.values.tolist(), "colbert": r.colbert.tolist()}
        for r in records
    ],
}))
"""


def _env() -> dict[str, str]:
    """This process's environment, minus what would import the repository's sources instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _project_copy(into: Path) -> Path:
    """The files pip builds the project from, so that the build writes nothing into the repository."""
    shutil.copytree(ROOT / "src", into / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, into / name)
    return into


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with `m3engine[onnx]` from the index; its bin directory."""
    root = tmp_path_factory.mktemp("torch-free")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_env(), timeout=120)
    python = str(venv / "bin" / "python")
    probe = _run([python, "-m", "pip", "index", "versions", "onnxruntime", "--retries", "1"], root, 120)
    if probe.returncode != 0:
        pytest.skip(f"the package index cannot be reached: {(probe.stdout + probe.stderr)[-300:]}")
    project = _project_copy(root / "project")
    done = _run([python, "-m", "pip", "install", "-q", f"{project}[onnx]"], root, PIP_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = _run([python, "-m", "pip", "list", "--format", "json"], root, 60)
    names = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert {"m3engine", "onnxruntime", "tokenizers", "numpy", "fastapi"} <= names
    assert not names & {"torch", "transformers", "safetensors", "pyarrow"}, names
    return venv / "bin"


def _probe(python: str, artifact: Path, cwd: Path) -> dict[str, Any]:
    done = _run([python, "-c", PROBE, str(artifact), json.dumps(TEXTS), *HEAVY], cwd, 300)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _assert_close(records: list[dict[str, Any]], engine: Engine) -> None:
    """The records (as the probe prints them) equal `engine`'s for TEXTS within 1e-4."""
    expected = engine.embed(TEXTS, sparse=True, colbert=True)
    assert len(records) == len(expected)
    for got, want in zip(records, expected, strict=True):
        assert want.dense is not None and want.sparse is not None and want.colbert is not None
        assert np.abs(np.array(got["dense"]) - want.dense).max() < 1e-4
        assert got["indices"] == want.sparse.indices.tolist()
        assert np.abs(np.array(got["values"]) - want.sparse.values).max() < 1e-4
        assert np.array(got["colbert"]).shape == want.colbert.shape
        assert np.abs(np.array(got["colbert"]) - want.colbert).max() < 1e-4


def test_an_install_without_torch_loads_and_serves_an_artifact(
    light_venv: Path, m3_artifact: Path, bge_m3: Engine, tmp_path: Path
) -> None:
    result = _probe(str(light_venv / "python"), m3_artifact, tmp_path)
    assert result["missing"] == list(HEAVY)  # neither can be imported there at all
    assert str(light_venv.parent) in result["file"]  # the installed package, not the repository's
    assert result["info"]["backend"] == "onnx" and result["info"]["device"] == "cpu"
    assert result["info"]["colbert_dim"] == bge_m3.info()["colbert_dim"]
    _assert_close(result["records"], bge_m3)  # the torch reference backend, in this install
    onnx_here = Engine.load(str(m3_artifact), backend="onnx", device="cpu")
    _assert_close(result["records"], onnx_here)  # and this install's onnx backend

    # the torch backends (auto's choice) say what to install, instead of a traceback
    auto = _run([str(light_venv / "m3engine"), "info", "--model", str(m3_artifact)], tmp_path, 120)
    assert auto.returncode == 2 and "pip install 'm3engine[torch]'" in auto.stderr, auto.stderr

    port = free_port()
    cmd = [str(light_venv / "m3engine"), "serve", "--backend", "onnx", "--model", str(m3_artifact)]
    cmd += ["--port", str(port), "--log-level", "warning"]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the server was not ready in 120 s"
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"inputs": TEXTS[:3], "return_sparse": True}
        answer = httpx.post(url + "/v1/embed_m3", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        expected = bge_m3.embed(TEXTS[:3], sparse=True)
        for item, want in zip(answer.json()["data"], expected, strict=True):
            assert want.dense is not None and want.sparse is not None
            assert np.abs(np.array(item["dense"]) - want.dense).max() < 1e-4
            assert item["sparse"]["indices"] == want.sparse.indices.tolist()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert code == 0, log.read_text()[-3000:]  # drained and stopped cleanly


def test_this_install_loads_an_artifact_without_importing_torch_or_transformers(
    m3_artifact: Path, bge_m3: Engine, tmp_path: Path
) -> None:
    """Both are installed here: the onnx path must still leave them unloaded (a fresh process)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(m3_artifact), json.dumps(TEXTS)],
        cwd=tmp_path,
        env={**_env(), "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["loaded"] == []
    _assert_close(result["records"], bge_m3)


def test_the_artifact_tokenizes_as_its_source_without_transformers(
    m3_artifact: Path, bge_m3_dir: Path, classifier_artifact: Path, classifier_dir: Path
) -> None:
    """The frozen tokenizer of `m3engine build` (tokenization/source.py) gives the ids, special ids
    and pair templates that transformers' tokenizer of the source gives."""
    for artifact, source in ((m3_artifact, bge_m3_dir), (classifier_artifact, classifier_dir)):
        frozen, original = TextTokenizer.load(artifact), TextTokenizer.load(source)
        assert (frozen.pad_id, frozen.special_ids) == (original.pad_id, original.special_ids)
        assert frozen.vocab_size == original.vocab_size
        for limit in (8, 512):
            assert frozen.encode(MULTILINGUAL, limit) == original.encode(MULTILINGUAL, limit)
        pairs = (MULTILINGUAL[:4], MULTILINGUAL[4:8], 64, 16)
        assert frozen.encode_pairs(*pairs) == original.encode_pairs(*pairs)
