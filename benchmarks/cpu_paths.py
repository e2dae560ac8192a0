"""CPU paths of one model in one run: m3engine's `auto`, torch fp32 and bf16 on both backends, ONNX
Runtime artifacts, and sentence-transformers in fp32 and bf16 as the baseline users know.

    m3engine build MODEL --out /tmp/a32                # the ONNX artifacts, once (optional)
    m3engine build MODEL --out /tmp/a8 --dtype int8
    python benchmarks/cpu_paths.py --model MODEL --st --onnx /tmp/a32 --onnx /tmp/a8

Throughput: multilingual passages (the built-in sample, accuracy/sample.py, truncated at the model's
own length: 256 tokens for all-MiniLM-L6-v2), embedded by each path, `--rounds` rounds with the
paths interleaved (a shared machine's noise hits every path alike): the median rate over rounds,
and each path's ratio to the first path and to sentence-transformers bf16 as the median of the
ratios within a round (one lucky round moves neither). Beside wall-clock tokens/s, tokens per
CPU-second of this process (less sensitive to other processes on a shared machine).
Accuracy against torch fp32 on the same passages: dense cosine mean and min, and the top-10
neighbours of `--queries` queries among `--corpus` passages. Public interfaces only (Engine, the
accuracy package's texts and gate metrics, sentence-transformers' SentenceTransformer).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from m3engine import Engine
from m3engine.accuracy.gate import dense_metrics, retrieval_agreement
from m3engine.accuracy.sample import compose, sample_sentences

Embed = Callable[[list[str], bool], np.ndarray]  # (texts, as queries) -> (N, D) dense vectors


def engine_path(engine: Engine) -> Embed:
    def embed(texts: list[str], query: bool) -> np.ndarray:
        records = engine.embed(texts, input_type="query" if query else "passage")
        return np.stack([r.dense for r in records])  # type: ignore[misc]

    return embed


def st_path(model: str, dtype: str) -> Embed:
    import torch
    from sentence_transformers import SentenceTransformer

    kwargs = {"dtype": torch.bfloat16} if dtype == "bf16" else {}
    st = SentenceTransformer(model, device="cpu", model_kwargs=kwargs)

    def embed(texts: list[str], query: bool) -> np.ndarray:
        vectors: np.ndarray = st.encode(texts, convert_to_numpy=True).astype(np.float32)
        return vectors

    return embed


def paths(args: argparse.Namespace) -> dict[str, Embed]:
    out: dict[str, Embed] = {
        "torch fp32 (reference)": engine_path(Engine.load(args.model, device="cpu", dtype="fp32")),
    }
    auto = Engine.load(args.model, device="cpu", **({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    info = auto.info()
    out[f"m3engine auto ({info['backend']} {info['dtype']})"] = engine_path(auto)
    for backend in ("reference", "fast"):
        out[f"torch bf16 ({backend})"] = engine_path(
            Engine.load(args.model, backend=backend, device="cpu", dtype="bf16")
        )
    for artifact in args.onnx:
        engine = Engine.load(artifact, backend="onnx", device="cpu")
        out[f"onnx {engine.backend.info.dtype} ({artifact})"] = engine_path(engine)
    if args.st:
        out["sentence-transformers fp32"] = st_path(args.model, "fp32")
        out["sentence-transformers bf16"] = st_path(args.model, "bf16")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="The source checkpoint (torch paths).")
    parser.add_argument("--onnx", action="append", default=[], help="An ONNX artifact (repeatable).")
    parser.add_argument("--st", action="store_true", help="Add sentence-transformers fp32 and bf16.")
    parser.add_argument("--passages", type=int, default=600, help="Timed passages.")
    parser.add_argument("--corpus", type=int, default=2000, help="Passages for the top-10 check.")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="Write the results here too.")
    parser.add_argument("--cache-dir", help="auto's verdict cache (default: the setting's default).")
    args = parser.parse_args()

    sentences = sample_sentences()
    corpus = compose(sentences, max(args.corpus, args.passages), 20, seed=41)  # over 256 tokens each
    queries = compose(sentences, args.queries, 1, seed=42)
    embedders = paths(args)
    for embed in embedders.values():
        embed(corpus[:32], False)  # warm-up: first-run allocations, thread pools

    timed = corpus[: args.passages]
    counter = Engine.load(args.model, device="cpu", backend="reference", dtype="fp32")
    tokens = sum(r.num_tokens for r in counter.embed(timed))  # every path truncates alike
    rates: dict[str, list[float]] = {name: [] for name in embedders}
    per_cpu: dict[str, list[float]] = {name: [] for name in embedders}
    for turn in range(args.rounds):
        order = list(embedders) if turn % 2 == 0 else list(reversed(embedders))
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            embedders[name](timed, False)
            rates[name].append(tokens / (time.perf_counter() - wall))
            per_cpu[name].append(tokens / (time.process_time() - cpu))

    def ratio(name: str, to: str | None) -> float | None:
        if to is None:
            return None
        return statistics.median(a / b for a, b in zip(rates[name], rates[to], strict=True))

    base = next(iter(embedders))
    st_bf16 = "sentence-transformers bf16" if args.st else None
    vectors = {name: embed(corpus[: args.corpus], False) for name, embed in embedders.items()}
    query_vectors = {name: embed(queries, True) for name, embed in embedders.items()}
    rows = []
    for name in embedders:
        row: dict[str, Any] = {
            "path": name,
            "tokens_per_s": round(statistics.median(rates[name])),
            "tokens_per_cpu_s": round(statistics.median(per_cpu[name])),
            "x_fp32": ratio(name, base),
            "x_st_bf16": ratio(name, st_bf16),
        }
        row |= dense_metrics(vectors[name], vectors[base])
        row |= retrieval_agreement((query_vectors[name], vectors[name]), (query_vectors[base], vectors[base]))
        rows.append(row)
    print(f"{tokens} tokens in {args.passages} passages, medians of {args.rounds} rounds")
    print(
        f"{'path':<44}{'tok/s':>8}{'tok/cpu-s':>10}{'x fp32':>8}{'x st bf16':>10}"
        f"{'cos mean':>10}{'cos min':>10}{'top-10':>8}"
    )
    for r in rows:
        vs_st = f"{r['x_st_bf16']:>10.2f}" if r["x_st_bf16"] else f"{'':>10}"
        print(
            f"{r['path']:<44}{r['tokens_per_s']:>8}{r['tokens_per_cpu_s']:>10}{r['x_fp32']:>8.2f}{vs_st}"
            f"{r['dense_cos_mean']:>10.5f}{r['dense_cos_min']:>10.5f}{r['retrieval_top10']:>8.3f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            record = {"rows": rows, "passages": args.passages, "rounds": args.rounds, "rates": rates}
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
