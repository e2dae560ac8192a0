"""The rows of a corpus job: a shard of the input read through a pyarrow filesystem and checked
row by row. The same functions serve the one-process job and every Ray worker, so both read the
same rows (table.py writes them).

    .jsonl (.json, .jsonl.gz)   an object per line with the text field (and the id field), or a
                                JSON string per line (the text; its row number is its id)
    .parquet                    the text column (and the id column)
    .txt                        a text per line; its row number is its id

A row whose text is missing, not a string, empty, or not UTF-8 is not embedded: it goes to the side
file of errors with its id and the reason, and the job carries on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Shard:
    """Rows [start, stop) of one input file; `offset` is the file's first row in the whole input."""

    file_index: int
    path: str  # a path of the job's filesystem
    fmt: str  # "jsonl", "parquet" or "txt"
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
    Parquet, which reads by row group, and compressed text, which cannot seek)."""
    if fmt == "parquet":
        with fs.open_input_file(path) as f:
            rows = int(pq.ParquetFile(f).metadata.num_rows)
        return rows, [-1] * len(range(0, rows, every))
    seekable = not path.lower().endswith((".gz", ".bz2", ".zst", ".lz4"))  # as open_input_stream detects
    rows, starts = 0, []
    for offset, _ in _lines(fs, path):
        if rows % every == 0:
            starts.append(offset if seekable else -1)
        rows += 1
    return rows, starts


def read_shard(fs: pafs.FileSystem, shard: Shard, text_field: str, id_field: str) -> ShardRows:
    rows = ShardRows([], [], [])
    if shard.fmt == "parquet":
        records = _parquet_rows(fs, shard, text_field, id_field)
    else:
        records = _line_rows(fs, shard, text_field if shard.fmt == "jsonl" else None, id_field)
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


def _line_rows(fs: pafs.FileSystem, shard: Shard, text_field: str | None, id_field: str) -> Iterator[Record]:
    """The rows of a JSONL file (`text_field` given) or of a text file (a line is the text)."""
    first = shard.start if shard.seek >= 0 else 0
    for number, (_, raw) in enumerate(_lines(fs, shard.path, max(shard.seek, 0)), start=first):
        if number < shard.start:
            continue
        if number >= shard.stop:
            break
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield None, None, "not UTF-8 text; convert the file to UTF-8"
            continue
        if text_field is None:
            yield None, line.removesuffix("\r"), None
        else:
            yield _json_row(line, text_field, id_field)


def _json_row(line: str, text_field: str, id_field: str) -> Record:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        return None, None, f"not valid JSON ({error.msg})"
    if isinstance(item, str):  # a line that is a JSON string is the text itself
        return None, item, None
    if not isinstance(item, dict):
        return None, None, f"a JSON {type(item).__name__}, not an object with a {text_field!r} field"
    if text_field not in item:
        return item.get(id_field), None, f"no {text_field!r} field"
    return item.get(id_field), item[text_field], None


def _lines(fs: pafs.FileSystem, path: str, seek: int = 0) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of every line of a JSONL or text file from byte `seek` (blank lines too:
    each line is a row, so row numbers are stable). Offsets count the decompressed bytes. A line's
    bytes are decoded by its reader, so that one line that is not UTF-8 is that row's error."""
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
                yield position, line
                position += len(line) + 1
        if rest.strip():
            yield position, rest
