"""`m3engine build --format triton`: a Triton Inference Server model repository around the artifact.

    OUT/<name>/config.pbtxt     the ONNX Runtime backend, dynamic batching, a GPU instance group,
                                the TensorRT accelerator (fp16 when the artifact is fp16 or int8)
    OUT/<name>/1/               the ONNX artifact itself (model.onnx, manifest, tokenizer files):
                                Triton loads 1/model.onnx; m3engine can load the same directory

NOT RUN: no Triton server (nor TensorRT) runs on this project's machines; the config is generated
from the graph's own inputs and outputs (names, element types, dynamic axes) and the tests check it
against the graph. Triton's dynamic batcher joins only requests of equal shapes, so clients should
pad token ids to a few lengths (the TensorRT profiles' buckets, tensorrt.py), as m3engine's own
scheduler does for padded backends.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from m3engine.backends.onnx_artifact import GRAPH, Manifest
from m3engine.deploy.tensorrt import MAX_BATCH

VERSION = "1"
CONFIG = "config.pbtxt"
TYPES = {1: "TYPE_FP32", 7: "TYPE_INT64", 10: "TYPE_FP16", 6: "TYPE_INT32"}  # onnx TensorProto -> Triton


def model_name(model: str) -> str:
    """A repository-safe name from a hub id or path: BAAI/bge-m3 -> bge-m3."""
    base = model.rstrip("/").rsplit("/", 1)[-1] or "model"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base)


def graph_io(graph: Path) -> tuple[list[tuple[str, int, list[int]]], list[tuple[str, int, list[int]]]]:
    """(inputs, outputs) as (name, onnx element type, dims with -1 for a dynamic axis)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)

    def describe(values: Any) -> list[tuple[str, int, list[int]]]:
        out = []
        for v in values:
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            out.append((v.name, int(v.type.tensor_type.elem_type), dims))
        return out

    return describe(model.graph.input), describe(model.graph.output)


def _tensor(name: str, elem: int, dims: list[int]) -> str:
    shape = ", ".join(str(d) for d in dims[1:])  # the batch axis is Triton's own (max_batch_size > 0)
    return f'  {{ name: "{name}", data_type: {TYPES[elem]}, dims: [ {shape} ] }}'


def config_text(name: str, graph: Path, manifest: Manifest, instances: int = 1) -> str:
    inputs, outputs = graph_io(graph)
    precision = "FP16" if manifest.dtype in ("fp16", "int8") else "FP32"
    params = {
        "precision_mode": precision,
        "max_workspace_size_bytes": str(4 << 30),
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": "/tmp/m3engine_trt_cache",
    }
    accel = "\n".join(f'        parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items())
    return "\n".join(
        [
            f'name: "{name}"',
            'backend: "onnxruntime"',
            f"max_batch_size: {MAX_BATCH}",
            "input [",
            ",\n".join(_tensor(*i) for i in inputs),
            "]",
            "output [",
            ",\n".join(_tensor(*o) for o in outputs),
            "]",
            "dynamic_batching { max_queue_delay_microseconds: 2000 }",
            f"instance_group [ {{ count: {instances}, kind: KIND_GPU }} ]",
            "optimization { execution_accelerators { gpu_execution_accelerator: [",
            '    { name: "tensorrt"',
            accel,
            "    } ] } }",
            "",
        ]
    )


def write_repository(repo: Path, name: str, manifest: Manifest) -> Path:
    """config.pbtxt for the artifact already built in repo/name/1; returns the config's path."""
    config = repo / name / CONFIG
    config.write_text(config_text(name, repo / name / VERSION / GRAPH, manifest), encoding="utf-8")
    return config
