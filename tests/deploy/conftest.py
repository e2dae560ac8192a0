"""ONNX artifacts of the tiny checkpoints, built once per session (without validation: the tests check)."""

from __future__ import annotations

from pathlib import Path

import pytest


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
