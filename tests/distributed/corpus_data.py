"""Inputs of the corpus-job tests: JSONL with ids and a few bad rows, the same as Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from m3engine.distributed.corpus import CorpusJob
from m3engine.settings import EngineSettings
from m3engine.tasks.options import EmbedOptions

# (line number, what is wrong with it): the side file must name each by id, with a reason
BAD = {7: "empty", 19: "no text field", 33: "not JSON", 41: "not a string"}


def text_of(i: int) -> str:
    return f"passage {i}: " + " ".join(f"w{(i * 7 + k) % 50}" for k in range(1 + i % 13))


def write_jsonl(path: Path, rows: int) -> list[tuple[str, str]]:
    """The file, and the (id, text) of its good rows in order."""
    good = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            row: Any = {"id": f"doc-{i}", "text": text_of(i)}
            if BAD.get(i) == "empty":
                row["text"] = "  "
            elif BAD.get(i) == "no text field":
                del row["text"]
            elif BAD.get(i) == "not a string":
                row["text"] = 12
            if BAD.get(i) == "not JSON":
                f.write("{not json\n")
                continue
            f.write(json.dumps(row) + "\n")
            if i not in BAD:
                good.append((row["id"], row["text"]))
    return good


def write_parquet(path: Path, rows: int) -> list[str]:
    texts = [text_of(i) for i in range(rows)]
    pq.write_table(pa.table({"id": list(range(rows)), "text": texts}), path, row_group_size=64)
    return texts


def job(source: Path, out: Path, model: Path, shard_rows: int = 40, **settings: Any) -> CorpusJob:
    engine = EngineSettings(model=str(model), device="cpu", dtype="fp32", max_batch_tokens=2048, **settings)
    options = EmbedOptions(dense=True, sparse=True, colbert=True)
    return CorpusJob(str(source), str(out), options, engine, shard_rows=shard_rows)


def read_output(out: Path) -> pa.Table:
    return pq.read_table(out).sort_by("id")


def assert_same_rows(a: pa.Table, b: pa.Table) -> None:
    """Row for row: ids, token counts and sparse indices exactly; floats to float32 rounding (a Ray
    worker runs torch on fewer threads, which sums in another order: ~1e-6 apart)."""
    assert a.schema == b.schema and a.num_rows == b.num_rows
    for name in ("id", "num_tokens", "truncated", "sparse_indices"):
        if name in a.column_names:
            assert a.column(name).equals(b.column(name)), name
    for name in ("dense", "sparse_values"):
        if name in a.column_names:
            for x, y in zip(a.column(name).to_pylist(), b.column(name).to_pylist(), strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    if "colbert" in a.column_names:
        for x, y in zip(a.column("colbert").to_pylist(), b.column("colbert").to_pylist(), strict=True):
            np.testing.assert_allclose(np.array(x), np.array(y), rtol=1e-4, atol=1e-5)
