"""First look on the device: batch-1 latency (graph vs eager) and packed throughput, fast vs HF."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from m3engine.backends.fast import FastBackend
from m3engine.bench.synthetic import build_synthetic
from m3engine.models.spec import inspect_model
from m3engine.types import Encoded, HeadRequest, PackedBatch, TokenIds


def timeit(fn, n: int = 30) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def main() -> None:
    d = build_synthetic("bge-m3", Path(tempfile.mkdtemp()) / "m3", Path(sys.argv[1]))
    spec = inspect_model(d)
    tokens = TokenIds(1, frozenset({0, 1, 2, 3}))
    fast = FastBackend(spec, tokens, device="cuda", dtype="bf16")
    rng = np.random.default_rng(0)

    def batch(lengths: list[int]) -> PackedBatch:
        return PackedBatch.from_encoded(
            [Encoded(ids=[0, *rng.integers(5, 250000, n - 2).tolist(), 2]) for n in lengths]
        )

    dense = HeadRequest(dense=True)
    allh = HeadRequest(dense=True, sparse=True, colbert=True)
    for n in (128, 512, 2048):
        b = batch([n])
        g = timeit(lambda b=b: fast.forward(b, dense))
        e = timeit(lambda b=b: fast.hidden_states(b, use_graphs=False)[0][0].cpu())
        print(f"batch1 {n}: graph {g:.3f} ms  eager {e:.3f} ms", flush=True)
    lengths = np.clip(rng.lognormal(np.log(200), 0.7, 80), 8, 2048).astype(int).tolist()
    b = batch(lengths)
    for name, heads in (("dense", dense), ("all", allh)):
        ms = timeit(lambda heads=heads: fast.forward(b, heads), 10)
        print(
            f"packed {b.num_tokens} tok {name}: {ms:.2f} ms = {b.num_tokens / ms * 1e3 / 1e3:.0f} k tok/s",
            flush=True,
        )
    ms = timeit(lambda: fast.hidden_states(b, use_graphs=False)[0].sum().item(), 10)
    print(f"packed encoder only: {b.num_tokens / ms:.0f} k tok/s", flush=True)
    from transformers import AutoModel

    hf = AutoModel.from_pretrained(str(d), dtype=torch.float16, attn_implementation="sdpa").cuda().eval()
    ids = torch.tensor([[0, *rng.integers(5, 250000, 126).tolist(), 2]], device="cuda")
    with torch.inference_mode():
        ms = timeit(lambda: hf(input_ids=ids).last_hidden_state[:, 0].cpu())
    print(f"HF batch1 128: {ms:.3f} ms", flush=True)
    print("peak GB", torch.cuda.max_memory_allocated() / 1e9)


if __name__ == "__main__":
    main()
