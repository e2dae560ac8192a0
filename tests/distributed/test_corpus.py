"""The corpus job in one process: the rows, the bad-row side file, resumption, Parquet input, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from m3engine.cli.main import main
from m3engine.distributed.corpus import run
from m3engine.engine import Engine
from tests.distributed.corpus_data import (
    BAD,
    assert_same_rows,
    job,
    read_output,
    write_jsonl,
    write_parquet,
)


def test_rows_are_the_engines_outputs(tmp_path: Path, bge_m3_dir: Path) -> None:
    good = write_jsonl(tmp_path / "in.jsonl", 120)
    corpus = job(tmp_path / "in.jsonl", tmp_path / "out", bge_m3_dir)
    summary = run(corpus, quiet=True)
    assert summary["rows"] == 120 and summary["embedded"] == 116 and summary["failed"] == 4
    assert summary["shards"] == 3
    table = pa.concat_tables([_part(tmp_path / "out", start) for start in (0, 40, 80)])
    assert table.column("id").to_pylist() == [i for i, _ in good]  # input order within and across parts
    engine = Engine.from_settings(corpus.engine)  # the job's settings, so the same batches
    assert table.schema.field("dense").type == pa.list_(pa.float32(), engine.spec.hidden_size)
    # each shard's good texts in one call, as the job embeds them: padded batches of other texts
    # would round the floats differently
    shards = [[t for i, t in good if int(i.split("-")[1]) // 40 == s] for s in range(3)]
    ref = [r for texts in shards for r in engine.embed(texts, options=corpus.options)]
    rows = table.to_pylist()
    for row, r in zip(rows, ref, strict=True):
        assert row["num_tokens"] == r.num_tokens
        np.testing.assert_allclose(row["dense"], r.dense, rtol=1e-5, atol=1e-6)
        assert r.sparse is not None and row["sparse_indices"] == r.sparse.indices.tolist()
        np.testing.assert_allclose(row["sparse_values"], r.sparse.values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.array(row["colbert"]), r.colbert, rtol=1e-5, atol=1e-6)


def _part(out: Path, start: int) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(out / f"part-00000-{start:010d}.parquet")


def test_bad_rows_go_to_the_side_file(tmp_path: Path, bge_m3_dir: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 60)
    run(job(tmp_path / "in.jsonl", tmp_path / "out", bge_m3_dir), quiet=True)
    errors = [
        json.loads(line)
        for f in sorted((tmp_path / "out" / "_errors").iterdir())
        for line in f.read_text().splitlines()
    ]
    # a line that is not JSON has no id: its row number stands in
    assert [e["id"] for e in errors] == ["doc-7", "doc-19", 33, "doc-41"]
    reasons = [e["reason"] for e in errors]
    assert "empty" in reasons[0] and "no 'text' field" in reasons[1]
    assert "not valid JSON" in reasons[2] and "int, not a string" in reasons[3]
    assert set(read_output(tmp_path / "out").column("id").to_pylist()).isdisjoint({f"doc-{i}" for i in BAD})


def test_a_rerun_resumes_and_skips_finished_files(tmp_path: Path, bge_m3_dir: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", 120)
    the_job = job(tmp_path / "in.jsonl", tmp_path / "out", bge_m3_dir)
    run(the_job, quiet=True)
    whole = read_output(tmp_path / "out")
    # a run that stopped half-way: one shard's file missing, a half-written temporary left behind
    (tmp_path / "out" / "part-00000-0000000040.parquet").unlink()
    (tmp_path / "out" / ".part-00000-0000000040.dead.tmp").write_bytes(b"half")
    done_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*")}
    summary = run(the_job, quiet=True)
    assert summary["skipped_shards"] == 2 and summary["rows"] == 40
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*")}
    assert {name: after[name] for name in done_before} == done_before  # finished files untouched
    assert read_output(tmp_path / "out").equals(whole)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # the killed write's temporary is gone


def test_parquet_input_through_the_cli(
    tmp_path: Path, bge_m3_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = write_parquet(tmp_path / "in.parquet", 150)
    flags = ["--shard-rows", "100", "--model", str(bge_m3_dir), "--device", "cpu"]
    code = main(["embed", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"), *flags])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["embedded"] == 150 and summary["runner"] == "local"
    table = read_output(tmp_path / "out")
    assert table.schema.field("id").type == pa.int64()  # integer ids stay integers
    assert table.column("id").to_pylist() == list(range(150))
    assert "sparse_indices" not in table.column_names  # only what was asked (dense by default)
    engine = Engine.load(str(bge_m3_dir), device="cpu", dtype="fp32")
    np.testing.assert_allclose(
        np.array(table.column("dense").to_pylist()),
        np.stack([r.dense for r in engine.embed(texts)]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_positional_input_with_a_file_output_is_the_one_file_path(tmp_path: Path, bge_m3_dir: Path) -> None:
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    flags = ["--model", str(bge_m3_dir), "--device", "cpu"]
    assert main(["embed", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.jsonl"), *flags]) == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_gzip_input_and_pieces_within_a_shard(tmp_path: Path, bge_m3_dir: Path) -> None:
    """Compressed JSONL is scanned (it cannot seek), a shard is embedded in several pieces (row
    groups): the same rows as plain JSONL read from each shard's first byte."""
    import gzip

    write_jsonl(tmp_path / "in.jsonl", 100)
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "in.jsonl.gz").write_bytes(gzip.compress((tmp_path / "in.jsonl").read_bytes()))
    run(job(tmp_path / "in.jsonl", tmp_path / "plain", bge_m3_dir), quiet=True)
    pieces = dataclasses.replace(job(tmp_path / "gz", tmp_path / "gzipped", bge_m3_dir), piece_rows=16)
    summary = run(pieces, quiet=True)
    assert summary["failed"] == 4
    # other batches (pieces of 16): padding changes the floats' last bits, nothing else
    assert_same_rows(read_output(tmp_path / "gzipped"), read_output(tmp_path / "plain"))
    assert _part(tmp_path / "gzipped", 40).num_rows == 39  # rows 40..79 but 41


def test_options_the_model_cannot_serve_fail_the_job_not_each_row(tmp_path: Path, reranker_dir: Path) -> None:
    from m3engine.errors import UnsupportedTaskError

    write_jsonl(tmp_path / "in.jsonl", 10)
    with pytest.raises(UnsupportedTaskError):
        run(job(tmp_path / "in.jsonl", tmp_path / "out", reranker_dir), quiet=True)
    assert not list((tmp_path / "out").glob("part-*"))
