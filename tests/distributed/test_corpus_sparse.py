"""`--sparse-format` in a corpus job: each store's form as Parquet columns, the engine's weights, the
same schema in every part (one with no good row too), so the folder reads back as one dataset."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m3engine.cli.main import main
from m3engine.distributed.corpus import run
from m3engine.engine import Engine
from m3engine.tasks.options import EmbedOptions
from tests.distributed.corpus_data import job

# rows 8..15 are empty: the second part has no good row, and must still have the others' columns
TEXTS = [
    "  " if 8 <= i < 16 else f"passage {i}: " + " ".join(f"w{(i * 5 + k) % 40}" for k in range(1 + i % 7))
    for i in range(24)
]
GOOD = [i for i in range(24) if not 8 <= i < 16]


def _weights(row: dict[str, Any], style: str, vocab: int) -> dict[str, float]:
    """A row's sparse weights as {key: value}, read back from the style's columns."""
    if style == "indices_values":
        return {str(i): v for i, v in zip(row["sparse_indices"], row["sparse_values"], strict=True)}
    if style == "pgvector":  # '{6208:0.25,...}/250002': 1-based, the vocabulary as dimensions
        body, dim = row["sparse"].split("/")
        assert int(dim) == vocab
        pairs = [item.split(":") for item in body.strip("{}").split(",") if item]
        return {str(int(i) - 1): float(v) for i, v in pairs}
    if style == "tei":
        return {str(item["index"]): item["value"] for item in row["sparse"]}
    return dict(row["sparse"])  # a map column: (key, value) pairs


@pytest.mark.parametrize(
    ("style", "tokens", "columns"),
    [
        ("indices_values", True, {"sparse_indices", "sparse_values", "sparse_tokens"}),
        ("pgvector", False, {"sparse"}),
        ("tei", False, {"sparse"}),
        ("flag_dict", False, {"sparse"}),
        ("elasticsearch", True, {"sparse"}),
    ],
)
def test_each_format_is_the_engines_weights(
    tmp_path: Path, bge_m3_dir: Path, style: str, tokens: bool, columns: set[str]
) -> None:
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS))
    )
    the_job = dataclasses.replace(
        job(tmp_path / "in.jsonl", tmp_path / "out", bge_m3_dir, 8),
        options=EmbedOptions(dense=False, sparse=True),
        sparse_format=style,
        sparse_tokens=tokens,
    )
    assert run(the_job, quiet=True)["failed"] == 8
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    schemas = [pq.read_schema(p) for p in parts]
    assert all(s.equals(schemas[0]) for s in schemas) and pq.read_table(parts[1]).num_rows == 0
    table = pq.read_table(tmp_path / "out")  # the folder as one dataset
    assert set(table.column_names) == {"id", "num_tokens", "truncated"} | columns
    engine = Engine.from_settings(the_job.engine)
    vocab = engine.spec.vocab_size
    expected = engine.embed([TEXTS[i] for i in GOOD], dense=False, sparse=True)
    rows = table.sort_by("id").to_pylist()
    assert [r["id"] for r in rows] == GOOD
    for row, want in zip(rows, expected, strict=True):
        assert want.sparse is not None
        names = [engine.tokenizer.id_to_token(int(i)) for i in want.sparse.indices]
        keys = names if style == "elasticsearch" else [str(int(i)) for i in want.sparse.indices]
        got = _weights(row, style, vocab)
        assert list(got) == keys  # the same tokens, in the same order
        np.testing.assert_allclose(list(got.values()), want.sparse.values, rtol=1e-5, atol=1e-6)
        if style == "indices_values":
            assert row["sparse_tokens"] == names


def test_the_cli_takes_sparse_format_for_a_folder(
    tmp_path: Path, bge_m3_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.txt").write_text("one text\nanother text\n")
    flags = ["--sparse", "--sparse-format", "vespa", "--model", str(bge_m3_dir), "--device", "cpu"]
    assert main(["embed", str(tmp_path / "in.txt"), "--output", str(tmp_path / "out"), *flags]) == 0
    assert json.loads(capsys.readouterr().out)["embedded"] == 2
    table = pq.read_table(tmp_path / "out")
    assert table.schema.field("sparse").type == pa.map_(pa.string(), pa.float32())
    assert all(len(r["sparse"]) > 0 for r in table.to_pylist())


def test_an_unknown_format_is_refused_with_the_known_ones(tmp_path: Path, bge_m3_dir: Path) -> None:
    from m3engine.errors import InputError

    with pytest.raises(InputError, match="pgvector"):
        dataclasses.replace(job(tmp_path, tmp_path / "out", bge_m3_dir), sparse_format="solr")
