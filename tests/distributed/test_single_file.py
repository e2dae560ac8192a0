"""`m3engine embed INPUT --output vectors.parquet`: one file with the columns of a folder job's parts,
joined from them at the end, resumable after a kill; bad rows beside it in vectors.errors.jsonl."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m3engine.cli.main import main
from m3engine.distributed.corpus import run
from m3engine.errors import InputError
from m3engine.tasks.options import EmbedOptions
from tests.distributed.corpus_data import BAD, assert_same_rows, job, read_output, write_jsonl
from tests.fakes import BACKEND, process_env


def test_the_file_has_the_rows_of_the_folders_parts(tmp_path: Path, bge_m3_dir: Path) -> None:
    good = write_jsonl(tmp_path / "in.jsonl", 120)
    folder = run(job(tmp_path / "in.jsonl", tmp_path / "out", bge_m3_dir), quiet=True)
    single = run(job(tmp_path / "in.jsonl", tmp_path / "vectors.parquet", bge_m3_dir), quiet=True)
    assert single["embedded"] == folder["embedded"] == 116 and single["shards"] == 3
    parts = read_output(tmp_path / "out")
    table = pq.read_table(tmp_path / "vectors.parquet")
    assert table.schema == parts.schema  # the one layout: id, fixed-size dense, sparse pair, ColBERT
    assert table.column("id").to_pylist() == [i for i, _ in good]  # input order, every row once
    assert_same_rows(table.sort_by("id"), parts)
    # what is left: the file and its bad rows, no work folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.jsonl",
        "out",
        "vectors.errors.jsonl",
        "vectors.parquet",
    ]
    errors = [json.loads(line) for line in (tmp_path / "vectors.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["doc-7", "doc-19", 33, "doc-41"] and len(BAD) == 4
    assert single["errors_file"] == str(tmp_path / "vectors.errors.jsonl")


def test_a_killed_run_resumes_from_its_finished_parts(
    tmp_path: Path, bge_m3_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_jsonl(tmp_path / "in.jsonl", 200)
    out, work = tmp_path / "vectors.parquet", tmp_path / ".vectors.parquet.parts"
    cmd = [sys.executable, "-m", "m3engine", "embed", str(tmp_path / "in.jsonl"), "--output", str(out)]
    flags = ["--model", str(bge_m3_dir), "--backend", BACKEND, "--shard-rows", "20", "--max-batch-size", "4"]
    env = process_env(M3ENGINE_FAKE_DELAY_S="0.05")  # ~0.25 s a shard: the kill lands mid-job
    proc = subprocess.Popen([*cmd, *flags], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(work.glob("part-*.parquet"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = len(list(work.glob("part-*.parquet")))
    assert 2 <= finished < 10 and not out.exists(), "killed mid-job, before the file is written"
    assert main([*cmd[3:], *flags]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_shards"] == finished
    assert not work.exists()
    ids = pq.read_table(out).column("id").to_pylist()
    assert ids == [i for i, _ in good]  # every row once: the finished parts were not run again
    assert len((tmp_path / "vectors.errors.jsonl").read_text().splitlines()) == len(BAD)


def test_a_text_file_and_mixed_ids(tmp_path: Path, bge_m3_dir: Path) -> None:
    """A .txt input (a line a text, CRLF or LF; a line that is not UTF-8 is a bad row), and text ids
    in a file where one shard has no good row (its part's id column is int64 with no rows)."""
    lines = [b"first text\r\n", b"\r\n", b"caf\xe9 au lait\n", b"fourth text\n"]
    (tmp_path / "in.txt").write_bytes(b"".join(lines))
    summary = run(job(tmp_path / "in.txt", tmp_path / "t.parquet", bge_m3_dir, 2), quiet=True)
    assert summary["embedded"] == 2 and summary["failed"] == 2
    assert pq.read_table(tmp_path / "t.parquet").column("id").to_pylist() == [0, 3]
    errors = [json.loads(x) for x in (tmp_path / "t.errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == [1, 2]
    assert "empty" in errors[0]["reason"] and "not UTF-8" in errors[1]["reason"]
    rows = [{"id": f"d{i}", "text": "  " if 10 <= i < 20 else f"text {i}"} for i in range(30)]
    (tmp_path / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(job(tmp_path / "mixed.jsonl", tmp_path / "m.parquet", bge_m3_dir, 10), quiet=True)
    table = pq.read_table(tmp_path / "m.parquet")
    assert table.schema.field("id").type == pa.string()
    assert table.column("id").to_pylist() == [f"d{i}" for i in [*range(10), *range(20, 30)]]


def test_parts_of_other_options_are_refused_not_mixed(tmp_path: Path, bge_m3_dir: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 80)
    dense_only = dataclasses.replace(
        job(tmp_path / "in.jsonl", tmp_path / ".v.parquet.parts", bge_m3_dir), options=EmbedOptions()
    )
    run(dense_only, quiet=True)  # as a run with other options would have left its work folder
    (tmp_path / ".v.parquet.parts" / "part-00000-0000000040.parquet").unlink()
    with pytest.raises(InputError, match="other options"):
        run(job(tmp_path / "in.jsonl", tmp_path / "v.parquet", bge_m3_dir), quiet=True)
    assert not (tmp_path / "v.parquet").exists()


def test_the_cli_routes_parquet_to_the_job_and_refuses_what_it_cannot_write(
    tmp_path: Path, bge_m3_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 10)
    model = ["--model", str(bge_m3_dir), "--device", "cpu"]
    assert (
        main(
            ["embed", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "a.parquet"), *model]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(tmp_path / "a.parquet") and summary["failed"] == 1
    assert main(["embed", "--text", "x", "--output", str(tmp_path / "b.parquet"), *model]) == 2
    assert "put the texts in a file" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "c.jsonl"), "--ray"]) == 2
    assert "FOLDER (parts) or FILE.parquet" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert (
        main(["embed", str(tmp_path / "empty.jsonl"), "--output", str(tmp_path / "d.parquet"), *model]) == 2
    )
    assert "has no rows" in capsys.readouterr().err and not (tmp_path / ".d.parquet.parts").exists()


def test_a_folder_input_leaves_its_txt_files_out(tmp_path: Path) -> None:
    """A folder's .txt files (a README) are not texts to embed; a .txt file named alone is."""
    from m3engine.distributed.job import CorpusJob, input_files
    from m3engine.errors import InputError

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"id": 1, "text": "x"}\n')
    (tmp_path / "data" / "README.txt").write_text("not a corpus\n")
    _, files = input_files(CorpusJob(str(tmp_path / "data"), str(tmp_path / "out")))
    assert [Path(p).name for p, _ in files] == ["a.jsonl"]
    _, files = input_files(CorpusJob(str(tmp_path / "data" / "README.txt"), str(tmp_path / "out")))
    assert [fmt for _, fmt in files] == ["txt"]
    (tmp_path / "data" / "a.jsonl").unlink()
    with pytest.raises(InputError, match="glob"):
        input_files(CorpusJob(str(tmp_path / "data"), str(tmp_path / "out")))
