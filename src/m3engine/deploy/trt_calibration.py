"""INT8 calibration for TensorRT: activation ranges of the plain graph, in the two table formats.

NOT RUN with TensorRT: no machine of this project can install it. The tests check that both files
parse, that every key is a tensor of plain.onnx, that every range is positive and finite, and that
the provider options and the trtexec line name files that exist; not that TensorRT accepts them.

TensorRT's int8 (implicit quantization) needs a dynamic range, the largest |x|, for each tensor it may
run in int8; given a table, ONNX Runtime's TensorRT provider and trtexec take the ranges from it
instead of calibrating on data of their own. The ranges here are those of plain.onnx (the exporter's
standard ops: what TensorRT parses; model.onnx's fused and quantized ops have other tensor names),
measured by ONNX Runtime's own calibrator (MinMax, symmetric: amax = max |x| over every batch) on
the texts int8's recipe was chosen on (deploy/texts.py: the probe's queries and its first
RANGE_TEXTS passages, those the smoothing scales come from), batched
and padded as the onnx backend batches them on a CPU. Files:

    trt_cache/calibration.flatbuffers  ONNX Runtime's table (its write_calibration_table: tensor
        name -> amax as text). Its TensorRT provider reads `trt_int8_calibration_table_name` inside
        `trt_engine_cache_path`, hence the engine cache directory. ORT writes a plain
        `calibration.cache` and a json beside it, neither in TensorRT's format: they stay behind.
    calibration.trt.cache  TensorRT's own calibration cache, for `trtexec --calib`: a header line
        `TRT-<version>-EntropyCalibration2`, then `name: <scale>` per tensor, the scale amax / 127
        as the 8 hex digits of its big-endian float32.

The header names trtexec's calibrator (IInt8EntropyCalibrator2; the values are MinMax ranges, the
header only has to match the calibrator that reads them) and the TensorRT version TRT_VERSION.
TensorRT ignores a cache written for another version and recalibrates (trtexec on random inputs,
or fails without them): on another TensorRT, put its number (major * 10000 + minor * 100 + patch)
in the header.

The tables hold activations only: tensors computed from the graph's inputs (constants and weights,
which the calibrator measures too, are not ranges TensorRT asks for). Left out, and listed in the
manifest, are tensors without a positive range (always zero) and those past fp16's largest value:
those hold the attention mask's fill value (float32's lowest, 3.4e38), not data, and an int8 range
that wide would round every real attention score to zero. TensorRT keeps a tensor it has no range
for out of int8.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from m3engine.backends.onnx import padded_feeds
from m3engine.deploy.quantize import RANGE_TEXTS, calibration_batches
from m3engine.deploy.tensorrt import CACHE_DIR, CALIBRATION_TABLE, NATIVE_CALIBRATION
from m3engine.deploy.texts import ValidationTexts
from m3engine.models.spec import ModelSpec

# The TensorRT the native cache claims to come from: 10.9, the version ONNX Runtime's documentation
# lists for its 1.22 GPU packages (the last row of its table); TensorRT recalibrates on any other.
TRT_VERSION = (10, 9, 0)
FP16_MAX = 65504.0  # a larger |x| is the attention mask's fill value, not an activation's range
# Texts per calibration batch. The augmented graph keeps every activation of a batch alive until
# its reductions run: all-MiniLM-L6-v2 peaked at 6.7 GB in the engine's CPU batches (4,096 tokens)
# and 1.3 GB in batches of two texts, and BGE-M3's activations are ~10x MiniLM's per token.
CALIBRATION_BATCH = 1


def header(version: tuple[int, int, int] = TRT_VERSION) -> str:
    major, minor, patch = version
    return f"TRT-{major * 10000 + minor * 100 + patch}-EntropyCalibration2"


def scale_hex(amax: float) -> str:
    """TensorRT's cache entry for a dynamic range: amax / 127 as a big-endian float32, in hex."""
    return struct.pack(">f", amax / 127.0).hex()


