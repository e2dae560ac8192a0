"""`m3engine embed INPUT --output FOLDER [--ray [ADDRESS]]`: the corpus job from the command line.

A folder as output (no file suffix), or `--ray`, runs `m3engine.distributed.corpus`: Parquet parts
with the id column, resumable, bad rows to `_errors/`; without `--ray` in this process, with it on
a Ray cluster (one actor per GPU, or CPU workers). The summary (this run's counts) is printed as
JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import PurePath

from m3engine.errors import InputError
from m3engine.settings import EngineSettings, from_sources
from m3engine.tasks.options import EmbedOptions


def add_corpus_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input_path",
        nargs="?",
        metavar="INPUT",
        help="Corpus input: a .jsonl/.parquet file, a folder or a glob (local or a pyarrow URI: s3://...).",
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
    p.add_argument("--shard-rows", type=int, default=10_000, help="Corpus job: rows per output file.")
    p.add_argument("--ray-workers", type=int, help="Corpus job on Ray: actors (default: one per GPU, or 2).")


def is_corpus(args: argparse.Namespace) -> bool:
    """A corpus job: --ray, or an output folder (a path without a file suffix). Otherwise a positional
    INPUT is the same as --input (one file in, one file out)."""
    folder = bool(args.output) and not PurePath(args.output).suffix
    if args.ray is None and not folder and args.input_path is not None:
        if args.input:
            raise InputError("give the input once: as INPUT or with --input")
        args.input = args.input_path
    return args.ray is not None or folder


def cmd_corpus(args: argparse.Namespace, options: EmbedOptions) -> int:
    from m3engine.distributed.corpus import CorpusJob, run

    source = args.input_path or args.input
    if not source or not args.output:
        raise InputError(
            "a corpus job needs INPUT and --output FOLDER, e.g. m3engine embed data.jsonl --output out/"
        )
    if args.text:
        raise InputError("--text does not go with a corpus job; put the texts in a .jsonl file")
    if args.sparse_format != "indices_values" or args.sparse_tokens:
        raise InputError(
            "a corpus job writes sparse weights as sparse_indices + sparse_values columns; drop "
            "--sparse-format / --sparse-tokens, or write one file (--output FILE.parquet) for other forms"
        )
    settings: EngineSettings = from_sources(EngineSettings, vars(args))
    job = CorpusJob(
        source,
        args.output,
        options,
        settings,
        text_field=args.field,
        id_field=args.id_field,
        shard_rows=args.shard_rows,
    )
    address = None
    if args.ray is not None:
        from m3engine.distributed.ray_job import default_address

        address = args.ray or default_address()
    summary = run(job, ray=address, workers=args.ray_workers)
    print(json.dumps(summary))
    return 0  # bad rows are the side file's business: the job itself finished
