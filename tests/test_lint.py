"""The code style checks of `make lint`, run as tests so that CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_and_format() -> None:
    check = _run(str(BIN / "ruff"), "check", "src", "tests", "benchmarks")
    assert check.returncode == 0, check.stdout
    fmt = _run(str(BIN / "ruff"), "format", "--check", "src", "tests", "benchmarks")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_strict_on_src() -> None:
    done = _run(str(BIN / "mypy"), "src")
    assert done.returncode == 0, done.stdout