class _Feeds:
    """ONNX Runtime's CalibrationDataReader protocol (get_next, None at the end) over feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def activation_ranges(
    graph: Path, spec: ModelSpec, texts: list[str], large: bool, scratch: Path
) -> tuple[dict[str, float], int]:
    """{tensor name: amax} of every float tensor of `graph` on `texts`, and the number of batches.

    The calibrator writes a shape-inferred copy beside `graph` and its augmented graph (a ReduceMin
    and a ReduceMax per tensor) into `scratch`, with its weights in one external file when `large`.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    inputs = [i.name for i in onnx.load(str(graph), load_external_data=False).graph.input]
    tokens, batches = calibration_batches(spec, texts, max_size=CALIBRATION_BATCH)
    feeds = [padded_feeds(batch, tokens.pad_id, inputs)[0] for batch in batches]
    calibrator = create_calibrator(
        graph,
        augmented_model_path=str(scratch / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=large,
        extra_options={"symmetric": True},
    )
    calibrator.collect_data(_Feeds(feeds))
    data = calibrator.compute_data()
    ranges = {}
    for name, tensor in data.items():
        low, high = tensor.range_value
        ranges[name] = float(max(np.abs(low).max(), np.abs(high).max()))  # (-amax, amax) already
    return ranges, len(batches)


def activations(graph: Path) -> set[str]:
    """The tensors of `graph` computed from its inputs (the graph's nodes are in topological order)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    found = {i.name for i in model.graph.input}
    for node in model.graph.node:
        if any(name in found for name in node.input):
            found.update(node.output)
    return found


def write_native_cache(path: Path, ranges: dict[str, float]) -> None:
    lines = [header()] + [f"{name}: {scale_hex(amax)}" for name, amax in sorted(ranges.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_ort_table(path: Path, ranges: dict[str, float], scratch: Path) -> None:
    """ONNX Runtime's flatbuffers table at `path` (its writer's other two files stay in `scratch`)."""
    from onnxruntime.quantization import write_calibration_table
    from onnxruntime.quantization.calibrate import TensorData

    # symmetric ranges: the writer stores max(highest, lowest), the amax only when lowest = -amax
    table = {
        name: TensorData(lowest=np.float32(-amax), highest=np.float32(amax)) for name, amax in ranges.items()
    }
    target = scratch / "ort-table"
    target.mkdir()
    write_calibration_table(table, dir=str(target))
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(target / CALIBRATION_TABLE, path)


def write_calibration(
    graph: Path, out: Path, spec: ModelSpec, texts: ValidationTexts, large: bool, scratch: Path
) -> dict[str, Any]:
    """Both tables for `graph` (the plain fp32 export) into the artifact `out`; the manifest's notes."""
    work = scratch / "trt-calibration"
    work.mkdir()
    # as many passages as set the smoothing scales: all 2,000 of the default probe cost ~200 s more
    chosen = texts.passages[:RANGE_TEXTS] + texts.queries
    measured, batches = activation_ranges(graph, spec, chosen, large, work)
    computed = activations(graph)
    measured = {name: amax for name, amax in measured.items() if name in computed}
    ranges = {name: amax for name, amax in measured.items() if 0.0 < amax <= FP16_MAX}
    write_ort_table(out / CACHE_DIR / CALIBRATION_TABLE, ranges, work)
    write_native_cache(out / NATIVE_CALIBRATION, ranges)
    return {
        "method": "ONNX Runtime's MinMax calibrator (symmetric) on the plain fp32 graph",
        "texts": len(chosen),
        "batches": batches,
        "tensors": len(ranges),
        "left_out": {  # activations without a range TensorRT could use
            "zero": sorted(name for name, amax in measured.items() if amax <= 0.0),
            "beyond_fp16": sorted(name for name, amax in measured.items() if not amax <= FP16_MAX),
        },
        "onnxruntime_table": f"{CACHE_DIR}/{CALIBRATION_TABLE}",
        "trtexec_cache": NATIVE_CALIBRATION,
        "trtexec_cache_header": header(),
        "run": False,
    }
