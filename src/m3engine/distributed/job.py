"""What a corpus job is (input, output, options, engine settings), its input cut into shards, and
which shards are done already (their output file exists).

The output is a folder of Parquet parts, or one Parquet file (a name ending in .parquet): then the
parts go to a work folder beside it, `.NAME.parts/`, and are joined into the file at the end
(single.py); a rerun after a stop resumes from the work folder."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from m3engine.distributed.rows import Shard, count_rows
from m3engine.errors import InputError, ModelNotFoundError
from m3engine.settings import EngineSettings
from m3engine.sparse_formats import SPARSE_STYLES
from m3engine.tasks.options import EmbedOptions

SUFFIXES = {
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".txt": "txt",
    ".txt.gz": "txt",
}
ERRORS_DIR = "_errors"  # "_": pyarrow and Ray Data skip it when reading the folder as a dataset
SUMMARY = "_summary.json"


@dataclass(frozen=True)
class CorpusJob:
    input: str  # a path or URI: a file, a folder, or a glob of files
    output: str  # a folder, or one file (a name ending in .parquet); a path or URI
    options: EmbedOptions = field(default_factory=EmbedOptions)
    engine: EngineSettings = field(default_factory=EngineSettings)
    text_field: str = "text"
    id_field: str = "id"
    shard_rows: int = 10_000
    # With ColBERT, rows embedded and written at a time within a shard (one Parquet row group each),
    # so that a shard's vectors are never all in memory
    piece_rows: int = 2048
    # the form of the sparse columns (sparse_formats.py; table.py lists the columns of each), and
    # whether token strings go with them (keys of elasticsearch / vespa, a list beside indices_values)
    sparse_format: str = "indices_values"
    sparse_tokens: bool = False

    def __post_init__(self) -> None:
        if self.sparse_format not in SPARSE_STYLES:
            raise InputError(
                f"unknown sparse format {self.sparse_format!r}; use one of {', '.join(SPARSE_STYLES)}"
            )
        if self.shard_rows < 1:
            raise InputError(f"--shard-rows must be >= 1, got {self.shard_rows}")
        if self.piece_rows < 1:
            raise InputError(f"piece_rows must be >= 1, got {self.piece_rows}")

    @property
    def single_file(self) -> bool:
        return self.output.lower().endswith(".parquet")

    @property
    def folder(self) -> str:
        """Where the parts, the errors and the summary are written: the output folder, or the work
        folder beside a single output file."""
        if not self.single_file:
            return self.output
        head, slash, name = self.output.rstrip("/").rpartition("/")
        return f"{head}{slash}.{name}.parts"


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a path or URI, and the path within it."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)  # type: ignore[no-any-return]
    return pafs.LocalFileSystem(), os.path.abspath(uri)


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
            # a folder's .txt files (a README, notes) are not taken for texts to embed: name a .txt
            # file, or a glob of them, for that
            paths = [i.path for i in infos if i.is_file and _format(i.path) != "txt"]
    files = sorted((p, _format(p)) for p in paths if _format(p))
    if not files:
        raise InputError(
            f"no .jsonl or .parquet file in {job.input!r} (a folder's .txt files are left out: "
            "name a .txt file, or a glob such as DIR/*.txt)"
        )
    return fs, [(p, f) for p, f in files if f]


def _format(path: str) -> str:
    return next((fmt for suffix, fmt in SUFFIXES.items() if path.lower().endswith(suffix)), "")


def plan(job: CorpusJob) -> list[Shard]:
    fs, files = input_files(job)
    shards, offset = [], 0
    for index, (path, fmt) in enumerate(files):
        rows, seeks = count_rows(fs, path, fmt, job.shard_rows)
        for start, seek in zip(range(0, rows, job.shard_rows), seeks, strict=True):
            stop = min(start + job.shard_rows, rows)
            shards.append(Shard(index, path, fmt, start, stop, offset, seek))
        offset += rows
    return shards


def finished(job: CorpusJob) -> set[str]:
    """Names of the shards whose output file exists (written whole: see shard.py)."""
    fs, out = filesystem(job.folder)
    if fs.get_file_info(out).type == pafs.FileType.NotFound:
        return set()
    infos = fs.get_file_info(pafs.FileSelector(out))
    return {i.base_name.removesuffix(".parquet") for i in infos if i.base_name.startswith("part-")}


def check_options(job: CorpusJob) -> None:
    """Options the model cannot serve (sparse of a plain embedder, dimensions too wide) refused in
    the driver, before any worker starts, by the engine's own checks (no weights are loaded). A
    model the driver cannot see is left to the workers, which run the same checks at start."""
    from m3engine.models.discovery import resolve_model_path
    from m3engine.models.kinds import ModelKind
    from m3engine.models.spec import inspect_model
    from m3engine.tasks.builder import TaskBuilder
    from m3engine.tokenization.tokenizer import TextTokenizer

    settings = job.engine
    try:
        path = resolve_model_path(settings.model, revision=settings.revision)
    except ModelNotFoundError:
        return
    kind = ModelKind.parse(settings.kind) if settings.kind else None
    spec = inspect_model(path, name=settings.model, kind=kind)
    TaskBuilder(spec, TextTokenizer.load(path), settings).embed_bulk(["m3engine"], job.options)


def clear_temporaries(job: CorpusJob) -> int:
    """Remove the temporaries of writes that an earlier, killed run left (`.part-*.tmp`, `*.tmp` in
    the errors folder); one job at a time writes a folder. Returns how many were removed."""
    fs, out = filesystem(job.folder)
    removed = 0
    for folder in (out, f"{out}/{ERRORS_DIR}"):
        if fs.get_file_info(folder).type != pafs.FileType.Directory:
            continue
        for info in fs.get_file_info(pafs.FileSelector(folder)):
            if info.is_file and info.base_name.endswith(".tmp"):
                fs.delete_file(info.path)
                removed += 1
    return removed
