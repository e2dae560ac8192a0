"""Device, dtype and backend names as users write them, resolved.

Nothing here imports torch at module level: the onnx backend resolves its names through this module
in an install without torch (`pip install 'm3engine[onnx]'`), and asks ONNX Runtime and the NVIDIA
driver which CUDA devices it can use; the torch backends ask torch.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from m3engine.errors import BackendUnavailableError, InputError
from m3engine.settings import EngineSettings

if TYPE_CHECKING:
    import torch

DTYPES = ("fp32", "fp16", "bf16")  # the names a user writes; torch_dtype() gives torch's types
# max_batch_tokens by device kind. A CPU runs small batches faster: all-MiniLM-L6-v2 in bf16 on the
# 2-core VM ran passages of 256 tokens at 21.4 k tokens/s in batches of 4,096 tokens and 17.5 k in
# batches of 16,384 (their activations no longer fit its caches; ONNX Runtime fp32: 13.9 k / 12.7 k).
BATCH_TOKENS = {"cuda": 16384, "cpu": 4096}


def default_batch_tokens(device: str) -> int:
    """The token budget of one forward pass on `device` when max_batch_tokens is not set."""
    return BATCH_TOKENS["cuda" if device.startswith("cuda") else "cpu"]


def with_batch_tokens(settings: EngineSettings, device: str) -> EngineSettings:
    """`settings` with max_batch_tokens set: as given, or `device`'s default."""
    if settings.max_batch_tokens is not None:
        return settings
    return dataclasses.replace(settings, max_batch_tokens=default_batch_tokens(device))


def torch_dtype(name: str) -> torch.dtype:
    """torch's type for a name of DTYPES (the reference and fast backends)."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def cuda_count(backend: str = "auto") -> int:
    """The CUDA devices `backend` can run on: ONNX Runtime's for onnx, torch's for the others."""
    if backend == "onnx":
        from m3engine.backends.onnx_session import cuda_devices

        return cuda_devices()
    try:
        import torch
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {backend!r} runs on torch, which is not installed: `pip install 'm3engine[torch]'`, "
            "or serve an ONNX artifact of `m3engine build` with --backend onnx"
        ) from error
    return int(torch.cuda.device_count())


def _seer(backend: str) -> str:
    if backend == "onnx":
        return "ONNX Runtime (its CUDAExecutionProvider, `pip install onnxruntime-gpu`, and a CUDA driver)"
    return "torch"


def resolve_device(device: str, backend: str = "auto") -> str:
    kind, _, index = device.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and not index.isdigit()) or (index and kind != "cuda"):
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    if device == "auto":
        return "cuda" if cuda_count(backend) else "cpu"
    if device.startswith("cuda") and not cuda_count(backend):
        raise InputError(
            f"device {device!r} asked for, but {_seer(backend)} sees no CUDA device; use --device cpu"
        )
    return device


def resolve_devices(devices: str | None, device: str, backend: str = "auto") -> list[str]:
    """The devices of `--devices` (see EngineSettings.devices): one engine runs on each."""
    if devices is None or not devices.strip():
        return [resolve_device(device, backend)]
    if devices.strip() == "all":
        count = cuda_count(backend)
        return [f"cuda:{i}" for i in range(count)] if count else ["cpu"]
    names = [part.strip() for part in devices.split(",") if part.strip()]
    chosen = [resolve_device(f"cuda:{n}" if n.isdigit() else n, backend) for n in names]
    count = cuda_count(backend) if any(name.startswith("cuda:") for name in chosen) else 0
    for name in chosen:
        if name.startswith("cuda:") and int(name[5:]) >= count:
            raise InputError(f"--devices names {name}, but {_seer(backend)} sees {count} CUDA device(s)")
    return chosen


def resolve_backend(backend: str, device: str) -> str:
    """`auto`: our packed engine on CUDA; on the CPU the transformers reference, which is faster there."""
    if backend == "auto":
        return "reference" if device == "cpu" else "fast"
    return backend


def resolve_dtype(dtype: str, device: str, backend: str = "reference", cross_encoder: bool = False) -> str:
    """`auto`: fp32 on CPU; on CUDA bf16 for the fast backend's embedders, fp16 otherwise.

    Cross-encoders stay in fp16: bf16's 8-bit mantissa reorders close logits (measured Spearman 0.963
    against fp32 on the synthetic bge-reranker-v2-m3, under the 0.99 gate; fp16 0.9989).
    `fp8` is opt-in and only on the fast backend on CUDA (its matrix products in e4m3).
    """
    if dtype == "auto":
        if device == "cpu":
            return "fp32"
        return "bf16" if backend == "fast" and not cross_encoder else "fp16"
    if dtype == "fp8":
        if backend != "fast" or not device.startswith("cuda"):
            raise InputError(
                f"dtype fp8 runs on the fast backend on CUDA only, not backend {backend!r} on {device!r}"
            )
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(DTYPES)}, fp8")
    return dtype
