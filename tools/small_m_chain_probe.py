"""small_gemm.CONFIGS judged in the chain: whole-encoder graph replays of one text, per table variant.

    python tools/small_m_chain_probe.py --tokenizer .carry-run/xlmr-tokenizer

tools/small_gemm_probe.py times each product alone (weights rotated through L2); this one times what
a user waits for: one CUDA-graph replay of the 24-layer synthetic BGE-M3 (bf16, fast backend) for one
text of 16 / 64 / 128 / 256 tokens, median of 300 single replays (events around each), for:
  table        small_gemm.CONFIGS as it is (QKV and FFN-in on cuBLAS)
  qkv-64x64    QKV and FFN-in also in Triton, one 64x64 tile per program, no split
  qkv-32x64s2  the same with 32x64 tiles and K split in 2 (parts + finish kernel)
  qkv-128x32   128x32 tiles (one M tile at <= 128 tokens), no split
and the final states against `table`'s (max abs difference). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer

from m3engine.backends.fast import small_gemm as sg
from m3engine.backends.fast.graphs import CAPTURE_AFTER
from m3engine.bench.runner import load_engine
from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.types import PackedBatch

LENGTHS = (16, 64, 128, 256)
VARIANTS: dict[str, sg.Config | None] = {
    "table": None,
    "qkv-64x64": sg.Config(64, 64, 128, 1, warps=4, stages=4),
    "qkv-32x64s2": sg.Config(32, 64, 128, 2, warps=4, stages=4),
    "qkv-128x32": sg.Config(128, 32, 128, 1, warps=4, stages=4),
}


def replay_us(graph: torch.cuda.CUDAGraph, count: int = 300) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(count + 20):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        if i >= 20:
            times.append(start.elapsed_time(end) * 1e3)
    return round(statistics.median(times), 1)


def run(name: str, cfg: sg.Config | None, path: Path, texts: dict[int, str]) -> dict[str, object]:
    saved = dict(sg.CONFIGS)
    if cfg is not None:
        for shape in ((3072, 1024), (4096, 1024)):
            sg.CONFIGS[shape] = ((sg.SMALL_M, cfg), (512, None))
    try:
        engine = load_engine(path, "cuda", "bf16", 16384)
        graphs = engine.backend.graphs  # type: ignore[attr-defined]
        out: dict[str, object] = {"variant": name}
        for n in LENGTHS:
            packed = PackedBatch.from_encoded(engine.tokenizer.encode([texts[n]], n))
            for _ in range(CAPTURE_AFTER):  # the bucket's graph is captured when asked for again
                engine.embed([texts[n]], max_length=n)
            captured = graphs.get(graphs.bucket(packed.num_tokens, packed.num_seqs, packed.max_len))
            out[f"replay_{n}_us"] = replay_us(captured.graph)
            out[f"_states_{n}"] = captured.out[: packed.num_tokens].float().clone()
        del engine
        return out
    finally:
        sg.CONFIGS.clear()
        sg.CONFIGS.update(saved)
        gc.collect()
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokenizer", type=Path, required=True)
    args = parser.parse_args()
    maker = TextMaker(Tokenizer.from_file(str(args.tokenizer / "tokenizer.json")), seed=0)
    texts = {n: maker.text(int(n * 1.5) + 16) for n in LENGTHS}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = build_synthetic("bge-m3", Path(tmp) / "m3", args.tokenizer)
        for name, cfg in VARIANTS.items():
            try:
                results.append(run(name, cfg, path, texts))
            except Exception as exc:  # one variant failing must not hide the others
                print(f"variant {name} failed: {type(exc).__name__}: {exc}", flush=True)
    base = results[0]
    keys = [f"replay_{n}_us" for n in LENGTHS]
    print("| variant | " + " | ".join(keys) + " | max abs diff vs table |")
    print("|---" * (len(keys) + 2) + "|")
    for r in results:
        diff = max(float((r[f"_states_{n}"] - base[f"_states_{n}"]).abs().max()) for n in LENGTHS)  # type: ignore[operator]
        print(f"| {r['variant']} | " + " | ".join(str(r[k]) for k in keys) + f" | {diff:.4f} |")


if __name__ == "__main__":
    main()
