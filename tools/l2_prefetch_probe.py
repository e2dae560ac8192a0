"""L2 prefetch of the weights ahead of the products (backends/fast/prefetch.py): graph replay per plan.

    PYTHONPATH=src python3 tools/l2_prefetch_probe.py TOKENIZER_DIR [--json OUT.json]

One synthetic BGE-M3 (bf16) and one FastBackend; for each plan the backend's graphs are captured
afresh and replayed (device time, median of `--rounds` rounds of 50 replays each); the plans are
taken in turn, round after round, so a drifting clock slows them all alike. Every plan's output must
equal the plan-less one bit for bit (a prefetch changes no arithmetic). Prints one line per plan.
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
from m3engine.backends.fast.graphs import GraphRunner
from m3engine.backends.fast.prefetch import BULK, LINES, Prefetcher, PrefetchPlan
from m3engine.bench.synthetic import build_synthetic
from m3engine.engine import Engine
from m3engine.types import Encoded, PackedBatch

PLANS: dict[str, PrefetchPlan | None] = {
    "off": None,
    "bulk-d1": PrefetchPlan(distance=1, mode=BULK, chunk=16384, max_tokens=1 << 20),
    "bulk-d2": PrefetchPlan(distance=2, mode=BULK, chunk=16384, max_tokens=1 << 20),
    "bulk-d4": PrefetchPlan(distance=4, mode=BULK, chunk=16384, max_tokens=1 << 20),
    "bulk-d1-4k": PrefetchPlan(distance=1, mode=BULK, chunk=4096, max_tokens=1 << 20),
    "bulk-d1-64k": PrefetchPlan(distance=1, mode=BULK, chunk=65536, max_tokens=1 << 20),
    "lines-d1": PrefetchPlan(distance=1, mode=LINES, max_tokens=1 << 20, threads=256),
    "bulk-d1-2k-w1": PrefetchPlan(distance=1, mode=BULK, chunk=2048, max_tokens=1 << 20, threads=32),
    "bulk-d2-2k-w1": PrefetchPlan(distance=2, mode=BULK, chunk=2048, max_tokens=1 << 20, threads=32),
    "lines-d2-w1": PrefetchPlan(distance=2, mode=LINES, max_tokens=1 << 20, threads=32),
    # not a prefetch: every layer reads layer 0's weights (25 MB, which L2 holds), the bound on what
    # weights already in L2 could give; its output differs by construction
    "hot-l2": None,
}


def batch_of(tokens: int, vocab: int, seed: int = 0) -> PackedBatch:
    ids = np.random.default_rng(seed).integers(5, vocab - 1, size=tokens).tolist()
    return PackedBatch.from_encoded([Encoded(ids=[0, *ids[: tokens - 2], 2])])


def replay_us(
    graphs: GraphRunner, backend: FastBackend, batch: PackedBatch, n: int = 50
) -> tuple[float, torch.Tensor]:
    states = backend.hidden_states(batch)  # stages the inputs, replays once
    key = graphs.bucket(batch.num_tokens, batch.num_seqs, batch.num_tokens)
    assert key is not None
    captured = graphs.get(key)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        captured.graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / n, states.hidden.float().clone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--lengths", default="16,128,256,512,1024")
    parser.add_argument("--plans", default=",".join(PLANS))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    plans = args.plans.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        path = build_synthetic("bge-m3", Path(scratch) / "m3", args.tokenizer)
        engine = Engine.load(str(path), backend="fast", device="cuda", dtype="bf16")
        backend = engine.backend
        assert isinstance(backend, FastBackend)
        cuda = torch.device("cuda")
        vocab = engine.spec.vocab_size
        batches = {n: batch_of(n, vocab) for n in lengths}
        runners: dict[str, GraphRunner] = {}
        for name in plans:  # capture each plan's graphs once
            plan = PLANS[name]
            backend.prefetcher = Prefetcher(cuda, plan) if plan is not None else None
            backend.graphs = runners[name] = GraphRunner(backend._encode, cuda, max_tokens=4096)
            layers = backend.weights.layers
            if name == "hot-l2":
                backend.weights.layers = [layers[0]] * len(layers)
            for n in lengths:
                backend.hidden_states(batches[n])
            backend.weights.layers = layers
        times: dict[str, dict[int, list[float]]] = {name: {n: [] for n in lengths} for name in plans}
        outs: dict[str, dict[int, torch.Tensor]] = {name: {} for name in plans}
        for _ in range(args.rounds):
            for name in plans:
                backend.graphs = runners[name]
                for n in lengths:
                    us, out = replay_us(runners[name], backend, batches[n])
                    times[name][n].append(us)
                    outs[name][n] = out
        base = plans[0]
        result = {}
        for name in plans:
            same = name != "hot-l2" and all(torch.equal(outs[name][n], outs[base][n]) for n in lengths)
            medians = {n: statistics.median(times[name][n]) for n in lengths}
            result[name] = {"replay_us": medians, "equal_to_" + base: same}
            cells = "  ".join(f"{n}: {medians[n]:7.1f}" for n in lengths)
            ratio = "  ".join(f"{medians[n] / statistics.median(times[base][n]):.3f}" for n in lengths)
            print(f"{name:12s} {cells}   vs {base}: {ratio}   equal: {same}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
