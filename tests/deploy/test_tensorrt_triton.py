"""TensorRT options, the trtexec line and the Triton config, checked against the graph they describe.

None of them is run (no TensorRT or Triton on this project's machines): these tests check that
what they name exists in the graph with the shapes they give.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import onnx
import pytest

from m3engine.backends.onnx_artifact import GRAPH, MANIFEST, read_manifest
from m3engine.backends.onnx_session import TENSORRT_OPTIONS, providers_for
from m3engine.deploy.build import BuildOptions, build
from m3engine.deploy.tensorrt import (
    CACHE_DIR,
    NATIVE_CALIBRATION,
    PLAIN_GRAPH,
    Profile,
    profiles,
    provider_options,
    shapes,
)
from m3engine.deploy.triton import CONFIG, TYPES


def _parse_shapes(text: str) -> list[tuple[str, int, int]]:
    out = []
    for part in text.split(","):
        name, dims = part.split(":")
        n, length = (int(x) for x in dims.split("x"))
        out.append((name, n, length))
    return out


def test_profiles_cover_every_length_within_the_token_budget() -> None:
    found = profiles(8192)
    assert found[0].min == (1, 1) and found[-1].max[1] == 8192
    for before, after in itertools.pairwise(found):
        assert after.min[1] == before.max[1] + 1  # no gap, no overlap between buckets
    for p in found:
        assert p.max[0] * p.max[1] <= 16384 and p.min <= p.opt <= p.max
    assert profiles(128) == [Profile(min=(1, 1), opt=(64, 128), max=(128, 128))]


def test_provider_options_name_the_graph_inputs(m3_artifact: Path) -> None:
    doc = json.loads((m3_artifact / TENSORRT_OPTIONS).read_text())
    graph_inputs = [i.name for i in onnx.load(str(m3_artifact / GRAPH)).graph.input]
    options = doc["provider_options"]
    assert options["trt_fp16_enable"] is False and options["trt_int8_enable"] is False  # an fp32 build
    per_profile = len(doc["profiles"])
    for which in ("min", "opt", "max"):
        parsed = _parse_shapes(options[f"trt_profile_{which}_shapes"])
        assert [name for name, _, _ in parsed] == graph_inputs * per_profile
        assert [(n, s) for _, n, s in parsed[:: len(graph_inputs)]] == [
            tuple(p[which]) for p in doc["profiles"]
        ]


def test_the_trtexec_line_matches_the_options(m3_artifact: Path) -> None:
    doc = json.loads((m3_artifact / TENSORRT_OPTIONS).read_text())
    args = shlex.split(doc["trtexec"])
    assert args[0] == "trtexec" and f"--onnx={PLAIN_GRAPH}" in args
    assert (m3_artifact / PLAIN_GRAPH).is_file()  # built with --plain-graph
    plain_ops = {n.op_type for n in onnx.load(str(m3_artifact / PLAIN_GRAPH)).graph.node}
    assert not plain_ops & {"Attention", "SkipLayerNormalization"}  # standard ops only, for TensorRT
    for which in ("min", "opt", "max"):
        given = ",".join(a.split("=", 1)[1] for a in args if a.startswith(f"--{which}Shapes="))
        assert given == doc["provider_options"][f"trt_profile_{which}_shapes"]
    assert "--fp16" not in args and "--int8" not in args
    assert not any(a.startswith("--calib") for a in args)  # fp32: no calibration, no tables written
    assert not (m3_artifact / NATIVE_CALIBRATION).exists() and not (m3_artifact / CACHE_DIR).exists()
    assert "int8_calibration" not in doc


def test_fp32_keeps_plain_onnx_only_when_asked(reranker_artifact: Path) -> None:
    assert not (reranker_artifact / PLAIN_GRAPH).exists()  # built without --plain-graph


def test_precision_flags_follow_the_dtype(m3_artifact: Path) -> None:
    manifest = read_manifest(m3_artifact)
    manifest.dtype = "int8"
    options = provider_options(manifest, profiles(128))
    assert options["trt_int8_enable"] and options["trt_fp16_enable"]
    assert options["trt_int8_calibration_table_name"]
    assert shapes(["input_ids"], profiles(128), "max") == "input_ids:128x128"


def test_onnx_runtime_gets_the_options_on_cuda_with_tensorrt(m3_artifact: Path) -> None:
    chosen = providers_for("cuda:1", m3_artifact, ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    name, options = chosen[0]
    assert name == "TensorrtExecutionProvider" and options["device_id"] == "1"
    assert options["trt_engine_cache_path"] == str(m3_artifact / "trt_cache")
    assert chosen[1] == ("CUDAExecutionProvider", {"device_id": 1}) and chosen[-1] == "CPUExecutionProvider"
    assert providers_for("cpu", m3_artifact, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    from m3engine.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        providers_for("cuda", m3_artifact, ["CPUExecutionProvider"])


def test_the_triton_repository_matches_the_graph(bge_m3_dir: Path, tmp_path: Path) -> None:
    build(BuildOptions(model=str(bge_m3_dir), out=tmp_path / "repo", format="triton", validate=False))
    (model_dir,) = (tmp_path / "repo").iterdir()
    text = (model_dir / CONFIG).read_text()
    assert f'name: "{model_dir.name}"' in text and 'backend: "onnxruntime"' in text
    assert "dynamic_batching" in text and "KIND_GPU" in text and 'name: "tensorrt"' in text
    graph = onnx.load(str(model_dir / "1" / GRAPH))
    entries = re.findall(r'\{ name: "(\w+)", data_type: (\w+), dims: \[ ([^\]]*) \] \}', text)
    described = {name: (dtype, dims.strip()) for name, dtype, dims in entries}
    for value in [*graph.graph.input, *graph.graph.output]:
        dims = value.type.tensor_type.shape.dim[1:]
        expected = ", ".join(str(d.dim_value) if d.HasField("dim_value") else "-1" for d in dims)
        assert described.pop(value.name) == (TYPES[value.type.tensor_type.elem_type], expected)
    assert not described  # nothing in the config that the graph lacks
    assert (model_dir / "1" / MANIFEST).is_file()
    from m3engine import Engine

    assert Engine.load(str(model_dir / "1"), backend="onnx", device="cpu").backend.info.name == "onnx"
