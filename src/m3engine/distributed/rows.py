"""The rows of a corpus job: a shard of the input read through a pyarrow filesystem, checked row by
row, and its embeddings as an Arrow table.

The same functions serve the one-process job and every Ray worker, so both write the same rows:

    id            the input's id (int64 when the input's ids are integers, else text), or the row's
                  number in the whole input when the input has no id column / field
    num_tokens    int32, tokens after truncation      truncated   bool
    dense         fixed_size_list<float32>[D]
    sparse_indices, sparse_values    list<int64>, list<float32>   (BGE-M3's lexical weights)
    colbert       list<fixed_size_list<float32>[C]>               (one vector per token but the first)

A row whose text is missing, not a string or empty is not embedded: it goes to the side file of
errors with its id and the reason, and the job carries on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from m3engine.results import Embedding


@dataclass(frozen=True)
class Shard:
    """Rows [start, stop) of one input file; `offset` is the file's first row in the whole input."""

    file_index: int
    path: str  # a path of the job's filesystem
    fmt: str  # "jsonl" or "parquet"
    start: int
    stop: int
    offset: int
    # byte where row `start` begins in an uncompressed JSONL file (found while planning), so a
    # shard reads from there instead of scanning every line before it; -1: read from the beginning
    seek: int = -1

    @property
    def name(self) -> str:
        return f"part-{self.file_index:05d}-{self.start:010d}"


@dataclass
class ShardRows:
    """What a shard's rows hold: the good ones (ids and texts) and the bad ones (id, reason)."""

    ids: list[Any]
    texts: list[str]
    bad: list[tuple[Any, str]]


def count_rows(fs: pafs.FileSystem, path: str, fmt: str, every: int) -> tuple[int, list[int]]:
    """The rows of a file, and where rows 0, every, 2 * every, ... begin (bytes; -1 where unknown:
    Parquet, which reads by row group, and compressed JSONL, which cannot seek)."""
    if fmt == "parquet":
        with fs.open_input_file(path) as f:
            rows = int(pq.ParquetFile(f).metadata.num_rows)
        return rows, [-1] * len(range(0, rows, every))
    seekable = not path.lower().endswith((".gz", ".bz2", ".zst", ".lz4"))  # as open_input_stream detects
    rows, starts = 0, []
    for offset, _ in _jsonl_lines(fs, path):
        if rows % every == 0:
            starts.append(offset if seekable else -1)
        rows += 1
    return rows, starts


def read_shard(fs: pafs.FileSystem, shard: Shard, text_field: str, id_field: str) -> ShardRows:
    rows = ShardRows([], [], [])
    records = _parquet_rows(fs, shard, text_field, id_field) if shard.fmt == "parquet" else None
    if records is None:
        records = _jsonl_rows(fs, shard, text_field, id_field)
    for number, (row_id, text, problem) in enumerate(records, start=shard.offset + shard.start):
        row_id = number if row_id is None else row_id
        if problem is None and not isinstance(text, str):
            problem = f"field {text_field!r} holds a {type(text).__name__}, not a string"
        if problem is None and not text.strip():
            problem = "the text is empty"
        if problem is not None:
            rows.bad.append((row_id, problem))
        else:
            rows.ids.append(row_id)
            rows.texts.append(text)
    return rows


Record = tuple[Any, Any, "str | None"]  # (id or None, text, what is wrong or None)


def _parquet_rows(fs: pafs.FileSystem, shard: Shard, text_field: str, id_field: str) -> Iterator[Record]:
    with fs.open_input_file(shard.path) as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        columns = [c for c in (text_field, id_field) if c in names]
        groups, first, seen = [], None, 0
        for g in range(parquet.metadata.num_row_groups):  # only the row groups the shard overlaps
            size = parquet.metadata.row_group(g).num_rows
            if seen + size > shard.start and seen < shard.stop:
                groups.append(g)
                first = seen if first is None else first
            seen += size
        table = parquet.read_row_groups(groups, columns=columns) if groups else pa.table({})
    table = table.slice(shard.start - (first or 0), shard.stop - shard.start)
    count = shard.stop - shard.start
    texts = table.column(text_field).to_pylist() if text_field in columns else [None] * count
    ids = table.column(id_field).to_pylist() if id_field in columns else [None] * count
    missing = None if text_field in columns else f"the input has no column {text_field!r}"
    for row_id, text in zip(ids, texts, strict=True):
        yield row_id, text, missing or (None if text is not None else f"column {text_field!r} is null")


