"""A fake fp8 backend for the gate at load (precision/): a real backend's outputs, made inaccurate.

fp8 runs only on CUDA, so the CPU tests stand in for it with the fp32 reference backend wrapped:
`noise=0` gives the reference's own outputs (the gate passes), a noise of a few percent of each
vector's norm moves dense cosines well under the fp8 gate's 0.999 (it fails). `delay_s` makes each
batch slower by that much, for the speed half of auto's trial on a CPU (bf16 must beat fp32).
`batches` counts the batches run, so a test can tell whether a cached verdict skipped the comparison.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from m3engine.backends.base import Backend, BackendInfo, Pending, Ready
from m3engine.types import HeadRequest, PackedBatch


class NoisyBackend(Backend):
    def __init__(
        self, inner: Backend, dtype: str, noise: float = 0.0, seed: int = 0, delay_s: float = 0.0
    ) -> None:
        self.inner, self.noise, self.delay_s = inner, noise, delay_s
        self.rng = np.random.default_rng(seed)
        self.info = BackendInfo(
            name="fast", device=inner.info.device, dtype=dtype, padded=inner.info.padded,
            colbert_dim=inner.info.colbert_dim,
        )  # fmt: skip
        self.batches = 0

    def _blur(self, x: np.ndarray) -> np.ndarray:
        # noise relative to each row's norm, so the cosine drop does not depend on the model's scale
        scale = self.noise * np.linalg.norm(x, axis=-1, keepdims=True) / np.sqrt(x.shape[-1])
        return (x + scale * self.rng.standard_normal(x.shape)).astype(x.dtype)

    def launch(self, batch: PackedBatch, heads: HeadRequest) -> Pending:
        self.batches += 1
        time.sleep(self.delay_s)
        out = self.inner.forward(batch, heads)
        if self.noise:
            out = dataclasses.replace(
                out,
                dense=None if out.dense is None else self._blur(out.dense),
                colbert=None if out.colbert is None else [self._blur(c) for c in out.colbert],
                logits=None if out.logits is None else self._blur(out.logits.T).T,
            )
        return Ready(out)
