"""TensorRT settings written into an artifact: ONNX Runtime's TensorRT provider options and trtexec.

NOT RUN: TensorRT cannot be installed on any machine this project has (its libraries are on no
registry reachable here), so these files are produced and checked for consistency with the graph
(input names, dynamic axes, precision flags) by the tests, and never executed. They say so.

TensorRT builds one engine per optimization profile, a (min, opt, max) shape per input; a profile
spanning 1 to 8,192 tokens is tuned for one shape and slow at the others, so there is one profile per
length bucket, each with a batch size that keeps batch x length within the token budget:
    bucket (1-128 tokens):    batch 1 .. budget / 128, optimized at half of that
    bucket (129-512):         batch 1 .. budget / 512
    ... up to the model's max length.
`tensorrt.json` holds the provider options (backends/onnx_session.py passes them to ONNX Runtime
when onnxruntime-gpu has the TensorRT provider) and the equivalent `trtexec` command line, which
needs the plain graph (`--plain-graph`: standard ONNX ops only; model.onnx has ONNX Runtime's fused
ops, which TensorRT's parser does not know). An int8 artifact always keeps plain.onnx beside
tensorrt.json, with the activation ranges TensorRT's int8 needs, measured on that graph
(trt_calibration.py): ONNX Runtime's table for the provider, TensorRT's own cache for trtexec.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3engine.backends.choose import BATCH_TOKENS
from m3engine.backends.onnx_artifact import Manifest
from m3engine.backends.onnx_session import TENSORRT_OPTIONS
from m3engine.models.spec import ModelSpec

BUCKETS = (128, 512, 2048, 8192)
TOKEN_BUDGET = BATCH_TOKENS["cuda"]  # the engine's default max_batch_tokens on a GPU
MAX_BATCH = 256  # the engine's default max_batch_size
PLAIN_GRAPH = "plain.onnx"
CACHE_DIR = "trt_cache"
CALIBRATION_TABLE = "calibration.flatbuffers"  # ONNX Runtime's table, inside CACHE_DIR (where it looks)
NATIVE_CALIBRATION = "calibration.trt.cache"  # TensorRT's own cache format, for trtexec --calib


@dataclass(frozen=True)
class Profile:
    """(batch, tokens) at the minimum, optimum and maximum of one length bucket."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]


def profiles(max_length: int, budget: int = TOKEN_BUDGET, max_batch: int = MAX_BATCH) -> list[Profile]:
    out, low = [], 1
    for bucket in BUCKETS:
        high = min(bucket, max_length)
        batch = max(1, min(max_batch, budget // high))
        out.append(Profile(min=(1, low), opt=(max(1, batch // 2), high), max=(batch, high)))
        if high >= max_length:
            break
        low = high + 1
    return out


def shapes(inputs: list[str], profile_list: list[Profile], which: str) -> str:
    """ "input_ids:1x1,attention_mask:1x1,input_ids:1x129,...": every input, profile after profile."""
    parts = []
    for profile in profile_list:
        n, length = getattr(profile, which)
        parts += [f"{name}:{n}x{length}" for name in inputs]
    return ",".join(parts)


def provider_options(manifest: Manifest, profile_list: list[Profile]) -> dict[str, Any]:
    """ONNX Runtime TensorrtExecutionProvider options for this artifact's precision."""
    options: dict[str, Any] = {
        "trt_fp16_enable": manifest.dtype in ("fp16", "int8"),
        "trt_int8_enable": manifest.dtype == "int8",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": CACHE_DIR,
        "trt_profile_min_shapes": shapes(manifest.inputs, profile_list, "min"),
        "trt_profile_opt_shapes": shapes(manifest.inputs, profile_list, "opt"),
        "trt_profile_max_shapes": shapes(manifest.inputs, profile_list, "max"),
    }
    if manifest.dtype == "int8":
        options["trt_int8_calibration_table_name"] = CALIBRATION_TABLE
        options["trt_int8_use_native_calibration_table"] = False
    return options


def trtexec_command(manifest: Manifest, profile_list: list[Profile]) -> str:
    """The trtexec line that builds the same engine from the plain graph."""
    args = ["trtexec", f"--onnx={PLAIN_GRAPH}", f"--saveEngine={CACHE_DIR}/model.plan"]
    for profile in profile_list:  # one --minShapes/--optShapes/--maxShapes triple per profile
        for which in ("min", "opt", "max"):
            args.append(f"--{which}Shapes=" + shapes(manifest.inputs, [profile], which))
    if manifest.dtype in ("fp16", "int8"):
        args.append("--fp16")
    if manifest.dtype == "int8":
        args += ["--int8", f"--calib={NATIVE_CALIBRATION}"]
    # LayerNorm and the softmax of attention in fp32 under --fp16 (their fp16 overflow, issue 18)
    args += ["--precisionConstraints=prefer", "--layerPrecisions=*LayerNorm*:fp32,*Softmax*:fp32"]
    return shlex.join(args)


def write_tensorrt_files(
    root: Path, manifest: Manifest, spec: ModelSpec, calibration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """tensorrt.json in the artifact; returns what the manifest records about it. `calibration`: what
    trt_calibration.py wrote (int8)."""
    profile_list = profiles(spec.max_length)
    note = (
        "NOT RUN: generated for TensorRT, which no machine of this project can install; "
        "check it on a machine with TensorRT before relying on it."
    )
    if calibration is not None:
        note += (
            f" INT8 ranges: {calibration['onnxruntime_table']} (ONNX Runtime's table, read from the "
            f"engine cache directory) and {calibration['trtexec_cache']} (TensorRT's cache for trtexec), "
            f"measured on {PLAIN_GRAPH}, whose tensor names they use. The cache's header "
            f"{calibration['trtexec_cache_header']} claims that TensorRT version: TensorRT recalibrates "
            "(ignoring the cache) if it does not match its own; edit the number (major * 10000 + "
            "minor * 100 + patch) for another version."
        )
    doc: dict[str, Any] = {
        "note": note,
        "provider_options": provider_options(manifest, profile_list),
        "trtexec": trtexec_command(manifest, profile_list),
        "trtexec_graph": PLAIN_GRAPH,
        "profiles": [{"min": p.min, "opt": p.opt, "max": p.max} for p in profile_list],
    }
    if calibration is not None:
        doc["int8_calibration"] = calibration
    (root / TENSORRT_OPTIONS).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    out = {"file": TENSORRT_OPTIONS, "profiles": len(profile_list), "run": False}
    return out | ({"int8_calibration": calibration} if calibration is not None else {})
