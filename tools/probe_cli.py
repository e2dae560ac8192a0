"""The command-line arguments the bulk probes share (a sibling module: tools/ is on the path when a
probe runs as a script): the synthetic model's tokenizer, device and dtype, and the sizes of the
bench's two bulk workloads (`TextMaker.passages`, `TextMaker.long_documents`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from m3engine.settings import EngineSettings


def probe_parser(
    description: str | None, device: str = "cuda", dtype: str = "bf16"
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--device", default=device)
    parser.add_argument("--dtype", default=dtype)
    parser.add_argument("--passages", type=int, default=2000, help="the bench's mixed passages")
    parser.add_argument("--long-docs", type=int, default=24, help="the bench's long documents")
    return parser


def fast_settings(args: argparse.Namespace, model: Path) -> EngineSettings:
    """The fast backend on the probe's device and dtype, with its --max-batch-tokens."""
    return EngineSettings(
        model=str(model),
        backend="fast",
        device=args.device,
        dtype=args.dtype,
        max_batch_tokens=args.max_batch_tokens,
    )
