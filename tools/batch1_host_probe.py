"""The host's share of one short text at batch 1 (`Engine.embed`, dense), stage by stage.

    PYTHONPATH=src python3 tools/batch1_host_probe.py TOKENIZER_DIR --device cuda   # H200: full-size model
    PYTHONPATH=src python3 tools/batch1_host_probe.py TOKENIZER_DIR --device cpu    # host code alone

The text is the bench's (`latency_ladder`: ~1.5 n + 16 tokens, cut to n by truncation). Every stage
runs once per round, round after round (so a busy machine slows them all alike); the medians are
printed in microseconds, one JSON line per length:

- floor_encode: a bare `tokenizers.Tokenizer` with truncation at n, `encode(text)`; floor_prefix: the
  same tokenizer's `encode_batch_fast` of the prefix the engine encodes (its Rust share of `tokenize`);
- tokenize: `engine.tokenizer.encode`; prepare: `engine.tasks.embed` (validation and tokenization);
- pack: `PackedBatch.from_encoded`; launch: `backend.launch` (staging, graph launch, heads and copies
  queued; on CUDA the device is waited for outside the timed span); collect: `.result()` once the
  device is done; finish: the records from the outputs;
- embed: the whole `Engine.embed` call (on CUDA, waited for); on CUDA also replay (the graph alone,
  device time) and host = embed - replay: what the host adds to the device's work.

With `--profile`, each length is then profiled over 200 `Engine.embed` calls: torch.profiler's
operators and CUDA API calls by host time (what the host spends in `cudaGraphLaunch`, copies,
events, the wait), and cProfile's Python functions by their own time.

On CPU the model has one small layer and its CUDA graph is a no-op (`NoGraphs`): the backend takes
its graph path (static buffers, no eager encoder), so `embed` is the host's work alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from batch1_probe import replay_ms  # a sibling script: tools/ is on the path when run as a script
from tokenizers import Tokenizer

from m3engine.backends.fast.graphs import BucketKey, choose_bucket
from m3engine.backends.fast.staging import flat_size
from m3engine.bench.synthetic import Architecture, build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.types import HeadRequest, PackedBatch


class NoGraphs:
    """GraphRunner's interface with static buffers and a replay that does nothing (CPU runs)."""

    def __init__(self, hidden: int) -> None:
        self._hidden = hidden
        self._graphs: dict[BucketKey, Any] = {}

    def bucket(self, num_tokens: int, num_seqs: int, max_len: int) -> BucketKey | None:
        return choose_bucket(num_tokens, num_seqs, max_len, 4096)

    def get(self, key: BucketKey) -> Any:
        if key not in self._graphs:
            flat = torch.zeros(flat_size(key.tokens, key.seqs), dtype=torch.int64)
            out = torch.randn(key.tokens, self._hidden, generator=torch.Generator().manual_seed(0))
            graph = SimpleNamespace(replay=lambda: None)
            self._graphs[key] = SimpleNamespace(graph=graph, flat=flat, out=out)
        return self._graphs[key]


def rounds(stages: dict[str, Callable[[], object]], count: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median microseconds of each stage, the stages run in turn `count` times (after a warm-up)."""
    times: dict[str, list[int]] = {name: [] for name in stages}
    for i in range(count + 20):
        for name, stage in stages.items():
            sync()
            start = time.perf_counter_ns()
            stage()
            if name in ("embed", "forward"):
                sync()
            if i >= 20:
                times[name].append(time.perf_counter_ns() - start)
    return {name: round(statistics.median(t) / 1e3, 1) for name, t in times.items()}


def replay_us(engine: Engine, packed: PackedBatch) -> float:
    return round(replay_ms(engine, packed) * 1e3, 1)  # batch1_probe's: the mean of 100 replays


def breakdown(engine: Engine, floor: Tokenizer, text: str, n: int, count: int, cuda: bool) -> dict[str, Any]:
    sync = torch.cuda.synchronize if cuda else lambda: None
    tok = engine.tokenizer
    prefix = tok._prefix(text, (n - tok.single_specials) * tok.chars_per_token)
    bare = Tokenizer.from_str(floor.to_str())
    bare.no_truncation()
    floor.enable_truncation(n)
    encoded = engine.tokenizer.encode([text], n)
    packed = PackedBatch.from_encoded(encoded)
    heads = HeadRequest(dense=True)
    task = engine.tasks.embed([text], max_length=n)
    launched: list[Any] = []

    def launch() -> None:
        launched.append(engine.backend.launch(packed, heads))  # type: ignore[attr-defined]

    def collect() -> None:
        launched.pop().result()

    outputs = engine.backend.forward(packed, heads)
    stages: dict[str, Callable[[], object]] = {
        "floor_encode": lambda: floor.encode(text),
        "floor_prefix": lambda: bare.encode_batch_fast([prefix], add_special_tokens=False),
        "tokenize": lambda: engine.tokenizer.encode([text], n),
        "prepare": lambda: engine.tasks.embed([text], max_length=n),
        "pack": lambda: PackedBatch.from_encoded(encoded),
        "launch": launch,
        "collect": collect,
        "finish": lambda: task.finish(outputs),
        "embed": lambda: engine.embed([text], max_length=n),
    }
    if cuda:
        stages["forward"] = lambda: engine.backend.forward(packed, heads)
    out: dict[str, Any] = {"tokens": packed.num_tokens, "device": "cuda" if cuda else "cpu"}
    out.update(rounds(stages, count, sync))
    if cuda:
        out["replay"] = replay_us(engine, packed)
        out["host"] = round(out["embed"] - out["replay"], 1)
    return out


def profile(engine: Engine, text: str, n: int, calls: int = 200) -> None:
    """Where the host's time goes in `calls` embeds: torch's operators and CUDA calls, then Python's."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(calls):
            engine.embed([text], max_length=n)
    print(f"{n} tokens, {calls} embeds: torch operators and CUDA calls by host time", flush=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
    python = cProfile.Profile()
    python.runcall(lambda: [engine.embed([text], max_length=n) for _ in range(calls)])
    print(f"{n} tokens, {calls} embeds: Python functions by own time", flush=True)
    pstats.Stats(python).sort_stats("tottime").print_stats(25)


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--lengths", default="128")
    parser.add_argument("--profile", action="store_true", help="then profile 200 embeds per length")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    with tempfile.TemporaryDirectory() as scratch:
        arch = None if cuda else Architecture(layers=1, hidden=64, heads=2, ffn=128)
        path = build_synthetic("bge-m3", Path(scratch) / "m3", args.tokenizer, arch)
        dtype = "bf16" if cuda else "fp32"
        engine = Engine.load(str(path), backend="fast", device=args.device, dtype=dtype)
        if not cuda:
            engine.backend.graphs = NoGraphs(engine.spec.hidden_size)  # type: ignore[attr-defined]
        floor = Tokenizer.from_file(str(path / "tokenizer.json"))
        maker = TextMaker(Tokenizer.from_file(str(path / "tokenizer.json")))
        for n in (int(x) for x in args.lengths.split(",")):
            text = maker.text(int(n * 1.5) + 16)
            print(json.dumps(breakdown(engine, floor, text, n, args.rounds, cuda)), flush=True)
            if args.profile:
                profile(engine, text, n)


if __name__ == "__main__":
    main()
