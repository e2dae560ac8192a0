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


def test_default_attention_stays_flash() -> None:
    from m3engine.backends.fast import encoder

    assert encoder.ATTENTION_KERNEL == "flash"
