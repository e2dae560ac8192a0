"""The corpus job: embed every row of JSONL or Parquet input into Parquet files, resumably.

    >>> job = CorpusJob("data/*.jsonl", "out/", EmbedOptions(dense=True, sparse=True), settings)
    >>> summary = run(job)                  # one process
    >>> summary = run(job, ray="auto")      # Ray Data: one actor per GPU, or CPU workers
    >>> run(CorpusJob("data.jsonl", "vectors.parquet", options, settings))   # one file

The input (a file, a folder, or a glob, on any filesystem pyarrow knows: local, s3://, gs://, hdfs://)
is cut into shards of `shard_rows` rows; each shard becomes one output file `part-FFFFF-SSSSSSSSSS.parquet`
(input file number, first row), written under a temporary name and renamed when complete. A rerun
skips the shards whose file exists, so a job that stopped half-way resumes where it was; a shard
whose worker died is run again by Ray, and its file is written once. Bad rows go to
`_errors/<part>.jsonl` ({"id", "reason"}); `_summary.json` has the counts. An output that names a
.parquet file gets the same rows in that one file, joined from the parts when all are done
(single.py); its bad rows go to `NAME.errors.jsonl` beside it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from m3engine.distributed.job import (
    ERRORS_DIR,
    SUMMARY,
    CorpusJob,
    check_options,
    clear_temporaries,
    filesystem,
    finished,
    plan,
)
from m3engine.errors import InputError

__all__ = ["CorpusJob", "plan", "run"]


def run(
    job: CorpusJob, ray: str | None = None, workers: int | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Run the job (in this process, or on the Ray cluster at `ray`: an address or "auto"); the summary.

    `workers`: Ray actors (default: one per GPU of the cluster, else 2 CPU workers)."""
    started = time.perf_counter()
    check_options(job)
    shards = plan(job)
    if job.single_file and not shards:  # no part would say what the file's columns are
        raise InputError(f"the input {job.input!r} has no rows: nothing to write to {job.output}")
    done = finished(job)
    todo = [s for s in shards if s.name not in done]
    clear_temporaries(job)
    fs, out = filesystem(job.folder)
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
    joined: dict[str, Any] = {}
    if job.single_file:
        from m3engine.distributed.single import join_parts

        joined = join_parts(job, [s.name for s in shards])
    summary = {
        "shards": len(shards),
        "skipped_shards": len(shards) - len(todo),
        "rows": sum(r["rows"] for r in results),
        "embedded": sum(r["embedded"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "tokens": sum(r["tokens"] for r in results),
        "seconds": round(time.perf_counter() - started, 3),
        # the workers' time on shards, without starting them and loading the model: tokens /
        # shard_seconds is one worker's steady rate (with several workers, divide by their number)
        "shard_seconds": round(sum(r["seconds"] for r in results), 3),
        "runner": "local" if ray is None else "ray",
    }
    if job.single_file:
        return {**summary, **joined}
    with fs.open_output_stream(f"{out}/{SUMMARY}") as f:
        f.write(json.dumps(summary, indent=2).encode())
    return summary


class Progress:
    """Fed once per finished shard; prints at most one line a second (and a last one)."""

    def __init__(self, total_rows: int, quiet: bool = False, out: IO[str] | None = None) -> None:
        self.total, self.quiet, self.out = total_rows, quiet, out or sys.stderr
        self.rows = self.tokens = 0
        self.start = self._shown = time.perf_counter()

    def __call__(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        if time.perf_counter() - self._shown >= 1.0:
            self._show()

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.rows / elapsed
        left = (self.total - self.rows) / rate if rate > 0 else float("inf")
        eta = "?" if left == float("inf") else f"{left:,.0f} s"
        return (
            f"{self.rows:,}/{self.total:,} rows  {rate:,.0f} rows/s  "
            f"{self.tokens / elapsed:,.0f} tokens/s  ETA {eta}"
        )

    def _show(self) -> None:
        self._shown = time.perf_counter()
        if not self.quiet:
            print(self.line(), file=self.out, flush=True)

    def close(self) -> None:
        self._show()
