"""Issue 21, case 9: bad input files and flags end in `m3engine: error ...` (exit 2), not a traceback,
and SIGTERM during a run leaves no partial output behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from m3engine.cli.main import main
from tests.fakes import BACKEND, process_env


def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "corrupt.parquet": b"PAR1 this is not parquet at all",
        "empty.parquet": b"",
        "latin1.txt": "caf\xe9 au lait\n".encode("latin-1"),
        "surrogate.jsonl": b'"fine"\n"a\\ud800b"\n',
        "surrogate.txt": b"fine\nnul\x00byte\n",
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / name
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize(
    "name", ["corrupt.parquet", "empty.parquet", "latin1.txt", "surrogate.jsonl", "surrogate.txt"]
)
def test_a_bad_input_file_is_a_clean_error(
    tmp_path: Path, bge_m3_dir: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bad_files(tmp_path)[name]
    code = main(["embed", "--model", str(bge_m3_dir), "--backend", BACKEND, "--input", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("m3engine: error"), err
    assert "\ud800" not in err and "Traceback" not in err


def test_serve_refuses_any_origin_with_keys_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--model", "/nonexistent", "--cors-origins", "*", "--api-keys", "K"])
    err = capsys.readouterr().err
    assert code == 2 and "--cors-origins" in err and "Traceback" not in err


def test_a_corrupt_file_exits_2_as_a_process(tmp_path: Path, bge_m3_dir: Path) -> None:
    path = bad_files(tmp_path)["corrupt.parquet"]
    cmd = [sys.executable, "-m", "m3engine", "embed", "--model", str(bge_m3_dir), "--input", str(path)]
    done = subprocess.run(cmd, env=process_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_sigterm_mid_run_leaves_no_partial_file(tmp_path: Path, bge_m3_dir: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("".join(f"text number {i}\n" for i in range(400)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "m3engine", "embed", "--model", str(bge_m3_dir), "--backend", BACKEND]
    cmd += ["--input", str(source), "--output", str(out), "--chunk-size", "8", "--max-batch-size", "8"]
    env = process_env(M3ENGINE_FAKE_DELAY_S="0.05")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".out.jsonl.partial"
    deadline = time.monotonic() + 90
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), "the run never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert not partial.exists() and not out.exists()
