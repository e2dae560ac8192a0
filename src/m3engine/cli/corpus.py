"""`m3engine embed INPUT --output FOLDER|FILE.parquet [--ray [ADDRESS]]`: the corpus job from the
command line.

Every Parquet output is the corpus job (`m3engine.distributed.corpus`), so a folder's parts and a
single file have the same columns (distributed/table.py): a folder as output (no file suffix) gets
Parquet parts, resumable, bad rows in `_errors/`; a `.parquet` file gets the same rows in one file,
written when every shard is done (a rerun resumes from its work folder), bad rows in
`NAME.errors.jsonl`. Without `--ray` in this process, with it on a Ray cluster (one actor per GPU, or
CPU workers). The summary (this run's counts) is printed as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import PurePath

from m3engine.errors import InputError
from m3engine.settings import EngineSettings, from_sources
from m3engine.tasks.options import EmbedOptions


def add_corpus_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input_path",
        nargs="?",
        metavar="INPUT",
        help="Corpus input: .jsonl, .parquet or .txt; a file, a folder or a glob (local or a pyarrow "
        "URI: s3://...).",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="Run the corpus job on Ray: a cluster address, or none (RAY_ADDRESS, else a local cluster).",
    )
    p.add_argument("--id-field", default="id", help="Corpus job: the id field / column (default id).")
    p.add_argument(
        "--shard-rows",
        type=int,
        default=10_000,
        help="Corpus job: rows per part (each resumable on its own).",
    )
    p.add_argument("--ray-workers", type=int, help="Corpus job on Ray: actors (default: one per GPU, or 2).")


def is_corpus(args: argparse.Namespace) -> bool:
    """A corpus job: --ray, an output folder (a path without a file suffix) or a .parquet output.
    Otherwise a positional INPUT is the same as --input (one file in, JSONL or .npy out)."""
    if args.input_path is not None and args.input:
        raise InputError("give the input once: as INPUT or with --input")
    corpus = args.ray is not None or _output_kind(args.output) in ("folder", "parquet")
    if not corpus and args.input_path is not None:
        args.input = args.input_path
    return corpus


def _output_kind(output: str | None) -> str | None:
    """ "folder" (no file suffix, or a trailing /), "parquet" (a .parquet file), "file" (another)."""
    if not output:
        return None
    if output.endswith("/") or not PurePath(output).suffix:
        return "folder"
    return "parquet" if output.lower().endswith(".parquet") else "file"


def _absolute(path: str) -> str:
    """A local path as the driver means it: Ray workers resolve paths in their own directory."""
    if "://" in path:
        return path
    return os.path.abspath(path) + ("/" if path.endswith("/") else "")


def cmd_corpus(args: argparse.Namespace, options: EmbedOptions) -> int:
    try:
        from m3engine.distributed.corpus import CorpusJob, run
    except ImportError as error:  # pyarrow, an extra: the corpus job's files are Parquet
        raise InputError(
            f"a corpus job (Parquet output) needs {error.name}, which is not installed: "
            "`pip install 'm3engine[parquet]'`"
        ) from None

    source = args.input_path or args.input
    if args.text:
        raise InputError(
            "--text writes JSONL (stdout or --output FILE.jsonl) or .npy; for Parquet put the texts "
            "in a file (a line each in .txt, or .jsonl) and pass it as INPUT"
        )
    if not source or not args.output:
        raise InputError(
            "a corpus job needs INPUT and --output FOLDER or FILE.parquet, "
            "e.g. m3engine embed data.jsonl --output out/"
        )
    if _output_kind(args.output) == "file":
        raise InputError(
            f"a corpus job writes Parquet: --output FOLDER (parts) or FILE.parquet, not {args.output!r}"
        )
    settings: EngineSettings = from_sources(EngineSettings, vars(args))
    job = CorpusJob(
        _absolute(source),
        _absolute(args.output),
        options,
        settings,
        text_field=args.field,
        id_field=args.id_field,
        shard_rows=args.shard_rows,
        sparse_format=args.sparse_format,
        sparse_tokens=args.sparse_tokens,
    )
    address = None
    if args.ray is not None:
        from m3engine.distributed.ray_job import default_address

        address = args.ray or default_address()
    summary = run(job, ray=address, workers=args.ray_workers)
    print(json.dumps(summary))
    return 0  # bad rows are the side file's business: the job itself finished
