"""The last layer on the CLS rows alone (FastBackend.cls_only) against every row, in one process.

    PYTHONPATH=src:tools python3 tools/cls_rows_probe.py --tokenizer TOKENIZER_DIR [--repeats 6]

Workloads of the bench whose outputs read only the CLS rows: mixed passages and long documents,
dense only (BGE-M3), and one query with 100 passages (the reranker), each as the public call and
as its pre-tokenized batches alone (`device`). Both settings are taken in turn (`_interleaved`);
prints the median ms of each and the ratio, and how far apart the two settings' outputs are
(dense cosine min, largest logit difference). The reranker runs in fp16 where --dtype is bf16 (as
the bench runs it). `--tiny`: a 1-layer model, a smoke run on the CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pipeline_probe import _device_only, _interleaved  # sibling modules (tools/ is on the path)
from probe_cli import probe_parser

from m3engine.bench.synthetic import Architecture, build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.settings import EngineSettings
from m3engine.tasks.prepared import Prepared

SETTINGS = {"cls rows": True, "all rows": False}
R = TypeVar("R")


def _set(engine: Engine, cls_only: bool, fn: Callable[[], R]) -> Callable[[], R]:
    def run() -> R:
        engine.backend.cls_only = cls_only  # type: ignore[attr-defined]
        return fn()

    return run


def _rows(
    engine: Engine, label: str, prepare: Callable[[], Prepared[Any]], public: Callable[[], Any], repeats: int
) -> list[dict[str, Any]]:
    task = prepare()
    fns = {}
    for setting, on in SETTINGS.items():
        fns[f"{setting} public"] = _set(engine, on, public)
        fns[f"{setting} device"] = _set(engine, on, _device_only(engine, task))
    seconds = _interleaved(fns, repeats)
    rows = []
    for kind in ("public", "device"):
        cls, every = seconds[f"cls rows {kind}"], seconds[f"all rows {kind}"]
        rows.append({"workload": f"{label} {kind}", "tokens": task.num_tokens, "cls_ms": cls * 1e3,
                     "all_ms": every * 1e3, "speedup": every / cls})  # fmt: skip
        print(
            f"{label} {kind}: {task.num_tokens} tokens | CLS rows {cls * 1e3:.1f} ms "
            f"({task.num_tokens / cls / 1e3:.0f} k tok/s), every row {every * 1e3:.1f} ms "
            f"({task.num_tokens / every / 1e3:.0f} k tok/s), {every / cls:.3f}x",
            flush=True,
        )
    return rows


def _apart(engine: Engine, public: Callable[[], Any], reranker: bool) -> float:
    """Dense cosine min (embed) or the largest absolute logit difference (rerank) of the two settings."""
    outs: list[list[Any]] = [_set(engine, on, public)() for on in SETTINGS.values()]  # (setting, input)
    if reranker:
        first, second = ({r.index: float(r.logit) for r in out} for out in outs)
        return max(abs(first[i] - second[i]) for i in first)
    a, b = (np.stack([np.asarray(e.dense) for e in out]) for out in outs)  # (inputs, H) each
    return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min())


def _embed(engine: Engine, args: argparse.Namespace) -> list[dict[str, Any]]:
    maker, rows = TextMaker(engine.tokenizer._tok), []
    for label, texts, limit in (
        ("passages dense", maker.passages(args.passages), 2048),
        ("long docs dense", maker.long_documents(args.long_docs), 8192),
    ):

        def public(t: list[str] = texts, n: int = limit) -> Any:
            return engine.embed(t, max_length=n)

        def prepare(t: list[str] = texts, n: int = limit) -> Prepared[Any]:
            return engine.tasks.embed(t, max_length=n)

        rows += _rows(engine, label, prepare, public, args.repeats)
        print(f"{label}: dense cosine min between the settings {_apart(engine, public, False):.6f}")
    return rows


def _rerank(engine: Engine, args: argparse.Namespace) -> list[dict[str, Any]]:
    maker = TextMaker(engine.tokenizer._tok)
    query, passages = maker.text(24), maker.texts(maker.uniform_lengths(100, 250, 350))

    def public() -> Any:
        return engine.rerank(query, passages, max_length=512)

    def prepare() -> Prepared[Any]:
        return engine.tasks.rerank(query, passages, max_length=512)

    rows = _rows(engine, "rerank 1 x 100", prepare, public, max(args.repeats, 8))
    print(f"rerank: largest logit difference between the settings {_apart(engine, public, True):.2e}")
    return rows


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    arch = Architecture(layers=1, hidden=64, heads=4, ffn=128) if args.tiny else Architecture()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, run in (("bge-m3", _embed), ("bge-reranker-v2-m3", _rerank)):
            path = Path(tmp) / model
            build_synthetic(model, path, args.tokenizer, arch)
            dtype = "fp16" if run is _rerank and args.dtype == "bf16" else args.dtype  # as the bench runs it
            settings = EngineSettings(model=str(path), backend="fast", device=args.device, dtype=dtype)
            engine = Engine.from_settings(settings)
            rows += run(engine, args)
            del engine
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
