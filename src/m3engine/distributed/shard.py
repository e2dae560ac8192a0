"""One shard of a corpus job: read, check, embed, write; the same code in one process and in Ray.

A shard's error side file is written before its output file, and each under a temporary name
renamed when complete: the output file's existence means the whole shard is done (corpus.finished).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow.parquet as pq

from m3engine.distributed.job import ERRORS_DIR, CorpusJob, filesystem
from m3engine.distributed.rows import Shard, read_shard
from m3engine.distributed.table import Outputs, embedding_table, errors_jsonl, id_type
from m3engine.errors import InputError
from m3engine.results import Embedding
from m3engine.sparse_formats import SparseFormat

ShardResult = dict[str, Any]  # name, rows, embedded, failed, tokens, seconds
OnShard = Callable[[int, int], None]  # (rows, tokens) of each finished shard: the progress line


class ShardEmbedder:
    """Holds one engine (on one device) and embeds whole shards with it."""

    def __init__(self, job: CorpusJob) -> None:
        from m3engine.engine import Engine

        self.job = job
        self.engine = Engine.from_settings(job.engine)
        info = self.engine.info()
        options = job.options
        # pgvector's form carries the vocabulary size, and token strings need the tokenizer: both
        # known once the engine is loaded, so each worker builds the form itself
        sparse = SparseFormat(
            job.sparse_format,
            dim=self.engine.spec.vocab_size,
            token_of=self.engine.tokenizer.id_to_token if job.sparse_tokens else None,
        )
        self.outputs = Outputs(
            dense=options.dense,
            sparse=sparse if options.sparse else None,
            colbert=options.colbert,
            dense_dim=options.dimensions or info["dense_dim"],
            colbert_dim=info["colbert_dim"],
        )
        self.fs, self.out = filesystem(job.folder)
        # Options the model cannot serve (sparse of a plain embedder, dimensions too wide) are the
        # job's error, raised here before any row, not every row's (see _embed).
        self.engine.embed(["m3engine"], options=options)

    def __call__(self, shard: Shard) -> ShardResult:
        started = time.perf_counter()
        rows = read_shard(self.fs, shard, self.job.text_field, self.job.id_field)
        kind = id_type(rows.ids)
        bad, embedded, tokens = list(rows.bad), 0, 0
        temporary = f"{self.out}/.{shard.name}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(temporary) as f:
            writer: pq.ParquetWriter | None = None
            # With ColBERT, in pieces (each a row group): a shard's vectors (10,000 passages of
            # ~300 tokens x 1,024 floats: ~12 GB) are never in memory at once. Without, the
            # whole shard in one call: each call's pipeline starts and drains the device once.
            piece = self.job.piece_rows if self.job.options.colbert else max(len(rows.texts), 1)
            for start in range(0, max(len(rows.texts), 1), piece):
                stop = start + piece
                ids, records, refused = self._embed(rows.ids[start:stop], rows.texts[start:stop])
                table = embedding_table(ids, records, self.outputs, kind)
                writer = writer or pq.ParquetWriter(f, table.schema)
                writer.write_table(table)
                bad += refused
                embedded += len(records)
                tokens += sum(r.num_tokens for r in records)
            assert writer is not None
            writer.close()
        # the side file first: the part file's existence says the whole shard is done
        self._write_bytes(f"{self.out}/{ERRORS_DIR}/{shard.name}.jsonl", errors_jsonl(bad), keep=bool(bad))
        self.fs.move(temporary, f"{self.out}/{shard.name}.parquet")
        return {
            "name": shard.name,
            "rows": shard.stop - shard.start,
            "embedded": embedded,
            "failed": len(bad),
            "tokens": tokens,
            "seconds": time.perf_counter() - started,  # read, embed, write: a worker's busy time
        }

    def _embed(
        self, ids: list[Any], texts: list[str]
    ) -> tuple[list[Any], list[Embedding], list[tuple[Any, str]]]:
        if not texts:
            return [], [], []
        try:
            return ids, self.engine.embed(texts, options=self.job.options), []
        except InputError:  # a text the engine refuses (over the limit with truncate off)
            return self._embed_one_by_one(ids, texts)

    def _embed_one_by_one(
        self, ids: list[Any], texts: list[str]
    ) -> tuple[list[Any], list[Embedding], list[tuple[Any, str]]]:
        """Which texts the engine refuses, and the records of the others."""
        kept_ids: list[Any] = []
        records: list[Embedding] = []
        bad: list[tuple[Any, str]] = []
        for row_id, text in zip(ids, texts, strict=True):
            try:
                records.append(self.engine.embed([text], options=self.job.options)[0])
                kept_ids.append(row_id)
            except InputError as error:
                bad.append((row_id, str(error).replace("input 0", "the text")))
        return kept_ids, records, bad

    def _write_bytes(self, path: str, data: bytes, keep: bool) -> None:
        if not keep:
            if self.fs.get_file_info(path).is_file:  # an earlier, killed attempt's file
                self.fs.delete_file(path)
            return
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(temporary) as f:
            f.write(data)
        self.fs.move(temporary, path)


def run_local(job: CorpusJob, shards: Sequence[Shard], progress: OnShard) -> list[ShardResult]:
    """Every shard in this process, one after the other, with one engine (`--devices` for several)."""
    if not shards:
        return []
    embedder = ShardEmbedder(job)
    results = []
    for shard in shards:
        result = embedder(shard)
        progress(result["rows"], result["tokens"])
        results.append(result)
    return results
