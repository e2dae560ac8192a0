"""The one interface between the engine and whatever runs the model.

A backend turns a packed batch (types.PackedBatch) into the outputs its heads were asked for
(types.BatchOutputs), one row per sequence, in batch order. It knows tensors, never HTTP or text.

    >>> pending = backend.launch(batch, HeadRequest(dense=True))  # queued, may not have run yet
    >>> outputs = pending.result()                                # waits, then builds on the host

`launch` is the one required method: the engine's in-process pipeline and the server's worker both
launch batch i + 1 before they collect batch i, so a backend that can queue work (the fast backend on
CUDA) overlaps the host's share of one batch with the device's work on the next. A backend that
computes synchronously returns `Ready(outputs)`. `launch` is called from one thread at a time;
`result()` of an earlier batch may run on another thread meanwhile.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

from m3engine.types import BatchOutputs, HeadRequest, PackedBatch


@dataclass(frozen=True)
class BackendInfo:
    name: str  # registry name: reference, fast, onnx
    device: str  # cpu, cuda, cuda:1
    dtype: str  # fp32, fp16, bf16, fp8, int8
    padded: bool  # whether a batch costs max_len * n tokens (True) or sum(len) (False)
    colbert_dim: int | None = None  # width of BGE-M3's ColBERT vectors; None without that head


@dataclass(frozen=True)
class BatchLimits:
    """The shapes the scheduler's batches can take (EngineSettings and the model): what a warm-up
    must prepare for, so that no first batch of a shape pays for a compile, a capture or an
    allocation."""

    max_tokens: int  # tokens of one batch (max_batch_tokens; padded tokens for padded backends)
    max_seqs: int  # sequences of one batch (max_batch_size)
    max_length: int  # the longest sequence
    heads: tuple[HeadRequest, ...]  # every head request the model's tasks make


class Pending(Protocol):
    """A launched batch."""

    def done(self) -> bool:
        """Whether `result()` would return without waiting on the device."""
        ...

    def result(self) -> BatchOutputs: ...


class Ready:
    """A batch already computed (a backend that runs synchronously)."""

    def __init__(self, outputs: BatchOutputs) -> None:
        self._outputs = outputs

    def done(self) -> bool:
        return True

    def result(self) -> BatchOutputs:
        return self._outputs


class Backend(ABC):
    """Runs the encoder and the requested heads.

    Built by backends/registry.py as `Factory(spec=ModelSpec, tokens=TokenIds, device=str, dtype=str)`.
    """

    info: BackendInfo

    @abstractmethod
    def launch(self, batch: PackedBatch, heads: HeadRequest) -> Pending:
        """Queue `batch` and return; the returned Pending's `result()` gives one row per sequence."""

    def forward(self, batch: PackedBatch, heads: HeadRequest) -> BatchOutputs:
        """`launch` and wait."""
        return self.launch(batch, heads).result()

    def warmup(self, limits: BatchLimits) -> None:  # noqa: B027 (a hook: most have nothing to prepare)
        """Prepare, before serving, what the first batch of each shape within `limits` would
        otherwise pay for (compiled kernels, captured graphs, memory pools)."""
