"""A fake backend for server and scheduler tests: no model, deterministic outputs, failure switches.

Every output row is a function of that sequence's ids alone, so a test can tell whether results went
back to the right request and whether batching changed anything. The switches make it slow, make a
batch fail, raise an out-of-memory error above a token count, or kill the worker loop:

    backend.delay_s = 0.2            # each forward sleeps (the worker is busy)
    backend.fail_if = lambda b: ...  # raise BackendError for batches this predicate selects
    backend.oom_over_tokens = 40     # raise an OOM error for batches of more padded tokens
    backend.die = True               # raise WorkerDeath (a BaseException): the worker loop ends
    backend.device_lost = True       # raise DeviceError for every batch (a lost GPU of --devices)

In-process tests pass `delay_s`, `die_after` and `padded` to the constructor. A server started as a
process (`m3engine serve --backend tests.fakes:FakeBackend`, the repository root on PYTHONPATH)
builds it through the backend registry with spec, tokens, device and dtype only; there
M3ENGINE_FAKE_DELAY_S sets `delay_s`, M3ENGINE_FAKE_DIE_AFTER=N kills the worker after N forward
passes, and M3ENGINE_FAKE_LOSE_DEVICE=PATH loses a device while the server runs: once the test
writes N to the file PATH, the process's N-th fake backend (0-based: the device of --devices at N)
raises DeviceError for every batch.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from m3engine.backends.base import Backend, BackendInfo, BatchLimits, Ready
from m3engine.errors import BackendError, DeviceError, OutOfMemoryError
from m3engine.models.spec import ModelSpec
from m3engine.types import BatchOutputs, FloatArray, HeadRequest, PackedBatch, SparseVector, TokenIds

BACKEND = "tests.fakes:FakeBackend"  # the name `--backend` and `Engine.load(backend=...)` take
ROOT = Path(__file__).resolve().parents[1]
_BUILT = itertools.count()  # fake backends built in this process: --devices builds one per device


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a server started as a process: `m3engine` from src/ and `tests` importable."""
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", **extra}


class WorkerDeath(BaseException):
    """Not an Exception: per-batch error handling does not catch it, so it ends the worker loop."""


class FakeBackend(Backend):
    def __init__(
        self,
        spec: ModelSpec,
        tokens: TokenIds,
        device: str = "cpu",
        dtype: str = "fp32",
        *,
        delay_s: float | None = None,
        die_after: int | None = None,
        padded: bool = True,
    ) -> None:
        self.spec = spec
        # padded=False: the engine treats it as a packed backend and pipelines its bulk work
        colbert_dim = spec.hidden_size if spec.kind.value == "bge-m3" else None
        self.info = BackendInfo("fake", device, dtype, padded=padded, colbert_dim=colbert_dim)
        self._special = tokens.special_ids
        self.dim = spec.hidden_size
        self.delay_s = _env_number("M3ENGINE_FAKE_DELAY_S", float) if delay_s is None else delay_s
        self.fail_if: Callable[[PackedBatch], bool] | None = None
        self.oom_over_tokens: int | None = None
        self.die = False
        self.device_lost = False
        self.number = next(_BUILT)
        self._lose_flag = os.environ.get("M3ENGINE_FAKE_LOSE_DEVICE")
        # die on the (N+1)-th forward (tests of a server process; 0 = never)
        self.die_after = _env_number("M3ENGINE_FAKE_DIE_AFTER", int) if die_after is None else die_after
        self.seen: list[list[int]] = []  # every sequence forwarded, in order
        self.batches: list[int] = []  # sequences per forward call
        self._lock = threading.Lock()

    def launch(self, batch: PackedBatch, heads: HeadRequest) -> Ready:
        """Computed at once: the result is ready when this returns."""
        return Ready(self.forward(batch, heads))

    def warmup(self, limits: BatchLimits) -> None:
        """One short forward pass with the first head request, as a real warm-up runs passes (a
        server process's first forward, which M3ENGINE_FAKE_DIE_AFTER counts)."""
        ids = np.array([0, 5, 2], dtype=np.int64)
        self.forward(PackedBatch(input_ids=ids, cu_seqlens=np.array([0, 3], dtype=np.int64)), limits.heads[0])

    def forward(self, batch: PackedBatch, heads: HeadRequest) -> BatchOutputs:
        if self.die or (self.die_after and len(self.batches) >= self.die_after):
            raise WorkerDeath("fake backend told to die")
        if self.device_lost or self._flagged_lost():
            raise DeviceError("fake device lost")
        if self.oom_over_tokens is not None and batch.max_len * batch.num_seqs > self.oom_over_tokens:
            raise OutOfMemoryError(f"fake OOM: {batch.max_len * batch.num_seqs} padded tokens")
        if self.fail_if is not None and self.fail_if(batch):
            raise BackendError("fake backend failure")
        if self.delay_s:
            time.sleep(self.delay_s)
        bounds = batch.cu_seqlens.tolist()
        seqs = [batch.input_ids[a:b].tolist() for a, b in itertools.pairwise(bounds)]
        with self._lock:
            self.seen.extend(seqs)
            self.batches.append(len(seqs))
        out = BatchOutputs()
        if heads.dense:
            out.dense = np.stack([self.dense_of(s) for s in seqs])
        if heads.sparse:
            out.sparse = [self.sparse_of(s) for s in seqs]
        if heads.colbert:
            out.colbert = [self.colbert_of(s) for s in seqs]
        if heads.logits:
            count = max(1, len(self.spec.labels))
            out.logits = np.stack([self.logits_of(s, count) for s in seqs])
        return out

    def _flagged_lost(self) -> bool:
        if not self._lose_flag:
            return False
        try:
            return Path(self._lose_flag).read_text().strip() == str(self.number)
        except FileNotFoundError:
            return False

    # Each a function of the ids alone (batch-invariant by construction).
    def dense_of(self, ids: list[int]) -> FloatArray:
        rng = np.random.default_rng(_seed(ids))
        return rng.standard_normal(self.dim).astype(np.float32)  # (D,)

    def sparse_of(self, ids: list[int]) -> SparseVector:
        kept = sorted({t for t in ids if t not in self._special})
        values = np.array([1.0 + (t % 7) / 10 for t in kept], dtype=np.float32)
        return SparseVector(np.array(kept, dtype=np.int64), values)

    def colbert_of(self, ids: list[int]) -> FloatArray:
        rng = np.random.default_rng(_seed(ids) + 1)
        vectors = rng.standard_normal((len(ids) - 1, self.dim)).astype(np.float32)  # (len - 1, D)
        normalized: FloatArray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return normalized

    def logits_of(self, ids: list[int], count: int) -> FloatArray:
        rng = np.random.default_rng(_seed(ids) + 2)
        return (rng.standard_normal(count) * 3).astype(np.float32)  # (num_labels,)


def _env_number(name: str, kind: type[float] | type[int]) -> float:
    return kind(os.environ.get(name, "0") or 0)


def _seed(ids: list[int]) -> int:
    return hash(tuple(ids)) & 0x7FFFFFFF
