"""TensorRT's int8 calibration tables (deploy/trt_calibration.py), checked against the graph they describe.

NOT RUN with TensorRT (none on this project's machines): these tests read the files as ONNX Runtime's
TensorRT provider and trtexec would (ORT's own flatbuffers reader; TensorRT's documented cache
format) and check the ranges against activations measured directly. `check_int8_tensorrt_files`
is run on the int8 artifact that tests/deploy/test_int8.py builds.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx

from m3engine.accuracy.sample import calibration_texts
from m3engine.backends.onnx import padded_feeds
from m3engine.backends.onnx_session import TENSORRT_OPTIONS
from m3engine.deploy.quantize import calibration_batches
from m3engine.deploy.smooth import activation_ranges as channel_ranges
from m3engine.deploy.smooth import weight_inputs
from m3engine.deploy.tensorrt import CACHE_DIR, NATIVE_CALIBRATION, PLAIN_GRAPH
from m3engine.deploy.trt_calibration import FP16_MAX, activation_ranges, activations, header, scale_hex
from m3engine.models.spec import inspect_model


def read_ort_table(path: Path) -> dict[str, float]:
    from onnxruntime.quantization.CalTableFlatBuffers.TrtTable import TrtTable

    table = TrtTable.GetRootAsTrtTable(path.read_bytes(), 0)
    entries = (table.Dict(i) for i in range(table.DictLength()))
    return {e.Key().decode(): float(e.Value()) for e in entries}


def read_native_cache(path: Path) -> tuple[str, dict[str, float]]:
    """TensorRT's cache: its header and {tensor: amax} (the file holds amax / 127)."""
    first, *lines = path.read_text(encoding="utf-8").splitlines()
    ranges = {}
    for line in lines:
        match = re.fullmatch(r"(.+): ([0-9a-f]{8})", line)
        assert match, f"not a TensorRT cache line: {line!r}"
        ranges[match.group(1)] = struct.unpack(">f", bytes.fromhex(match.group(2)))[0] * 127
    return first, ranges


def check_int8_tensorrt_files(root: Path) -> None:
    """What an int8 artifact's TensorRT files must be (called by test_int8.py on its build)."""
    doc = json.loads((root / TENSORRT_OPTIONS).read_text())
    options, args = doc["provider_options"], shlex.split(doc["trtexec"])
    # ONNX Runtime's provider reads the table by this name inside the engine cache directory
    assert options["trt_int8_use_native_calibration_table"] is False
    ort_file = root / options["trt_engine_cache_path"] / options["trt_int8_calibration_table_name"]
    assert ort_file == root / CACHE_DIR / "calibration.flatbuffers" and ort_file.is_file()
    assert not (root / CACHE_DIR / "calibration.cache").exists()  # ORT's plain text copy stays behind
    (calib,) = [a.split("=", 1)[1] for a in args if a.startswith("--calib=")]
    assert calib == NATIVE_CALIBRATION and (root / calib).is_file() and "--int8" in args
    assert f"--onnx={PLAIN_GRAPH}" in args and (root / PLAIN_GRAPH).is_file()
    assert "TensorRT recalibrates" in doc["note"] and header() in doc["note"]

    ort = read_ort_table(ort_file)
    first, native = read_native_cache(root / calib)
    assert re.fullmatch(r"TRT-\d{5,6}-EntropyCalibration2", first) and first == header()
    assert ort.keys() == native.keys() and len(ort) > 20
    for name, amax in ort.items():
        assert 0 < amax <= FP16_MAX and np.isfinite(amax), (name, amax)
        assert np.isclose(native[name], amax, rtol=1e-6), name  # one range, two formats

    graph = onnx.load(str(root / PLAIN_GRAPH))
    computed = activations(root / PLAIN_GRAPH)
    assert set(ort) <= computed  # tensors of plain.onnx computed from the graph's inputs
    initializers = {t.name for t in graph.graph.initializer}
    assert not set(ort) & initializers
    # the inputs' first float tensors (the embedding lookups of the token and position ids) and the
    # graph's float outputs are there
    lookups = {
        n.output[0]
        for n in graph.graph.node
        if n.op_type == "Gather" and n.input[0] in initializers and n.input[1] in computed
    }
    assert lookups and lookups <= set(ort)
    assert {"dense", "colbert"} <= set(ort)


def test_the_native_cache_line_holds_amax_over_127_big_endian() -> None:
    assert scale_hex(127.0) == "3f800000"  # 1.0
    assert scale_hex(254.0) == "40000000"  # 2.0
    assert header((10, 9, 0)) == "TRT-100900-EntropyCalibration2"
    assert header((8, 6, 1)) == "TRT-80601-EntropyCalibration2"


def test_ranges_are_the_largest_activation_seen(m3_artifact: Path, tmp_path: Path) -> None:
    """ONNX Runtime's calibrator (its external-data path, as for a model over 2 GB) against the
    same feeds run through the graph with each MatMul input as an output: per tensor, max |x|."""
    graph = tmp_path / "plain" / PLAIN_GRAPH
    graph.parent.mkdir()
    shutil.copy(m3_artifact / PLAIN_GRAPH, graph)  # the calibrator writes its shape-inferred copy beside it
    spec = inspect_model(m3_artifact)
    texts = calibration_texts(12)
    (tmp_path / "work").mkdir()
    ranges, batches = activation_ranges(graph, spec, texts, True, tmp_path / "work")
    assert batches >= 1 and list((tmp_path / "work").glob("*.data"))  # weights beside, not in, the graph

    model = onnx.load(str(graph))
    inputs = [i.name for i in model.graph.input]
    tokens, packed = calibration_batches(spec, texts)
    feeds = [padded_feeds(b, tokens.pad_id, inputs)[0] for b in packed]
    matmuls = weight_inputs(model)
    direct = channel_ranges(graph, feeds, list(matmuls))  # {input: (K,) max |x| per channel}
    assert len(direct) >= 8
    for name, per_channel in direct.items():
        assert np.isclose(ranges[name], per_channel.max(), rtol=1e-6), name
