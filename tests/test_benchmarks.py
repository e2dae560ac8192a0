"""The maintained benchmarks (benchmarks/): each answers --help, and the ones with a CPU dry run
finish it and print what their docstring promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "workloads.py")


def _run(script: str, *args: str, timeout: float = 120) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_kept_benchmarks() -> None:
    assert SCRIPTS == ["cpu_paths.py", "gemm_floor.py", "serve_ab.py", "settings_ab.py", "timeline.py"]
    assert len(SCRIPTS) <= 5  # maintained tools, not probes: a sixth means one of these goes


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    out = _run(script, "--help")
    assert f"python benchmarks/{script}" in out  # the docstring's command line


def test_gemm_floor_dry_run() -> None:
    out = _run("gemm_floor.py", "--device", "cpu", "--batch", "32", "--square", "64", "--runs", "1")
    lines = [line for line in out.splitlines() if line.startswith(("bf16:", "fp16:"))]
    assert len(lines) == 2 and all("products alone for 32991 tokens x 24 layers" in x for x in lines)


def test_cpu_paths_dry_run(bge_m3_dir: Path, tmp_path: Path) -> None:
    out = _run(
        "cpu_paths.py",
        *("--model", str(bge_m3_dir), "--cache-dir", str(tmp_path), "--rounds", "1"),
        *("--passages", "6", "--corpus", "12", "--queries", "3"),
    )
    rows = [line.split("  ")[0] for line in out.splitlines()[2:]]
    assert rows[0] == "torch fp32 (reference)" and rows[1].startswith("m3engine auto (reference ")
    assert {"torch bf16 (reference)", "torch bf16 (fast)"} <= set(rows)
    assert list(tmp_path.rglob("*.json")) or "auto (reference fp32)" in out  # auto's verdict, cached


def test_settings_ab_dry_run() -> None:
    out = _run(
        "settings_ab.py",
        *("--tiny", "--device", "cpu", "--workloads", "passages", "--passages", "12", "--rounds", "1"),
        *("--config", "max_batch_tokens=256", "--config", "max_batch_tokens=1024,max_batch_size=4"),
    )
    assert "max_batch_tokens=256: passages" in out and "(1.000x)" in out
    assert "max_batch_tokens=1024,max_batch_size=4: passages" in out


def test_settings_ab_without_config_times_the_defaults() -> None:
    out = _run(
        "settings_ab.py",
        *("--tiny", "--device", "cpu", "--workloads", "passages", "--passages", "12", "--rounds", "1"),
    )
    assert "defaults: passages" in out and "defaults: first pass passages" in out


def test_settings_ab_refuses_an_unknown_field() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "settings_ab.py"), "--config", "no_such_field=1"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no_such_field=1" in done.stderr


def test_timeline_dry_run() -> None:
    out = _run(
        "timeline.py",
        *("--tiny", "--device", "cpu", "--backend", "fast", "--passages", "24", "--max-batch-tokens", "512"),
        *("--warmup", "1"),
    )
    batches = [line for line in out.splitlines() if "batch of" in line]
    assert len(batches) >= 2  # a small token budget cuts the call into several forward passes
    assert "passages:" in out and "k tok/s" in out


def test_timeline_with_a_simulated_device() -> None:
    out = _run(
        "timeline.py",
        *("--tiny", "--workload", "passages", "--passages", "24", "--max-batch-tokens", "512"),
        *("--warmup", "1", "--simulated-device", "20"),
    )
    batches = [line for line in out.splitlines() if "batch of" in line]
    busy = next(line for line in out.splitlines() if line.startswith("simulated device: busy"))
    # 20 us a token for every token the batches hold, plus each batch's launch: the device's time
    tokens = sum(int(line.split("inputs,")[1].split("tokens")[0]) for line in batches)
    busy_ms = float(busy.split("busy ")[1].split(" ms")[0])
    assert len(batches) >= 2 and abs(busy_ms - (tokens * 0.02 + len(batches) * 0.3)) < 1.0
