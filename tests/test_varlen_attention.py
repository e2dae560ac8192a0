"""The Triton varlen attention kernel (CPU, Triton's interpreter in a child process) and its block table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_under_interpreter() -> None:
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.varlen_attention_checks"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "torch.float32 64x64" in done.stdout and "torch.float16 16x16" in done.stdout
    assert "plan blocks ok" in done.stdout and "engine hook ok" in done.stdout
    assert "varlen attention ok" in done.stdout


def test_triton_attention_only_where_flash_would_run(bge_m3_dir: Path) -> None:
    """CUDA in half precision takes the Triton kernels where Triton is installed; the CPU and fp32
    never do (the plain encoder, attention per sequence)."""
    from m3engine.backends.fast import FastBackend
    from m3engine.models.spec import inspect_model
    from m3engine.types import TokenIds

    spec = inspect_model(bge_m3_dir)
    backend = FastBackend(spec, TokenIds(1, frozenset({0, 1, 2})), device="cpu", dtype="fp32")
    assert backend.precision == "fp32 everywhere" and backend.graphs is None


def test_only_batches_of_long_sequences_attend_per_sequence() -> None:
    from m3engine.backends.fast.encoder import LONG_SEQUENCE, per_sequence_faster

    assert per_sequence_faster((LONG_SEQUENCE, 3 * LONG_SEQUENCE))
    assert not per_sequence_faster((LONG_SEQUENCE, LONG_SEQUENCE - 1))
    assert not per_sequence_faster(())  # a graph's capture: no lengths on the host
