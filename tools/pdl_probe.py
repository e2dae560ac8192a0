"""Programmatic dependent launch (backends/fast/pdl.py) on the device: off against on, in one process.

    python tools/pdl_probe.py --tokenizer .carry-run/xlmr-tokenizer [--out DIR]

Variants, each a FastBackend (bf16) on the synthetic BGE-M3 with the real tokenizer:
  off              every kernel waits for the one before (as before PDL)
  pdl              PDL launches; the split-K products prefetch their weight slice into L2 first
  pdl-noprefetch   PDL launches, no prefetch
  pdl-triton-qkv   PDL, and the QKV / FFN-in products also in Triton up to 256 tokens (the table
                   keeps cuBLAS there), so the whole layer is one PDL chain
Per variant: a single graph replay at 16 / 128 / 512 tokens (median of 300, events around each),
`Engine.embed` of one 128-token text (median of 300), and the device time of the bench's passages
(1,000 lognormal passages, 16 k-token batches, eager) and of 40 long documents; the final states
against `off`'s (bitwise). Then torch.profiler on 128-token replays (off, pdl): the kernels' summed
time against the replay, i.e. how much of a replay is gaps between kernels. Tables go to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from m3engine.batching import plan_batches
from m3engine.bench.runner import load_engine
from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.types import PackedBatch

VARIANTS = {
    "off": {"pdl": False},
    "pdl": {"pdl": True},
    "pdl-noprefetch": {"pdl": True, "prefetch": False},
    "pdl-triton-qkv": {"pdl": True, "triton_qkv": True},
}


def _events() -> tuple[torch.cuda.Event, torch.cuda.Event]:
    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)


def single_replay_us(engine: Engine, packed: PackedBatch, count: int = 300) -> float:
    graphs = engine.backend.graphs  # type: ignore[attr-defined]
    captured = graphs.get(graphs.bucket(packed.num_tokens, packed.num_seqs, packed.max_len))
    start, end = _events()
    times = []
    for i in range(count + 20):
        start.record()
        captured.graph.replay()
        end.record()
        end.synchronize()
        if i >= 20:
            times.append(start.elapsed_time(end) * 1e3)
    return round(statistics.median(times), 1)


def embed_ms(engine: Engine, text: str, n: int, count: int = 300) -> float:
    times = []
    for i in range(count + 20):
        t0 = time.perf_counter()
        engine.embed([text], max_length=n)
        if i >= 20:
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 3)


def device_tok_s(engine: Engine, texts: list[str], max_length: int) -> float:
    """Eager forward of every batch (no heads), device time only: tokens / s."""
    encoded = engine.tokenizer.encode(texts, max_length)
    lengths = [len(e.ids) for e in encoded]
    batches = [
        PackedBatch.from_encoded([encoded[i] for i in b])
        for b in plan_batches(lengths, 16384, 1 << 30, False)
    ]
    backend = engine.backend
    for b in batches[:2]:
        backend.hidden_states(b, use_graphs=False)  # type: ignore[attr-defined]
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        start, end = _events()
        start.record()
        for b in batches:
            backend.hidden_states(b, use_graphs=False)  # type: ignore[attr-defined]
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return round(sum(lengths) / best)


def profile_replay(engine: Engine, packed: PackedBatch, count: int = 20) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    graphs = engine.backend.graphs  # type: ignore[attr-defined]
    captured = graphs.get(graphs.bucket(packed.num_tokens, packed.num_seqs, packed.max_len))
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(count):
            captured.graph.replay()
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", 0) or getattr(e, "cuda_time_total", 0)
        if t > 0 and e.count >= count:
            rows.append((e.key[:60], e.count // count, round(t / count, 1)))
    rows.sort(key=lambda r: -r[2])
    kernels = [r for r in rows if not r[0].startswith(("cudaGraph", "Memcpy", "Memset"))]
    return {"kernel_us_per_replay": round(sum(r[2] for r in kernels), 1), "top": rows[:14]}


def run_variant(name: str, opts: dict[str, Any], path: Path, texts: dict[str, Any]) -> dict[str, Any]:
    from m3engine.backends.fast import small_gemm as sg

    saved_table, saved_prefetch = dict(sg.CONFIGS), sg.PREFETCH_WEIGHTS
    sg.PREFETCH_WEIGHTS = opts.get("prefetch", True)
    if opts.get("triton_qkv"):
        for shape in ((3072, 1024), (4096, 1024)):
            sg.CONFIGS[shape] = (
                (64, sg.Config(64, 64, 128, 1, warps=4, stages=4)),
                (256, sg.Config(64, 64, 128, 1, warps=4, stages=4)),
                (512, None),
            )
    try:
        engine = load_engine(path, "cuda", "bf16", 16384, pdl=opts["pdl"])
        out: dict[str, Any] = {"variant": name}
        for n in (16, 128, 512):
            packed = PackedBatch.from_encoded(engine.tokenizer.encode([texts["latency"][n]], n))
            engine.embed([texts["latency"][n]], max_length=n)  # captures the graph
            out[f"replay_{n}_us"] = single_replay_us(engine, packed)
        out["embed_128_ms"] = embed_ms(engine, texts["latency"][128], 128)
        out["passages_device_tok_s"] = device_tok_s(engine, texts["passages"], 2048)
        out["long_docs_device_tok_s"] = device_tok_s(engine, texts["long_docs"], 8192)
        check = PackedBatch.from_encoded(engine.tokenizer.encode(texts["passages"][:64], 2048))
        states = engine.backend.hidden_states(check, use_graphs=False).hidden.clone()  # type: ignore[attr-defined]
        packed = PackedBatch.from_encoded(engine.tokenizer.encode([texts["latency"][128]], 128))
        out["_states"] = states
        if name in ("off", "pdl"):
            out["profile_128"] = profile_replay(engine, packed)
        del engine
        return out
    finally:
        sg.CONFIGS.clear()
        sg.CONFIGS.update(saved_table)
        sg.PREFETCH_WEIGHTS = saved_prefetch
        gc.collect()
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    tok = Tokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    maker = TextMaker(tok, seed=0)
    texts = {
        "latency": {n: maker.text(int(n * 1.5) + 16) for n in (16, 128, 512)},
        "passages": maker.texts(maker.lognormal_lengths(1000, 200, 0.8, 8, 2048)),
        "long_docs": maker.texts(maker.uniform_lengths(40, 4000, 8000)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = build_synthetic("bge-m3", Path(tmp) / "m3", args.tokenizer)
        results = []
        for v in args.variants.split(","):
            try:
                results.append(run_variant(v, VARIANTS[v], path, texts))
            except Exception as exc:  # one variant failing (e.g. a capture) must not hide the others
                print(f"variant {v} failed: {type(exc).__name__}: {exc}", flush=True)
    base = results[0]["_states"]
    for r in results:
        states = r.pop("_states")
        r["states_equal_first"] = bool(torch.equal(states, base))
        r["states_max_abs_diff"] = float((states.float() - base.float()).abs().max())
    keys = ["replay_16_us", "replay_128_us", "replay_512_us", "embed_128_ms", "passages_device_tok_s",
            "long_docs_device_tok_s", "states_equal_first", "states_max_abs_diff"]  # fmt: skip
    print("| variant | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in results:
        print(f"| {r['variant']} | " + " | ".join(str(r[k]) for k in keys) + " |")
    for r in results:
        if "profile_128" in r:
            p = r["profile_128"]
            print(f"\nprofile {r['variant']} 128 tokens: kernels {p['kernel_us_per_replay']} us per replay "
                  f"(single replay {r['replay_128_us']} us)")  # fmt: skip
            for key, count, us in p["top"]:
                print(f"  {us:8.1f} us  x{count:<3d} {key}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "pdl_probe.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
