"""What a corpus job is: its input, output, options and engine settings, and where files go."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from m3engine.errors import InputError
from m3engine.settings import EngineSettings
from m3engine.tasks.options import EmbedOptions

SUFFIXES = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
ERRORS_DIR = "_errors"  # "_": pyarrow and Ray Data skip it when reading the folder as a dataset
SUMMARY = "_summary.json"


@dataclass(frozen=True)
class CorpusJob:
    input: str  # a path or URI: a file, a folder, or a glob of files
    output: str  # a folder (path or URI)
    options: EmbedOptions = field(default_factory=EmbedOptions)
    engine: EngineSettings = field(default_factory=EngineSettings)
    text_field: str = "text"
    id_field: str = "id"
    shard_rows: int = 10_000

    def __post_init__(self) -> None:
        if self.shard_rows < 1:
            raise InputError(f"--shard-rows must be >= 1, got {self.shard_rows}")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of a path or URI, and the path within it."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)  # type: ignore[no-any-return]
    return pafs.LocalFileSystem(), os.path.abspath(uri)
