"""Does the bulk pipeline overlap tokenization with the device? Wall time against tokenize and device alone.

For each workload (the bench's: 2,000 mixed passages, 24 long documents, one query + 100 passages)
it times, in one process:
  tokenize   the whole list tokenized in one call (`tasks.X(...).prepare()`), nothing run;
  device     the pre-tokenized batches alone (launched one ahead of collection, as the engine does);
  serial     tokenize then run, no overlap (`engine.execute(prepared)`: the path before the pipeline);
  pipelined  the engine's public call (`engine.embed` / `engine.rerank`): what a user gets.
A perfect overlap gives pipelined ~= max(tokenize, device); no overlap gives ~= tokenize + device.

On the CPU the device is simulated (`--backend sim`): an asynchronous device that runs a batch in
tokens / --rate seconds (plus --batch-overhead-ms) after the previous one, like a GPU stream; its
outputs are zeros of the right shapes. On the device machine, `--backend fast --device cuda` runs the
real synthetic model (full size, built into --scratch once).

    PYTHONPATH=src python tools/pipeline_probe.py --tokenizer ../shared/fixtures/xlmr-tokenizer \
        --backend sim --rate 100000 --passages 400
    PYTHONPATH=src python tools/pipeline_probe.py --tokenizer ../shared/fixtures/xlmr-tokenizer \
        --backend fast --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from probe_cli import fast_settings, probe_parser  # a sibling module (tools/ is on the path)

from m3engine.backends.base import BackendInfo
from m3engine.bench.synthetic import Architecture, build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.models.spec import ModelSpec, inspect_model
from m3engine.scheduling import pipeline
from m3engine.scheduling.batching import plan_batches
from m3engine.tasks.prepared import Prepared
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, SparseVector


class SimulatedDevice:
    """An asynchronous device: a batch starts when the previous one ends and takes tokens / rate."""

    def __init__(self, spec: ModelSpec, rate: float, overhead_s: float) -> None:
        self.spec, self.rate, self.overhead_s = spec, rate, overhead_s
        self.info = BackendInfo(name="sim", device="sim", dtype="bf16", padded=False)
        self._free_at = 0.0
        self.busy_s = 0.0
        self._lock = threading.Lock()

    def colbert_dim(self) -> int | None:
        return None if self.spec.is_cross_encoder else self.spec.hidden_size

    def launch(self, batch: PackedBatch, heads: HeadRequest) -> _SimPending:
        with self._lock:
            start = max(time.perf_counter(), self._free_at)
            cost = self.overhead_s + batch.num_tokens / self.rate
            self._free_at = start + cost
            self.busy_s += cost
        return _SimPending(self._free_at, batch, heads, self.spec)

    def forward(self, batch: PackedBatch, heads: HeadRequest) -> BatchOutputs:
        return self.launch(batch, heads).result()


class _SimPending:
    def __init__(self, end: float, batch: PackedBatch, heads: HeadRequest, spec: ModelSpec) -> None:
        self._end, self._batch, self._heads, self._spec = end, batch, heads, spec

    def done(self) -> bool:
        return time.perf_counter() >= self._end

    def result(self) -> BatchOutputs:
        time.sleep(max(0.0, self._end - time.perf_counter()))
        n, lengths = self._batch.num_seqs, self._batch.lengths.tolist()
        out = BatchOutputs()
        if self._heads.logits:
            out.logits = np.zeros((n, max(1, len(self._spec.labels))), dtype=np.float32)
        if self._heads.dense:
            out.dense = np.ones((n, self._spec.hidden_size), dtype=np.float32)
        if self._heads.sparse:
            empty = SparseVector(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
            out.sparse = [empty] * n
        if self._heads.colbert:
            rows = np.zeros((max(lengths), self._spec.hidden_size), dtype=np.float32)
            out.colbert = [rows[: m - 1] for m in lengths]
        return out


STAT: Callable[[list[float]], float] = statistics.median


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Seconds per call of each fn (STAT of `repeats`), the fns taken in turn so that drift in the
    machine's load (a shared CPU) falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up: graph captures, allocator, thread pools
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: STAT(values) for name, values in times.items()}


def _device_only(engine: Engine, task: Prepared[Any]) -> Callable[[], object]:
    """The pre-tokenized batches, each launched before the one before it is collected."""
    lengths = [len(e) for e in task.encoded]
    plan = plan_batches(lengths, engine.settings.max_batch_tokens, engine.settings.max_batch_size, False)
    return lambda: pipeline.run_planned(engine._launcher, task.encoded, plan, task.heads, None)


def probe(
    name: str,
    engine: Engine,
    prepare: Callable[[], Prepared[Any]],
    public: Callable[[], object],
    repeats: int,
) -> dict[str, Any]:
    task = prepare()
    tokens = task.num_tokens
    fns = {
        "tokenize": prepare,
        "device": _device_only(engine, task),
        "serial": lambda: engine.execute(prepare()),
        "pipelined": public,
    }
    row: dict[str, Any] = {"workload": name, "inputs": len(task.encoded), "tokens": tokens}
    row.update({f"{k}_ms": v * 1e3 for k, v in _interleaved(fns, repeats).items()})
    floor = max(row["tokenize_ms"], row["device_ms"])
    row["pipelined_over_max"] = row["pipelined_ms"] / floor
    row["pipelined_over_sum"] = row["pipelined_ms"] / (row["tokenize_ms"] + row["device_ms"])
    row["pipelined_tok_s"] = tokens / row["pipelined_ms"] * 1e3
    print(
        f"{name}: {row['inputs']} inputs, {tokens} tokens | tokenize {row['tokenize_ms']:.0f} ms, "
        f"device {row['device_ms']:.0f} ms, serial {row['serial_ms']:.0f} ms, "
        f"pipelined {row['pipelined_ms']:.0f} ms = {row['pipelined_over_max']:.2f} x max, "
        f"{row['pipelined_over_sum']:.2f} x sum ({row['pipelined_tok_s'] / 1e3:.0f} k tok/s)",
        flush=True,
    )
    return row


def _engine(args: argparse.Namespace, path: Path) -> Engine:
    settings = fast_settings(args, path)
    if args.backend == "fast" and args.attention != "triton":
        from m3engine.bench.runner import load_engine

        return load_engine(path, args.device, args.dtype, args.max_batch_tokens, attention=args.attention)
    if args.backend == "fast":
        return Engine.from_settings(settings)
    spec = inspect_model(path)
    backend = SimulatedDevice(spec, args.rate, args.batch_overhead_ms / 1e3)
    return Engine(spec, TextTokenizer.load(path), backend, settings)


def embed_rows(engine: Engine, maker: TextMaker, args: argparse.Namespace) -> list[dict[str, Any]]:
    passages = maker.passages(args.passages)
    docs = maker.long_documents(args.long_docs)
    rows = []
    for name, texts, limit in (("passages", passages, 2048), ("long_docs", docs, 8192)):
        for m3 in (False, True):
            label = f"{name} {'all three' if m3 else 'dense'}"

            def prepare(t: list[str] = texts, n: int = limit, h: bool = m3) -> Prepared[Any]:
                return engine.tasks.embed(t, max_length=n, sparse=h, colbert=h)

            def public(t: list[str] = texts, n: int = limit, h: bool = m3) -> object:
                return engine.embed(t, max_length=n, sparse=h, colbert=h)

            rows.append(probe(label, engine, prepare, public, args.repeats))
    return rows


def rerank_row(reranker: Engine, maker: TextMaker, args: argparse.Namespace) -> dict[str, Any]:
    query = maker.text(24)
    passages = maker.texts(maker.uniform_lengths(args.rerank_passages, 250, 350))
    return probe(
        f"rerank 1 x {len(passages)}",
        reranker,
        lambda: reranker.tasks.rerank(query, passages, max_length=512),
        lambda: reranker.rerank(query, passages, max_length=512),
        max(args.repeats, 5),
    )


def main() -> None:
    parser = probe_parser(__doc__, device="cpu", dtype="fp32")
    parser.add_argument("--backend", choices=("sim", "fast"), default="sim")
    parser.add_argument("--rate", type=float, default=800e3, help="sim: device tokens per second")
    parser.add_argument("--batch-overhead-ms", type=float, default=0.2, help="sim: fixed cost per batch")
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--attention", choices=("triton", "flash"), default="triton")
    parser.add_argument("--rerank-passages", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="tokenizer threads (0: the default)")
    for name in ("first_piece", "largest_piece", "min_partial"):  # pipeline.py's knobs: budget / N
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(pipeline, name.upper()))
    parser.add_argument("--only", choices=("embed", "rerank"), default=None)
    parser.add_argument("--scratch", type=Path, default=None, help="where to build the synthetic models")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tiny", action="store_true", help="a 1-layer model (a smoke run of --backend fast)")
    parser.add_argument("--best", action="store_true", help="report the best of the repeats (a shared CPU)")
    args = parser.parse_args()
    global STAT
    STAT = min if args.best else statistics.median
    if args.threads:
        pipeline.default_threads = lambda sizes: int(args.threads)
    pipeline.FIRST_PIECE, pipeline.LARGEST_PIECE = args.first_piece, args.largest_piece
    pipeline.MIN_PARTIAL = args.min_partial
    tiny = Architecture(layers=1, hidden=64, heads=4, ffn=128)
    arch = Architecture() if args.backend == "fast" and not args.tiny else tiny
    knobs = f"first piece 1/{args.first_piece}, largest 1/{args.largest_piece}, part 1/{args.min_partial}"
    print(f"pipeline threads {args.threads or 'default'}, budget {args.max_batch_tokens}, {knobs}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = args.scratch or Path(tmp)
        for model in ("bge-m3", "bge-reranker-v2-m3"):
            if args.only == ("rerank" if model == "bge-m3" else "embed"):
                continue
            path = scratch / model
            if not (path / "config.json").is_file():
                build_synthetic(model, path, args.tokenizer, arch)
            engine = _engine(args, path)
            maker = TextMaker(engine.tokenizer._tok)
            if model == "bge-m3":
                rows += embed_rows(engine, maker, args)
            else:
                rows.append(rerank_row(engine, maker, args))
            del engine
    if args.json:
        config = {k: str(v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": config, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
