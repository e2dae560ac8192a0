"""ONNX Runtime sessions: which execution providers, how many threads.

On the CPU the session uses as many intra-op threads as this process may really use (its affinity
within its cgroup quota, process/cpu_quota.py): ONNX Runtime's default is the host's core count,
which in a container limited to 2 CPUs of a 64-core host oversubscribes and runs several times
slower. One inter-op thread: a transformer's graph is a chain, with nothing to run beside it.

On CUDA the providers are tried in order: TensorRT (when onnxruntime-gpu was built with it and the
artifact carries TensorRT options, tensorrt.json), then CUDA, then the CPU for any node the others
do not take. The graph was optimized at build time (the transformer fusions), so a load only runs
ONNX Runtime's own, quick, graph passes.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

from m3engine.errors import BackendUnavailableError, InputError
from m3engine.process.cpu_quota import available_cpus

TENSORRT_OPTIONS = "tensorrt.json"  # written by `m3engine build` (deploy/tensorrt.py)


def providers_for(device: str, root: Path, available: list[str]) -> list[Any]:
    """ONNX Runtime's provider list for `device`, given the providers this install has."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind != "cuda":
        raise InputError(f"the onnx backend runs on cpu or cuda[:N], not {device!r}")
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(
            f"device {device!r} needs onnxruntime's CUDAExecutionProvider, which this install lacks "
            f"(it has {available}); `pip install onnxruntime-gpu` or use --device cpu"
        )
    device_id = {"device_id": int(index or 0)}
    chosen: list[Any] = []
    trt_file = root / TENSORRT_OPTIONS
    if "TensorrtExecutionProvider" in available and trt_file.is_file():
        options = json.loads(trt_file.read_text(encoding="utf-8"))["provider_options"]
        # provider options are strings; the engine cache and calibration table live in the artifact
        text = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}
        text["trt_engine_cache_path"] = str(root / text.get("trt_engine_cache_path", "trt_cache"))
        chosen.append(("TensorrtExecutionProvider", {**text, "device_id": str(device_id["device_id"])}))
    chosen.append(("CUDAExecutionProvider", device_id))
    chosen.append("CPUExecutionProvider")
    return chosen


def cuda_devices() -> int:
    """CUDA devices ONNX Runtime can use: none without its CUDA provider, else the driver's count.

    Asked of the driver itself (libcuda), not of torch, which an install for ONNX artifacts lacks;
    the count honours CUDA_VISIBLE_DEVICES as torch's does.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return 0
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return 0
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver on this machine
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def open_session(graph: Path, device: str, threads: int | None = None) -> Any:
    """An InferenceSession for `graph` on `device` (threads: intra-op, default the CPU quota)."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise BackendUnavailableError(
            "the onnx backend needs onnxruntime; `pip install 'm3engine[onnx]'`"
        ) from error
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = providers_for(device, graph.parent, list(ort.get_available_providers()))
    return ort.InferenceSession(str(graph), sess_options=options, providers=providers)
