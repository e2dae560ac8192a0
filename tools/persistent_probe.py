"""The persistent layer kernel (persistent_layer.py) against the fused layer, at batch-1 sizes (CUDA).

    PYTHONPATH=src python3 tools/persistent_probe.py TOKENIZER_DIR --json OUT.json [--lengths 16,128,256]

One synthetic BGE-M3 (bf16), one sequence per length. Per variant of the 24-layer encoder:
- `fused`: the engine's fused layers (small_gemm products; seven kernels a layer);
- `phases`: the persistent kernel's code launched once per phase (seven launches a layer, no barrier);
- `persistent` and `p:<tiles>`: one persistent launch per layer, default and other tilings (each
  with L2 prefetch of the layer's later weights); `no-prefetch` without it; `cg` with loads of what
  the launch wrote bypassing L1.
First a check that a scalar `tl.atomic_add` counts once per program (the barrier relies on it); then,
per length, each variant's largest difference to `fused` and the cosine of their rows; then graph
replay (device time, median of `--rounds` rounds of 50 replays, variants in turn); last,
`Engine.embed` of the bench's text cut to 128 tokens with `persistent_m` 0 and 256 (median of
`--embeds` calls, taken in turn).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import triton
import triton.language as tl
from tokenizers import Tokenizer

from m3engine.backends.fast import persistent_layer as pl
from m3engine.backends.fast.backend import FastBackend
from m3engine.backends.fast.encoder import PackedInputs, to_device
from m3engine.backends.fast.fused import encode_fused
from m3engine.backends.fast.graphs import GraphRunner
from m3engine.backends.fast.kernels import embed_layernorm
from m3engine.backends.fast.varlen_attention import plan_attention
from m3engine.backends.fast.weights import EncoderWeights
from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.types import Encoded, PackedBatch

TILES = {
    "st4": pl.Tiles(stages=4),
    "w8": pl.Tiles(warps=8),
    "w8st4": pl.Tiles(warps=8, stages=4),
    "m64": pl.Tiles(block_m=64),
    "m64st4": pl.Tiles(block_m=64, stages=4),
}


@triton.jit
def _count_kernel(ptr):
    tl.atomic_add(ptr, 1, sem="relaxed", scope="gpu")


def atomic_counts_once() -> int:
    counter = torch.zeros(1, dtype=torch.int32, device="cuda")
    _count_kernel[(4,)](counter, num_warps=4)
    return int(counter.item())  # 4: once per program; 512: once per thread


def persistent_encoder(
    w: EncoderWeights,
    tiles: pl.Tiles | None,
    phases: bool,
    prefetch: bool = True,
    cache: str = "",
    only: int | None = None,
) -> Callable:
    def run(inputs: PackedInputs) -> torch.Tensor:
        cfg = w.config
        x, _ = embed_layernorm(
            inputs.input_ids, inputs.positions, inputs.token_types, w.word, w.position, w.token_type,
            w.emb_ln_w, w.emb_ln_b, cfg.eps,
        )  # fmt: skip
        t = pl.tiles_for(x.shape[0], tiles or pl.DEFAULT_TILES)
        counters = torch.zeros(len(w.layers), dtype=torch.int32, device=x.device)
        for i, lw in enumerate(w.layers):
            after = w.layers[i + 1].qkv_w if i + 1 < len(w.layers) else None
            x = pl.persistent_layer(
                x, lw, cfg, inputs, counters[i : i + 1], t, phases=phases, next_qkv_w=after,
                prefetch=prefetch, cache=cache, only=only,
            )  # fmt: skip
        return x

    return run


def kernel_stats() -> list[dict]:
    """Registers, spills and shared memory of each compiled variant of the layer kernel."""
    rows = []
    for caches in pl._layer_kernel.device_caches.values():
        for key, kernel in caches[0].items():
            with contextlib.suppress(Exception):
                kernel._init_handles()
            rows.append(
                {
                    "regs": getattr(kernel, "n_regs", None),
                    "spills": getattr(kernel, "n_spills", None),
                    "shared": getattr(kernel.metadata, "shared", None),
                    "key": str(key)[-160:],
                }
            )
    return rows


def replay_us(graph: torch.cuda.CUDAGraph, n: int = 50) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / n


def capture(fn: Callable, inputs: PackedInputs) -> torch.cuda.CUDAGraph:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn(inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(inputs)
    return graph


def embed_medians(engine: Engine, backend: FastBackend, text: str, calls: int) -> dict[str, float]:
    runners = {}
    for m in (0, 256):  # each setting its own graphs, captured on first asks
        backend.persistent_m = m
        backend.graphs = runners[m] = GraphRunner(backend._encode, torch.device("cuda"), max_tokens=4096)
        for _ in range(5):
            engine.embed([text], max_length=128)
    times: dict[int, list[float]] = {0: [], 256: []}
    for _ in range(calls):
        for m in (0, 256):
            backend.persistent_m, backend.graphs = m, runners[m]
            t0 = time.perf_counter()
            engine.embed([text], max_length=128)
            times[m].append((time.perf_counter() - t0) * 1e6)
    backend.persistent_m, backend.graphs = 0, runners[0]
    return {f"persistent_m={m}": statistics.median(v) for m, v in times.items()}


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("--lengths", default="16,128,256")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--embeds", type=int, default=400)
    parser.add_argument("--variants", default=",".join(TILES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report: dict = {"atomic_count_4_programs": atomic_counts_once()}
    print(report, flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        path = build_synthetic("bge-m3", Path(scratch) / "m3", args.tokenizer)
        engine = Engine.load(str(path), backend="fast", device="cuda", dtype="bf16")
        backend = engine.backend
        assert isinstance(backend, FastBackend)
        w = backend.weights
        variants: dict[str, Callable] = {
            "fused": lambda inputs: encode_fused(w, inputs, None),
            "phases": persistent_encoder(w, None, phases=True),
            "persistent": persistent_encoder(w, None, phases=False),
            "no-prefetch": persistent_encoder(w, None, phases=False, prefetch=False),
            "cg": persistent_encoder(w, None, phases=False, cache=".cg"),
            "barriers-only": persistent_encoder(w, None, False, prefetch=False, only=pl.BARRIERS_ONLY),
            "empty": persistent_encoder(w, None, False, prefetch=False, only=pl.NOTHING),
        }
        for phase in range(pl.PHASES):  # one phase alone, persistent grid, 24 launches
            variants[f"phase{phase}"] = persistent_encoder(w, None, False, prefetch=False, only=phase)
        for name in filter(None, args.variants.split(",")):
            variants[f"p:{name}"] = persistent_encoder(w, TILES[name], phases=False)
        for n in (int(v) for v in args.lengths.split(",")):
            ids = np.random.default_rng(n).integers(5, engine.spec.vocab_size - 1, size=n - 2).tolist()
            batch = PackedBatch.from_encoded([Encoded(ids=[0, *ids, 2])])
            inputs = plan_attention(to_device(batch, w.config.position_offset, torch.device("cuda")))
            ref = variants["fused"](inputs).float()
            row: dict = {}
            for name, fn in variants.items():
                t0 = time.perf_counter()
                out = fn(inputs).float()
                torch.cuda.synchronize()
                cos = torch.nn.functional.cosine_similarity(out, ref, dim=-1)
                row[name] = {
                    "max_abs_diff": float((out - ref).abs().max()),
                    "cos_min": float(cos.min()),
                    "first_call_s": round(time.perf_counter() - t0, 2),
                }
                print(n, name, row[name], flush=True)
            graphs = {name: capture(fn, inputs) for name, fn in variants.items()}
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, graph in graphs.items():
                    times[name].append(replay_us(graph))
            for name in variants:
                row[name]["replay_us"] = statistics.median(times[name])
            base = row["fused"]["replay_us"]
            cells = (f"{k} {v['replay_us']:.1f} ({v['replay_us'] / base:.3f})" for k, v in row.items())
            print(n, "  ".join(cells), flush=True)
            report[str(n)] = row
            del graphs
        maker = TextMaker(Tokenizer.from_file(str(path / "tokenizer.json")))
        report["embed_128_us"] = embed_medians(engine, backend, maker.text(int(128 * 1.5) + 16), args.embeds)
        print(report["embed_128_us"], flush=True)
    report["kernels"] = kernel_stats()
    print(report["kernels"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
