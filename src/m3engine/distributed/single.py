"""One Parquet file from a corpus job's parts: `--output vectors.parquet`.

The shards are written as in a folder job (resumable, one part each), in the work folder
`.vectors.parquet.parts/` beside the file; when every shard is done, their rows are copied into the
one file, in input order, a row group at a time (never a whole part in memory), under a temporary
name renamed when complete. Bad rows go to `vectors.errors.jsonl` beside it. Then the work folder is
removed: the file is the job's only output, with the columns of a folder job's parts (table.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from m3engine.distributed.job import ERRORS_DIR, CorpusJob, filesystem
from m3engine.errors import InputError


def errors_path(output: str) -> str:
    """`vectors.parquet` -> `vectors.errors.jsonl`, beside it."""
    return output[: -len(".parquet")] + ".errors.jsonl"


def join_parts(job: CorpusJob, names: Sequence[str]) -> dict[str, Any]:
    """Write the job's file from the parts `names` (this plan's shards, in input order: parts of an
    earlier plan with another --shard-rows are not this job's) and remove the work folder."""
    fs, folder = filesystem(job.folder)
    _, target = filesystem(job.output)
    paths = [f"{folder}/{name}.parquet" for name in names]
    schema = _schema([_metadata(fs, path) for path in paths], job.folder)
    temporary = f"{folder}/.joined.{uuid.uuid4().hex}.tmp"  # a run killed here: the next one clears it
    with fs.open_output_stream(temporary) as out, pq.ParquetWriter(out, schema) as writer:
        for path in paths:  # one part open at a time: a corpus may have thousands
            with fs.open_input_file(path) as f:
                part = pq.ParquetFile(f)
                for group in range(part.metadata.num_row_groups):
                    writer.write_table(part.read_row_group(group).cast(schema))
    errors = b"".join(_read(fs, f"{folder}/{ERRORS_DIR}/{name}.jsonl") for name in names)
    _, errors_file = filesystem(errors_path(job.output))
    if errors:
        written = f"{folder}/.errors.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(written) as f:
            f.write(errors)
        fs.move(written, errors_file)
    elif fs.get_file_info(errors_file).is_file:  # an earlier run's: this one has no bad row
        fs.delete_file(errors_file)
    fs.move(temporary, target)
    fs.delete_dir(folder)
    return {"output": job.output, "errors_file": errors_path(job.output) if errors else None}


def _metadata(fs: pafs.FileSystem, path: str) -> tuple[int, pa.Schema]:
    with fs.open_input_file(path) as f:
        part = pq.ParquetFile(f)
        return part.metadata.num_rows, part.schema_arrow


def _schema(parts: Sequence[tuple[int, pa.Schema]], folder: str) -> pa.Schema:
    """The file's schema: the parts' one. A part's id column is int64 when all its ids are integers
    (or it has no rows), text otherwise: text for the file when any part with rows has text ids."""
    text_ids = any(s.field("id").type == pa.string() for rows, s in parts if rows > 0)
    kind = pa.string() if text_ids else pa.int64()
    fixed = [s.set(s.get_field_index("id"), pa.field("id", kind)) for _, s in parts]
    if any(not s.equals(fixed[0]) for s in fixed):
        raise InputError(
            f"the parts in {folder} were written with other options (outputs, dimensions or sparse "
            "format) than this run's; remove that folder to start over"
        )
    return fixed[0].remove_metadata()


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    if not fs.get_file_info(path).is_file:
        return b""
    with fs.open_input_stream(path) as f:
        return bytes(f.read())
