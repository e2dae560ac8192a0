"""A corrupted, incomplete or mismatched artifact is refused at load, naming what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from m3engine import Engine
from m3engine.backends.onnx_artifact import GRAPH, MANIFEST, ArtifactError
from m3engine.errors import ModelError
from m3engine.tokenization.source import FROZEN


@pytest.fixture()
def copy(m3_artifact: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(m3_artifact, tmp_path / "artifact"))


def _load(path: Path, **extra: object) -> Engine:
    return Engine.load(str(path), backend="onnx", device="cpu", **extra)


def test_the_intact_copy_loads(copy: Path) -> None:
    assert _load(copy).backend.info.name == "onnx"


def test_a_flipped_byte_in_the_graph_is_refused(copy: Path) -> None:
    data = bytearray((copy / GRAPH).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / GRAPH).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.onnx.*differ from the hashes"):
        _load(copy)


def test_a_missing_file_is_refused(copy: Path) -> None:
    (copy / "tokenizer_config.json").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        Engine.load(str(copy), backend="onnx", device="cpu")


def test_a_graph_from_another_model_is_refused(copy: Path, reranker_artifact: Path) -> None:
    shutil.copy(reranker_artifact / GRAPH, copy / GRAPH)  # and its hash, as a careless copy would
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"][GRAPH] = json.loads((reranker_artifact / MANIFEST).read_text())["files"][GRAPH]
    manifest["model"]["kind"] = "reranker"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="another model"):
        _load(copy)


def test_a_config_edited_after_the_build_is_refused(copy: Path) -> None:
    config = json.loads((copy / "config.json").read_text())
    config["hidden_size"] = 64
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"config\.json"):
        _load(copy)


def test_a_checkpoint_without_a_manifest_is_refused_with_the_build_command(bge_m3_dir: Path) -> None:
    with pytest.raises(ArtifactError, match="m3engine build"):
        _load(bge_m3_dir)


def test_an_unknown_manifest_format_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format"] = "m3engine-onnx/99"
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="rebuild"):
        _load(copy)


def test_a_precision_other_than_the_built_one_is_refused(copy: Path) -> None:
    with pytest.raises(ArtifactError, match="built for fp32, not fp16"):
        _load(copy, dtype="fp16")


def test_a_manifest_with_another_colbert_width_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["model"]["colbert_dim"] += 8  # the graph's ColBERT rows keep their width
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="ColBERT rows are 32 wide, its manifest says 40"):
        _load(copy)


def test_an_unreadable_frozen_tokenizer_is_refused_with_the_rebuild(copy: Path) -> None:
    (copy / FROZEN).write_text('{"format": "m3engine-tokenizer/1", "tokenizer": "{not json"}')
    with pytest.raises(ModelError, match=f"{FROZEN} cannot be read.*m3engine build"):
        _load(copy)
