"""The Triton kernels and the fused / fp8 encoder, on the CPU through Triton's interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from m3engine.backends.fast.staging import fill_flat, flat_size
from m3engine.types import Encoded, PackedBatch

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_and_fused_encoder_under_interpreter(bge_m3_dir: Path) -> None:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.fast_kernel_checks", str(bge_m3_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "row kernels ok" in done.stdout and "fused fp8 ok" in done.stdout
    assert "small gemm ok" in done.stdout and "fused small-M ok" in done.stdout
    assert "fused CLS rows ok" in done.stdout


def test_flat_layout_round_trip() -> None:
    batch = PackedBatch.from_encoded([Encoded(ids=[0, 7, 2]), Encoded(ids=[0, 9, 9, 9, 2], type_ids=None)])
    tokens, seqs = 16, 4
    out = np.full(flat_size(tokens, seqs), -1, dtype=np.int64)  # poisoned: every slot must be written
    fill_flat(out, batch, 2, tokens, seqs)
    assert (out >= 0).all()
    np.testing.assert_array_equal(out[:8], batch.input_ids)
    np.testing.assert_array_equal(out[tokens : tokens + 8], [2, 3, 4, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(out[2 * tokens : 2 * tokens + 8], 0)
    np.testing.assert_array_equal(out[3 * tokens :], [0, 3, 8, 8, 8])
    np.testing.assert_array_equal(out[8:tokens], 0)


def test_flat_layout_of_one_text() -> None:
    """One sequence takes fill_flat's own branch (positions without per-token starts)."""
    batch = PackedBatch.from_encoded([Encoded(ids=[0, 7, 8, 2])])
    tokens, seqs = 16, 2
    out = np.full(flat_size(tokens, seqs), -1, dtype=np.int64)  # poisoned: every slot must be written
    fill_flat(out, batch, 2, tokens, seqs)
    np.testing.assert_array_equal(out[:tokens], [0, 7, 8, 2] + [0] * 12)
    np.testing.assert_array_equal(out[tokens : 2 * tokens], [2, 3, 4, 5] + [0] * 12)
    np.testing.assert_array_equal(out[2 * tokens : 3 * tokens], 0)
    np.testing.assert_array_equal(out[3 * tokens :], [0, 4, 4])


def test_warmup_token_counts_reach_every_small_gemm_config() -> None:
    """The load-time warm-up (FastBackend.warmup) runs one batch per count here: every config
    that a batch of any size can pick must be among theirs, or its first use compiles mid-run."""
    from m3engine.backends.fast import small_gemm as sg

    for small_m in (sg.SMALL_M, 200, 64, 8):  # the default, and limits inside and on the table's ranges
        counts = sg.warmup_token_counts(small_m)
        assert counts == sorted(set(counts)) and counts[-1] == small_m + 1
        for n, k in sg.CONFIGS:
            # the small path takes batches of up to small_m tokens, cuBLAS the rest (config None)
            warmed = {sg.config_for(n, k, m) if m <= small_m else None for m in counts}
            picked = {sg.config_for(n, k, m) if m <= small_m else None for m in range(1, 4 * small_m)}
            assert picked <= warmed, (small_m, (n, k), picked - warmed)
    assert sg.warmup_token_counts(64) == [16, 64, 65]  # only the ranges up to small_m, and one past
    assert sg.warmup_token_counts(200) == [16, 64, 128, 200, 201]
