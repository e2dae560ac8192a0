"""Reading texts from files and writing embeddings to files, for the CLI.

In: .txt (one text per line), .jsonl (a string or an object per line), .parquet (a string column).
Out: .jsonl (one record per text), .parquet (one row per text), .npy (the dense matrix only); sparse
weights in the form `--sparse-format` names (m3engine/sparse_formats.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from m3engine.errors import InputError
from m3engine.results import Embedding
from m3engine.sparse_formats import SparseFormat
from m3engine.types import SparseVector

READ_SUFFIXES = (".txt", ".jsonl", ".parquet")
WRITE_SUFFIXES = (".jsonl", ".parquet", ".npy")


def read_texts(path: Path, field: str = "text") -> list[str]:
    """All texts of a file, in order; a line or row that is not text is an error naming its place."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} does not exist")
    if suffix == ".txt":
        with path.open(encoding="utf-8") as f:
            return [line.rstrip("\n").rstrip("\r") for line in f]
    if suffix == ".jsonl":
        return list(_read_jsonl(path, field))
    if suffix == ".parquet":
        table = pq.read_table(path)
        if field not in table.column_names:
            raise InputError(f"{path} has no column {field!r} (columns: {table.column_names}); pass --field")
        texts: list[str] = []
        for row, value in enumerate(table.column(field).to_pylist()):
            if not isinstance(value, str):
                raise InputError(
                    f"{path} row {row}: column {field!r} holds a {type(value).__name__}, not text"
                )
            texts.append(value)
        return texts
    raise InputError(f"cannot read {path.name}: use one of {', '.join(READ_SUFFIXES)}")


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number} is not valid JSON ({error.msg})") from None
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict) and isinstance(item.get(field), str):
                yield item[field]
            else:
                raise InputError(
                    f"{path}:{number} is neither a JSON string nor an object with a {field!r} string"
                )


class EmbeddingWriter:
    """Writes Embedding records chunk by chunk to .jsonl, .parquet or .npy (or JSONL to a stream).

    A file is written under a temporary name beside it and renamed only by `close(ok=True)`, so a
    failed run leaves no half-written output behind.
    """

    def __init__(self, path: Path | None, stream: IO[str] | None = None) -> None:
        self.path = path
        self.sparse = SparseFormat()  # the CLI sets the chosen form once the model is loaded
        self.suffix = path.suffix.lower() if path else ".jsonl"
        if self.suffix not in WRITE_SUFFIXES:
            raise InputError(f"cannot write {path}: use one of {', '.join(WRITE_SUFFIXES)}")
        if path is not None and not path.parent.is_dir():
            raise InputError(f"output folder {str(path.parent)!r} does not exist; create it first")
        self._partial = path.with_name(f".{path.name}.partial") if path else None
        self._stream = stream
        self._file: IO[str] | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._dense: list[np.ndarray] = []

    def check_outputs(self, sparse: bool, colbert: bool) -> None:
        if self.suffix == ".npy" and (sparse or colbert):
            raise InputError(
                ".npy holds the dense matrix only; write sparse or ColBERT outputs to .jsonl or .parquet"
            )

    def write(self, records: Sequence[Embedding], offset: int = 0) -> None:
        if self.suffix == ".npy":
            self._dense.extend(r.dense for r in records if r.dense is not None)
        elif self.suffix == ".parquet":
            table = _to_table(records, offset, self.sparse)
            if self._parquet is None:
                assert self._partial is not None
                self._parquet = pq.ParquetWriter(self._partial, table.schema)
            self._parquet.write_table(table)
        else:
            if self._file is None and self._partial is not None:
                self._file = self._partial.open("w", encoding="utf-8")
            out = self._file or self._stream
            assert out is not None
            for r in records:
                item = r.to_json()
                item["index"] = r.index + offset
                if r.sparse is not None:
                    item["sparse"] = self.sparse.render(r.sparse)
                out.write(json.dumps(item, ensure_ascii=False) + "\n")

    def close(self, ok: bool = True) -> None:
        """Finish the file and move it into place (ok), or throw the partial file away."""
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            self._file.close()
        if self._partial is None or self.path is None:
            return
        if ok and self.suffix == ".npy":
            with self._partial.open("wb") as f:
                np.save(f, np.stack(self._dense).astype(np.float32) if self._dense else np.zeros((0, 0)))
        if ok and self._partial.exists():
            self._partial.replace(self.path)
        else:
            self._partial.unlink(missing_ok=True)


def _to_table(records: Sequence[Embedding], offset: int, sparse: SparseFormat) -> pa.Table:
    columns: dict[str, Any] = {
        "index": pa.array([r.index + offset for r in records], pa.int64()),
        "num_tokens": pa.array([r.num_tokens for r in records], pa.int32()),
        "truncated": pa.array([r.truncated for r in records], pa.bool_()),
    }
    first = records[0]
    if first.dense is not None:
        columns["dense"] = pa.array([r.dense for r in records], pa.list_(pa.float32()))
    if first.sparse is not None:
        columns.update(_sparse_columns([r.sparse for r in records if r.sparse is not None], sparse))
    if first.colbert is not None:
        columns["colbert"] = pa.array(
            [list(r.colbert) for r in records if r.colbert is not None], pa.list_(pa.list_(pa.float32()))
        )
    return pa.table(columns)


def _sparse_columns(weights: Sequence[SparseVector], sparse: SparseFormat) -> dict[str, pa.Array]:
    """Two list columns for indices_values (as before: what Qdrant and Milvus load); one `sparse`
    column in the store's own form otherwise: sparsevec text for pgvector (COPY loads it), a
    map<string, float> for the keyed forms (a JSON object per row once read back), a list of
    {index, value} for TEI's."""
    if sparse.style == "indices_values":
        columns = {
            "sparse_indices": pa.array([w.indices for w in weights], pa.list_(pa.int64())),
            "sparse_values": pa.array([w.values for w in weights], pa.list_(pa.float32())),
        }
        if sparse.token_of is not None:
            columns["sparse_tokens"] = pa.array([sparse.render(w)["tokens"] for w in weights])
        return columns
    rendered = [sparse.render(w) for w in weights]
    if sparse.style == "pgvector":
        return {"sparse": pa.array(rendered, pa.string())}
    if sparse.style == "tei":
        item = pa.struct([("index", pa.int64()), ("value", pa.float32())])
        return {"sparse": pa.array(rendered, pa.list_(item))}
    pairs = [list(r.items()) for r in rendered]
    return {"sparse": pa.array(pairs, pa.map_(pa.string(), pa.float32()))}
