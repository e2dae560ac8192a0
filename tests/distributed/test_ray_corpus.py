"""The corpus job on a local Ray cluster (2 CPUs): the rows of the one-process run, a killed worker."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from m3engine.distributed.corpus import CorpusJob, run
from tests.distributed.corpus_data import assert_same_rows, job, read_output, write_jsonl
from tests.fakes import BACKEND


def test_ray_writes_the_rows_of_the_one_process_run(
    tmp_path: Path, bge_m3_dir: Path, ray_cluster: Any
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 1000)
    local = run(job(tmp_path / "in.jsonl", tmp_path / "local", bge_m3_dir, 250), quiet=True)
    on_ray = run(job(tmp_path / "in.jsonl", tmp_path / "ray", bge_m3_dir, 250), ray="auto", quiet=True)
    assert on_ray["runner"] == "ray" and on_ray["embedded"] == local["embedded"] == 996
    assert on_ray["failed"] == 4
    assert_same_rows(read_output(tmp_path / "ray"), read_output(tmp_path / "local"))
    errors = sorted(p.read_text() for p in (tmp_path / "ray" / "_errors").iterdir())
    assert errors == sorted(p.read_text() for p in (tmp_path / "local" / "_errors").iterdir())


def test_ray_writes_one_file_with_a_sparse_format(tmp_path: Path, bge_m3_dir: Path, ray_cluster: Any) -> None:
    """`--output x.parquet --sparse-format tei --ray`: the parts on the workers, joined in the driver."""
    write_jsonl(tmp_path / "in.jsonl", 300)

    def tei(out: Path) -> CorpusJob:
        return dataclasses.replace(job(tmp_path / "in.jsonl", out, bge_m3_dir, 100), sparse_format="tei")

    run(tei(tmp_path / "local.parquet"), quiet=True)
    on_ray = run(tei(tmp_path / "ray.parquet"), ray="auto", quiet=True)
    assert on_ray["runner"] == "ray" and on_ray["output"] == str(tmp_path / "ray.parquet")
    local, ray = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert ray.schema == local.schema and ray.column("id").equals(local.column("id"))
    for a, b in zip(ray.column("sparse").to_pylist(), local.column("sparse").to_pylist(), strict=True):
        assert [x["index"] for x in a] == [x["index"] for x in b]
        np.testing.assert_allclose([x["value"] for x in a], [x["value"] for x in b], rtol=1e-4, atol=1e-5)
    errors = (tmp_path / "ray.errors.jsonl").read_text()
    assert errors == (tmp_path / "local.errors.jsonl").read_text() and len(errors.splitlines()) == 4
    assert not (tmp_path / ".ray.parquet.parts").exists()


def _shard_workers() -> list[psutil.Process]:
    """Ray Data's actor processes of this test's cluster (descendants of this process)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ShardActor" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_a_killed_worker_loses_no_row_and_doubles_none(
    tmp_path: Path, bge_m3_dir: Path, ray_cluster: Any
) -> None:
    good = write_jsonl(tmp_path / "in.jsonl", 400)
    # the fake backend sleeps per batch (conftest), so the job is still running when a worker dies
    the_job = job(tmp_path / "in.jsonl", tmp_path / "out", bge_m3_dir, 10, backend=BACKEND, max_batch_size=2)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(run(the_job, ray="auto", quiet=True)))
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "out").glob("part-*.parquet")):
        time.sleep(0.05)
    workers = _shard_workers()
    assert workers, "the job's actors are running"
    os.kill(workers[0].pid, signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive() and result["embedded"] == len(good)
    ids = read_output(tmp_path / "out").column("id").to_pylist()
    assert sorted(ids) == sorted(i for i, _ in good)  # every row once: none lost, none twice


@pytest.mark.slow
def test_20k_rows_equal_and_overhead(tmp_path: Path, bge_m3_dir: Path, ray_cluster: Any) -> None:
    """The issue's number: 20,000 short texts, Ray against one process; prints the overhead."""
    write_jsonl(tmp_path / "in.jsonl", 20_000)
    start = time.perf_counter()
    run(job(tmp_path / "in.jsonl", tmp_path / "local", bge_m3_dir, shard_rows=2500), quiet=True)
    local_s = time.perf_counter() - start
    start = time.perf_counter()
    run(job(tmp_path / "in.jsonl", tmp_path / "ray", bge_m3_dir, shard_rows=2500), ray="auto", quiet=True)
    ray_s = time.perf_counter() - start
    assert_same_rows(read_output(tmp_path / "ray"), read_output(tmp_path / "local"))
    print(f"\n20,000 rows: one process {local_s:.1f} s, Ray (2 CPU workers) {ray_s:.1f} s")
