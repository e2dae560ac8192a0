"""Which reduced precision a load tries against fp32, if any: fp8 on request, bf16 for auto on a CPU.

Two settings lead to a trial at load (gated.py runs it):
- `--dtype fp8` (the fast backend on CUDA): the user asked for fp8, so the accuracy gate alone decides;
  the fallback is auto's half precision (backends/choose.py).
- `--dtype auto` on a CPU, with a torch backend (reference or fast): bf16 is about 3x fp32 on CPUs
  with bf16 units, but whether it keeps fp32's answers depends on the user's weights, and whether
  it is faster depends on the CPU. So bf16 is served only if it passes the same gate and also runs
  the sample faster than fp32; otherwise fp32. A CPU without bf16 units (process/cpu_features.py)
  gets fp32 without a comparison: there bf16 is emulated and slower than fp32.
Any other setting (an explicit dtype, an ONNX artifact, a backend of the user's own) is served as asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from m3engine.accuracy.gate import LOAD_GATE, Gate
from m3engine.backends.choose import resolve_dtype
from m3engine.process.cpu_features import bf16_units, cpu_name

TORCH_BACKENDS = ("reference", "fast")  # the backends whose dtype is a torch dtype chosen at load


@dataclass(frozen=True)
class Trial:
    """A reduced-precision candidate gated against fp32 on `device_name`."""

    requested: str  # the dtype setting: fp8 or auto
    backend: str  # the backend of the candidate and of the fallback
    candidate: str | None  # the dtype tried; None: nothing worth trying, `fallback` is served as is
    fallback: str  # served when the candidate fails (or is None)
    device_name: str  # the GPU or CPU model: part of the cached verdict's key
    why: str = ""  # the reason a None candidate gives, for /info
    gate: Gate = LOAD_GATE
    # auto's choice must also be the faster one: the user asked for speed, not for this dtype
    must_be_faster: bool = False
    rerank_queries: int = 8  # queries x sample texts = the pairs a cross-encoder is compared on


def fp8_trial(device: str, device_name: str, cross_encoder: bool) -> Trial:
    fallback = resolve_dtype("auto", device, "fast", cross_encoder)
    return Trial("fp8", "fast", "fp8", fallback, device_name)


def cpu_trial(backend: str, units: list[str], device_name: str) -> Trial:
    """bf16 where the CPU has bf16 units, fp32 otherwise; cross-encoders are compared on fewer pairs,
    since a CPU runs the fp32 pass of a large reranker at a few hundred tokens a second."""
    if not units:
        why = "this CPU has no bf16 units (avx512_bf16, amx_bf16 or Arm bf16); serving fp32"
        return Trial("auto", backend, None, "fp32", device_name, why=why)
    return Trial("auto", backend, "bf16", "fp32", device_name, must_be_faster=True, rerank_queries=2)


def trial_for(requested: str, resolved: str, device: str, backend: str, cross_encoder: bool) -> Trial | None:
    """The trial a load runs for the `requested` dtype setting (`resolved` by choose.resolve_dtype)."""
    if resolved == "fp8":
        import torch

        # The verdict is per GPU model: another card rounds the same products differently.
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
        return fp8_trial(device, name, cross_encoder)
    if requested == "auto" and device == "cpu" and backend in TORCH_BACKENDS:
        units = bf16_units()
        return cpu_trial(backend, units, f"{cpu_name()} ({', '.join(units) or 'no bf16'})")
    return None
