"""The Triton varlen attention kernel (CPU, Triton's interpreter in a child process) and its block table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    assert "varlen attention ok" in done.stdout


def test_plan_blocks_maps_slots_to_query_blocks() -> None:
    pytest.importorskip("triton")
    from m3engine.backends.fast.varlen_attention import plan_blocks

    lengths = [1, 0, 16, 17, 40]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    table = plan_blocks(cu, total=sum(lengths) + 3, max_len=40, block_m=16)
    assert table.dtype == torch.int32 and table.shape[1] == 2
    real = [(0, 0), (2, 0), (3, 0), (3, 1), (4, 0), (4, 1), (4, 2)]  # ceil(n / 16) blocks each
    assert [tuple(r) for r in table[: len(real)].tolist()] == real
    assert (table[len(real) :, 0] == len(lengths)).all()  # the upper bound's spare slots: no sequence


def test_plan_blocks_bound_holds_for_graph_padding() -> None:
    """cu_seqlens padded with empty sequences (graphs.py) and max_len rounded up still fit the table."""
    pytest.importorskip("triton")
    from m3engine.backends.fast.varlen_attention import plan_blocks

    for lengths, block in (([64] * 8, 64), ([1] * 30, 32), ([200, 3, 129], 64), ([16, 16, 16, 0, 0], 16)):
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        table = plan_blocks(cu, total=sum(lengths), max_len=max(lengths), block_m=block)
        needed = sum(-(-n // block) for n in lengths)
        assert table.shape[0] >= needed and int((table[:, 0] < len(lengths)).sum()) == needed


def test_default_attention_stays_flash() -> None:
    from m3engine.backends.fast import encoder

    assert encoder.ATTENTION_KERNEL == "flash"
