"""The one interface between the engine and whatever runs the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from m3engine.types import BatchOutputs, HeadRequest, PackedBatch


@dataclass(frozen=True)
class BackendInfo:
    name: str  # registry name: reference, fast, onnx
    device: str  # cpu, cuda, cuda:1
    dtype: str  # fp32, fp16, bf16
    padded: bool  # whether a batch costs max_len * n tokens (True) or sum(len) (False)


@runtime_checkable
class Backend(Protocol):
    """Runs the encoder and the requested heads; knows tensors, never HTTP or text.

    `forward` must return one row per sequence of `batch`, in batch order. It may be called from
    one thread at a time.

    Optional methods, found with getattr: `warmup()` (capture graphs before serving) and
    `launch(batch, heads) -> Pending` (pending.py): queue the batch and return before it has run,
    so that the engine can launch the next batch before it collects this one. Without `launch`
    the engine calls `forward`.
    """

    info: BackendInfo

    def forward(self, batch: PackedBatch, heads: HeadRequest) -> BatchOutputs: ...

    def colbert_dim(self) -> int | None: ...
