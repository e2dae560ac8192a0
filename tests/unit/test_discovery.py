from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from m3engine import Engine, ModelKind
from m3engine.models.discovery import resolve_model_path
from m3engine.models.kinds import detect_kind


def _hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)
    return repo / "snapshots" / commit


def test_hub_id_resolves_offline_from_the_cache(
    tmp_path: Path, bge_m3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _hub_cache(tmp_path, "BAAI/bge-m3", bge_m3_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve_model_path("BAAI/bge-m3") == snapshot
    engine = Engine.load("BAAI/bge-m3", device="cpu")
    assert engine.info()["model"] == "BAAI/bge-m3" and engine.spec.kind is ModelKind.BGE_M3
    assert engine.embed(["hello"], sparse=True)[0].sparse is not None


def test_kinds_are_detected_from_files(
    bge_m3_dir: Path, reranker_dir: Path, classifier_dir: Path, minilm_dir: Path
) -> None:
    assert detect_kind(bge_m3_dir) is ModelKind.BGE_M3
    assert detect_kind(reranker_dir) is ModelKind.RERANKER
    assert detect_kind(classifier_dir) is ModelKind.CLASSIFIER
    assert detect_kind(minilm_dir) is ModelKind.EMBEDDING


def test_kind_override_serves_bge_m3_as_a_plain_embedder(bge_m3_dir: Path, bge_m3: Engine) -> None:
    plain = Engine.load(str(bge_m3_dir), kind="embedding")
    assert plain.spec.kind is ModelKind.EMBEDDING and plain.spec.pooling == "cls"
    a, b = plain.embed(["same text"])[0], bge_m3.embed(["same text"])[0]
    assert a.dense is not None and b.dense is not None
    assert np.linalg.norm(a.dense) > 1.5  # a plain embedder without Normalize: the raw CLS state
    np.testing.assert_allclose(a.dense / np.linalg.norm(a.dense), b.dense, atol=1e-6)