def _jsonl_rows(fs: pafs.FileSystem, shard: Shard, text_field: str, id_field: str) -> Iterator[Record]:
    first = shard.start if shard.seek >= 0 else 0
    for number, (_, line) in enumerate(_jsonl_lines(fs, shard.path, max(shard.seek, 0)), start=first):
        if number < shard.start:
            continue
        if number >= shard.stop:
            break
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            yield None, None, f"not valid JSON ({error.msg})"
            continue
        if isinstance(item, str):  # a line that is a JSON string is the text itself
            yield None, item, None
        elif not isinstance(item, dict):
            yield None, None, f"a JSON {type(item).__name__}, not an object with a {text_field!r} field"
        elif text_field not in item:
            yield item.get(id_field), None, f"no {text_field!r} field"
        else:
            yield item.get(id_field), item[text_field], None


def _jsonl_lines(fs: pafs.FileSystem, path: str, seek: int = 0) -> Iterator[tuple[int, str]]:
    """(byte offset, line) of every line of a JSONL file from byte `seek` (blank lines too: each
    line is a row, so row numbers are stable). Offsets count the decompressed bytes."""
    if seek:
        opened = fs.open_input_file(path)
        opened.seek(seek)
    else:
        opened = fs.open_input_stream(path, compression="detect")
    with opened as stream:
        rest, position = b"", seek
        while chunk := stream.read(1 << 20):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield position, line.decode("utf-8", errors="replace")
                position += len(line) + 1
        if rest.strip():
            yield position, rest.decode("utf-8", errors="replace")


def id_type(ids: Sequence[Any]) -> pa.DataType:
    return pa.int64() if all(isinstance(i, int) and not isinstance(i, bool) for i in ids) else pa.string()


def id_array(ids: Sequence[Any], kind: pa.DataType) -> pa.Array:
    return pa.array(ids if kind == pa.int64() else [str(i) for i in ids], kind)


@dataclass(frozen=True)
class Outputs:
    """The output columns a job asked for, and their widths (for a shard with no good row)."""

    dense: bool
    sparse: bool
    colbert: bool
    dense_dim: int | None
    colbert_dim: int | None


def embedding_table(
    ids: Sequence[Any], records: Sequence[Embedding], outputs: Outputs, id_kind: pa.DataType
) -> pa.Table:
    """The output rows of embedded texts, in the order given (`records[i]` is the row of `ids[i]`);
    `id_kind` is the shard's (`id_type` of all its ids), the same in each of its pieces."""
    columns: dict[str, pa.Array] = {
        "id": id_array(ids, id_kind),
        "num_tokens": pa.array([r.num_tokens for r in records], pa.int32()),
        "truncated": pa.array([r.truncated for r in records], pa.bool_()),
    }
    if outputs.dense:
        dim = records[0].dense.shape[0] if records and records[0].dense is not None else outputs.dense_dim
        flat: Any = np.concatenate([r.dense for r in records if r.dense is not None]) if records else []
        columns["dense"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    if outputs.sparse:
        sparse = [r.sparse for r in records if r.sparse is not None]
        columns["sparse_indices"] = pa.array([v.indices for v in sparse], pa.list_(pa.int64()))
        columns["sparse_values"] = pa.array([v.values for v in sparse], pa.list_(pa.float32()))
    if outputs.colbert:
        vectors = [np.asarray(r.colbert, np.float32) for r in records if r.colbert is not None]
        width = vectors[0].shape[1] if vectors else outputs.colbert_dim
        rows = pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate(vectors).reshape(-1) if vectors else [], pa.float32()), width
        )  # every token's vector, (sum of lengths, C); the offsets cut it per text
        offsets = np.concatenate([[0], np.cumsum([len(v) for v in vectors])]).astype(np.int32)
        columns["colbert"] = pa.ListArray.from_arrays(pa.array(offsets), rows)
    return pa.table(columns)


def errors_jsonl(bad: Sequence[tuple[Any, str]]) -> bytes:
    return b"".join(
        json.dumps({"id": row_id, "reason": reason}, ensure_ascii=False).encode() + b"\n"
        for row_id, reason in bad
    )
