"""Fixtures of the GPU tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gpu.long_checkpoint import build_long_bge_m3


@pytest.fixture(scope="session")
def long_dir(bge_m3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BGE-M3's layout with a 64-wide encoder (head_dim 16), 8,194 positions, init std 0.02."""
    return build_long_bge_m3(bge_m3_dir, tmp_path_factory.mktemp("bge-m3-long"))
