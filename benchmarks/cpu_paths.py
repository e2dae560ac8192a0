"""CPU paths of one model in one run: torch fp32 and bf16 (reference backend), ONNX Runtime fp32 and int8.

    m3engine build MODEL --out /tmp/a32                # the ONNX artifacts, once
    m3engine build MODEL --out /tmp/a8 --dtype int8
    python benchmarks/cpu_paths.py --model MODEL --onnx /tmp/a32 --onnx /tmp/a8

Throughput: multilingual passages (the built-in sample, accuracy/sample.py, about 256 tokens each),
embedded by Engine.embed, best of `--rounds` rounds with the paths interleaved (a shared machine's
noise hits every path alike), and tokens per CPU-second of this process (time.process_time: what
the other jobs of a shared machine cannot take from a path, and what its extra threads cost).
Accuracy against torch fp32 on the same passages: dense cosine mean and min, and the top-10
neighbours of `--queries` queries among `--corpus` passages. Public interfaces only (Engine, the
deploy package's texts and gate metrics).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from m3engine import Engine
from m3engine.accuracy.gate import dense_metrics, retrieval_agreement
from m3engine.accuracy.sample import compose, sample_sentences


def dense(engine: Engine, texts: list[str], **kwargs: Any) -> tuple[np.ndarray, int]:
    records = engine.embed(texts, **kwargs)
    return np.stack([r.dense for r in records]), sum(r.num_tokens for r in records)  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="The source checkpoint (torch paths).")
    parser.add_argument("--onnx", action="append", default=[], help="An ONNX artifact (repeatable).")
    parser.add_argument("--passages", type=int, default=600, help="Timed passages.")
    parser.add_argument("--corpus", type=int, default=2000, help="Passages for the top-10 check.")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="Write the results here too.")
    args = parser.parse_args()

    sentences = sample_sentences()
    corpus = compose(sentences, max(args.corpus, args.passages), 20, seed=41)  # ~256 tokens after truncation
    queries = compose(sentences, args.queries, 1, seed=42)
    paths: dict[str, Engine] = {
        "torch fp32 (reference)": Engine.load(args.model, backend="reference", device="cpu", dtype="fp32"),
        "torch bf16 (reference)": Engine.load(args.model, backend="reference", device="cpu", dtype="bf16"),
    }
    for artifact in args.onnx:
        engine = Engine.load(artifact, backend="onnx", device="cpu")
        paths[f"onnx {engine.backend.info.dtype} ({artifact})"] = engine
    for engine in paths.values():
        engine.embed(corpus[:32])  # warm-up: first-run allocations, thread pools

    timed = corpus[: args.passages]
    best: dict[str, float] = {name: 0.0 for name in paths}
    per_cpu: dict[str, float] = {name: 0.0 for name in paths}
    for _ in range(args.rounds):
        for name, engine in paths.items():
            start, cpu = time.perf_counter(), time.process_time()
            _, tokens = dense(engine, timed)
            best[name] = max(best[name], tokens / (time.perf_counter() - start))
            per_cpu[name] = max(per_cpu[name], tokens / (time.process_time() - cpu))

    base_name = next(iter(paths))
    vectors = {name: dense(e, corpus[: args.corpus])[0] for name, e in paths.items()}
    query_vectors = {name: dense(e, queries, input_type="query")[0] for name, e in paths.items()}
    rows = []
    for name in paths:
        row: dict[str, Any] = {
            "path": name,
            "tokens_per_s": round(best[name]),
            "x_fp32": best[name] / best[base_name],
            "tokens_per_cpu_s": round(per_cpu[name]),
            "x_fp32_per_cpu_s": per_cpu[name] / per_cpu[base_name],
        }
        row |= dense_metrics(vectors[name], vectors[base_name])
        row |= retrieval_agreement(
            (query_vectors[name], vectors[name]), (query_vectors[base_name], vectors[base_name])
        )
        rows.append(row)
    print(
        f"{'path':<50}{'tok/s':>8}{'x fp32':>8}{'tok/CPU-s':>10}{'x fp32':>8}"
        f"{'cos mean':>10}{'cos min':>10}{'top-10':>8}"
    )
    for r in rows:
        print(
            f"{r['path']:<50}{r['tokens_per_s']:>8}{r['x_fp32']:>8.2f}{r['tokens_per_cpu_s']:>10}"
            f"{r['x_fp32_per_cpu_s']:>8.2f}{r['dense_cos_mean']:>10.5f}{r['dense_cos_min']:>10.5f}"
            f"{r['retrieval_top10']:>8.3f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "passages": args.passages, "rounds": args.rounds}, f, indent=2)


if __name__ == "__main__":
    main()
