"""How much of a small batch's graph replay is weight streaming? The replay with every weight in L2.

    PYTHONPATH=src python3 tools/l2_bound_probe.py TOKENIZER_DIR [--lengths 16,128,512] [--json OUT.json]

One synthetic BGE-M3 (bf16), graph replay (device time, median of `--rounds` rounds of 50 replays):
- `model`: the model as it is (576 MB of layer weights: every replay streams them from HBM);
- `hot-l2`: the same graphs with every layer reading layer 0's weights (25 MB, which L2 holds), so the
  products find their weights in L2. Its output differs by construction; its time bounds what any
  weight-streaming gain (prefetch, a faster small-M product) could give at these lengths.

Round eight (docs/benchmarks.md; docs/bench/round8/call10/run.log): 16 tokens 703 -> 538 us,
128 tokens 784 -> 664 us, 512 tokens 1,219 -> 1,154 us. L2 prefetches on a side stream (commit
5b9e185, reverted after it) were slower in every plan measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from m3engine.backends.fast.backend import FastBackend
from m3engine.backends.fast.graphs import CAPTURE_AFTER, GraphRunner
from m3engine.bench.synthetic import build_synthetic
from m3engine.engine import Engine
from m3engine.types import Encoded, PackedBatch

VARIANTS = ("model", "hot-l2")


def batch_of(tokens: int, vocab: int, seed: int = 0) -> PackedBatch:
    ids = np.random.default_rng(seed).integers(5, vocab - 1, size=tokens).tolist()
    return PackedBatch.from_encoded([Encoded(ids=[0, *ids[: tokens - 2], 2])])


def replay_us(graphs: GraphRunner, batch: PackedBatch, n: int = 50) -> float:
    key = graphs.bucket(batch.num_tokens, batch.num_seqs, batch.num_tokens)
    assert key is not None
    captured = graphs.get(key)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        captured.graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--lengths", default="16,128,512")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        path = build_synthetic("bge-m3", Path(scratch) / "m3", args.tokenizer)
        engine = Engine.load(str(path), backend="fast", device="cuda", dtype="bf16")
        backend = engine.backend
        assert isinstance(backend, FastBackend)
        batches = {n: batch_of(n, engine.spec.vocab_size) for n in lengths}
        runners: dict[str, GraphRunner] = {}
        layers = backend.weights.layers
        for name in VARIANTS:  # capture each variant's graphs once; a graph keeps the weights it read
            backend.graphs = runners[name] = GraphRunner(
                backend._encode, torch.device("cuda"), max_tokens=4096
            )
            if name == "hot-l2":
                backend.weights.layers = [layers[0]] * len(layers)
            for n in lengths:
                for _ in range(CAPTURE_AFTER):  # captured (with these layers) when asked for again
                    backend.hidden_states(batches[n])
            backend.weights.layers = layers
        times: dict[str, dict[int, list[float]]] = {name: {n: [] for n in lengths} for name in VARIANTS}
        for _ in range(args.rounds):  # the variants in turn, round after round
            for name in VARIANTS:
                for n in lengths:
                    times[name][n].append(replay_us(runners[name], batches[n]))
        medians = {name: {n: statistics.median(times[name][n]) for n in lengths} for name in VARIANTS}
        for name in VARIANTS:
            cells = "  ".join(f"{n}: {medians[name][n]:7.1f} us" for n in lengths)
            ratio = "  ".join(f"{medians[name][n] / medians['model'][n]:.3f}" for n in lengths)
            print(f"{name:8s} {cells}   vs model: {ratio}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(medians, indent=1))


if __name__ == "__main__":
    main()
