"""`m3engine embed --sparse-format`: each store's form in JSONL and Parquet, the same weights the
engine gives."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from m3engine import Engine
from m3engine.cli.main import main

TEXTS = ["the cat sat on the mat.", "stocks rose 3.5% on Monday", "a recipe for bread"]


def _embed(bge_m3_dir: Path, tmp_path: Path, out: str, *flags: str) -> Path:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    target = tmp_path / out
    args = ["embed", "--input", str(source), "--sparse", "--no-dense", "--output", str(target)]
    assert main([*args, *flags, "--model", str(bge_m3_dir), "--device", "cpu"]) == 0
    return target


def test_pgvector_column_reads_back_through_pgvector(
    bge_m3: Engine, bge_m3_dir: Path, tmp_path: Path
) -> None:
    pgvector = pytest.importorskip("pgvector")
    rows = pq.read_table(
        _embed(bge_m3_dir, tmp_path, "out.parquet", "--sparse-format", "pgvector")
    ).to_pylist()
    expected = bge_m3.embed(TEXTS, dense=False, sparse=True)
    for row, want in zip(rows, expected, strict=True):
        assert want.sparse is not None
        parsed = pgvector.SparseVector.from_text(row["sparse"])
        assert parsed.indices() == want.sparse.indices.tolist()
        assert parsed.dimensions() == bge_m3.spec.vocab_size


def test_keyed_forms_in_parquet_and_jsonl(bge_m3: Engine, bge_m3_dir: Path, tmp_path: Path) -> None:
    expected = bge_m3.embed(TEXTS, dense=False, sparse=True)
    vespa = pq.read_table(_embed(bge_m3_dir, tmp_path, "v.parquet", "--sparse-format", "vespa")).to_pylist()
    for row, want in zip(vespa, expected, strict=True):
        assert want.sparse is not None
        assert dict(row["sparse"]) == pytest.approx(want.sparse.to_vespa())  # a map<string, float> column
    out = _embed(bge_m3_dir, tmp_path, "es.jsonl", "--sparse-format", "elasticsearch", "--sparse-tokens")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for line, want in zip(lines, expected, strict=True):
        assert want.sparse is not None
        tokens = [bge_m3.tokenizer.id_to_token(int(i)) for i in want.sparse.indices]
        assert line["sparse"] == pytest.approx(want.sparse.to_elasticsearch(tokens))
    tei = pq.read_table(_embed(bge_m3_dir, tmp_path, "t.parquet", "--sparse-format", "tei")).to_pylist()
    assert [x["index"] for x in tei[0]["sparse"]] == expected[0].sparse.indices.tolist()  # type: ignore[union-attr]
    tokens = pq.read_table(_embed(bge_m3_dir, tmp_path, "iv.parquet", "--sparse-tokens")).to_pylist()
    assert len(tokens[1]["sparse_tokens"]) == len(tokens[1]["sparse_indices"])


def test_an_unknown_format_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["embed", "--text", "x", "--sparse", "--sparse-format", "solr"])
    assert caught.value.code == 2 and "pgvector" in capsys.readouterr().err
