"""The corpus job: embed every row of JSONL or Parquet input into Parquet files, resumably.

    >>> job = CorpusJob("data/*.jsonl", "out/", EmbedOptions(dense=True, sparse=True), settings)
    >>> summary = run(job)                  # one process
    >>> summary = run(job, ray="auto")      # Ray Data: one actor per GPU, or CPU workers

The input (a file, a folder, or a glob, on any filesystem pyarrow knows: local, s3://, gs://, hdfs://)
is cut into shards of `shard_rows` rows; each shard becomes one output file `part-FFFFF-SSSSSSSSSS.parquet`
(input file number, first row), written under a temporary name and renamed when complete. A rerun
skips the shards whose file exists, so a job that stopped half-way resumes where it was; a shard
whose worker died is run again by Ray, and its file is written once. Bad rows go to
`_errors/<part>.jsonl` ({"id", "reason"}); `_summary.json` has the counts.
"""

from __future__ import annotations

import fnmatch
import json
import time
from typing import Any

import pyarrow.fs as pafs

from m3engine.distributed.job import ERRORS_DIR, SUFFIXES, SUMMARY, CorpusJob, filesystem
from m3engine.distributed.progress import Progress
from m3engine.distributed.rows import Shard, count_rows
from m3engine.errors import InputError

__all__ = ["CorpusJob", "plan", "run"]


def input_files(job: CorpusJob) -> tuple[pafs.FileSystem, list[tuple[str, str]]]:
    """(path, format) of every input file, in a stable order (shard names depend on it)."""
    fs, path = filesystem(job.input)
    if any(c in path for c in "*?["):
        base = path[: min(path.index(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        paths = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, path)]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"input {job.input!r} does not exist; give a file, a folder or a glob")
        if info.is_file:
            paths = [path]
        else:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            paths = [i.path for i in infos if i.is_file]
    files = sorted((p, _format(p)) for p in paths if _format(p))
    if not files:
        raise InputError(f"no .jsonl or .parquet file in {job.input!r}")
    return fs, [(p, f) for p, f in files if f]


def _format(path: str) -> str:
    return next((fmt for suffix, fmt in SUFFIXES.items() if path.lower().endswith(suffix)), "")


def plan(job: CorpusJob) -> list[Shard]:
    fs, files = input_files(job)
    shards, offset = [], 0
    for index, (path, fmt) in enumerate(files):
        rows = count_rows(fs, path, fmt)
        for start in range(0, rows, job.shard_rows):
            shards.append(Shard(index, path, fmt, start, min(start + job.shard_rows, rows), offset))
        offset += rows
    return shards


def finished(job: CorpusJob) -> set[str]:
    """Names of the shards whose output file exists (written whole: see shard.py)."""
    fs, out = filesystem(job.output)
    if fs.get_file_info(out).type == pafs.FileType.NotFound:
        return set()
    infos = fs.get_file_info(pafs.FileSelector(out))
    return {i.base_name.removesuffix(".parquet") for i in infos if i.base_name.startswith("part-")}


def run(
    job: CorpusJob, ray: str | None = None, workers: int | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Run the job (in this process, or on the Ray cluster at `ray`: an address or "auto"); the summary.

    `workers`: Ray actors (default: one per GPU of the cluster, else 2 CPU workers)."""
    started = time.perf_counter()
    shards = plan(job)
    done = finished(job)
    todo = [s for s in shards if s.name not in done]
    fs, out = filesystem(job.output)
    fs.create_dir(out, recursive=True)
    fs.create_dir(f"{out}/{ERRORS_DIR}", recursive=True)
    progress = Progress(sum(s.stop - s.start for s in todo), quiet=quiet)
    if ray is None:
        from m3engine.distributed.shard import run_local

        results = run_local(job, todo, progress)
    else:
        from m3engine.distributed.ray_job import run_ray

        results = run_ray(job, todo, progress, ray, workers)
    progress.close()
    summary = {
        "shards": len(shards),
        "skipped_shards": len(shards) - len(todo),
        "rows": sum(r["rows"] for r in results),
        "embedded": sum(r["embedded"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "tokens": sum(r["tokens"] for r in results),
        "seconds": round(time.perf_counter() - started, 3),
        "runner": "local" if ray is None else "ray",
    }
    with fs.open_output_stream(f"{out}/{SUMMARY}") as f:
        f.write(json.dumps(summary, indent=2).encode())
    return summary
