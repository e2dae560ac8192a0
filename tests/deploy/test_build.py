"""`m3engine build` on the tiny checkpoints of each kind: graph, fusions, files, manifest, validation."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from m3engine.backends.onnx_artifact import GRAPH, MANIFEST, sha256_file
from m3engine.cli.main import main
from m3engine.deploy.build import BuildOptions, build
from m3engine.deploy.texts import ValidationTexts

SMALL = ValidationTexts.built_in(queries=12, passages=48)


def _manifest(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / MANIFEST).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("fixture", "outputs"),
    [
        ("bge_m3_dir", ["dense", "sparse", "colbert"]),
        ("reranker_dir", ["logits"]),
        ("classifier_dir", ["logits"]),
    ],
)
def test_each_kind_builds_fused_and_validated(
    fixture: str, outputs: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source: Path = request.getfixturevalue(fixture)
    manifest = build(BuildOptions(model=str(source), out=tmp_path / "a", validation=SMALL))
    assert manifest.outputs == outputs and manifest.dtype == "fp32" and manifest.opset >= 17
    graph = onnx.load(str(tmp_path / "a" / GRAPH))
    assert [o.name for o in graph.graph.output] == outputs
    assert [i.name for i in graph.graph.input] == manifest.inputs
    for value in graph.graph.input:  # dynamic batch and sequence axes
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    ops = {n.op_type for n in graph.graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops  # ONNX Runtime's fusions were applied
    assert manifest.build["fused"]["Attention"] == 2  # one per layer of the tiny models
    assert manifest.validation is not None and manifest.validation["pass"], manifest.validation
    written = _manifest(tmp_path / "a")
    assert written["files"][GRAPH] == sha256_file(tmp_path / "a" / GRAPH)
    assert written["source"]["weights_sha256"]["model.safetensors"] == sha256_file(
        source / "model.safetensors"
    )
    assert {"onnx", "onnxruntime", "torch"} <= set(written["tools"])
    assert "NOT RUN" in (tmp_path / "a" / "tensorrt.json").read_text()


def test_fp16_keeps_norms_in_fp32_and_still_matches(bge_m3_dir: Path, tmp_path: Path) -> None:
    manifest = build(BuildOptions(model=str(bge_m3_dir), out=tmp_path / "h", dtype="fp16", validation=SMALL))
    graph = onnx.load(str(tmp_path / "h" / GRAPH))
    types = {t.name: t.data_type for t in graph.graph.initializer}
    by_op: dict[str, set[int]] = {}
    for node in graph.graph.node:
        for name in node.input:
            if name in types:
                by_op.setdefault(node.op_type, set()).add(types[name])
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert half in by_op["Attention"] and half in by_op["MatMul"]
    assert by_op["SkipLayerNormalization"] == {single} and by_op["LayerNormalization"] == {single}
    assert [o.type.tensor_type.elem_type for o in graph.graph.output] == [single] * 3  # I/O kept
    assert manifest.validation is not None and manifest.validation["pass"]  # run on the CPU provider


def test_build_refuses_a_non_empty_directory_and_an_unknown_dtype(bge_m3_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert main(["build", str(bge_m3_dir), "--out", str(tmp_path / "x"), "--no-validate"]) == 2
    from m3engine.errors import InputError

    with pytest.raises(InputError, match="bf16"):
        build(BuildOptions(model=str(bge_m3_dir), out=tmp_path / "y", dtype="bf16"))


def test_validate_cli_writes_a_passing_report(
    m3_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    code = main(
        [
            "validate",
            "--backend",
            "onnx",
            "--model",
            str(m3_artifact),
            "--passages",
            "24",
            "--json",
            str(report),
        ]
    )
    assert code == 0
    data = json.loads(report.read_text())
    assert data["candidate"]["backend"] == "onnx" and data["reference"]["backend"] == "reference"
    assert data["metrics"]["dense_cos_min"] > 0.9999 and data["metrics"]["colbert_cos_mean"] > 0.9999
    assert "overall: PASS" in capsys.readouterr().err


def test_validate_fails_when_a_threshold_is_out_of_reach(m3_artifact: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    args = [
        "validate",
        "--backend",
        "onnx",
        "--model",
        str(m3_artifact),
        "--passages",
        "16",
        "--json",
        str(report),
    ]
    assert main([*args, "--min-dense-cos-min", "1.5"]) == 1
    assert json.loads(report.read_text())["checks"]["dense_cos_min"]["pass"] is False


def test_a_half_precision_checkpoint_counts_as_its_fp32_export(tmp_path: Path) -> None:
    """The export writes fp32: BGE-M3 stored in fp16 (1.1 GB) exports to 2.27 GB, over protobuf's
    2 GB, so the graph's weights must go to an external file whatever the checkpoint's size."""
    import torch
    from safetensors.torch import save_file

    from m3engine.deploy.build import fp32_bytes

    save_file(
        {"a": torch.zeros(3, 5, dtype=torch.float16), "b": torch.zeros(7, dtype=torch.bfloat16)},
        str(tmp_path / "model.safetensors"),
    )
    (tmp_path / "pytorch_model.bin").write_bytes(b"x" * 10)
    assert fp32_bytes([tmp_path / "model.safetensors"]) == 4 * (15 + 7)
    assert fp32_bytes([tmp_path / "pytorch_model.bin"]) == 20
