"""Round 2 on the device: where batch-1 time goes, and the fused / fp8 variants side by side.

python tools/round2_probe.py TOKENIZER_DIR OUT_JSON
Each section is guarded: a failure is recorded and the next section runs.
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import pstats
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from m3engine.bench.runner import load_engine
from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.types import Encoded, HeadRequest, PackedBatch

RESULTS: dict[str, Any] = {}


def ms(fn: Callable[[], object], reps: int = 30, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return float(np.median(out)) * 1e3


def section(name: str) -> Callable[[Callable[[], Any]], None]:
    def run(fn: Callable[[], Any]) -> None:
        t = time.perf_counter()
        try:
            RESULTS[name] = fn()
        except Exception:
            RESULTS[name] = {"error": traceback.format_exc()[-2000:]}
        print(f"== {name} ({time.perf_counter() - t:.0f} s):", json.dumps(RESULTS[name])[:1500], flush=True)

    return run


def kernel_checks() -> dict[str, Any]:
    from m3engine.backends.fast import kernels as K

    out: dict[str, Any] = {}
    a = torch.randn(1000, 1024, device="cuda").to(K.FP8)
    b = torch.randn(3072, 1024, device="cuda").to(K.FP8)
    sa, sb = torch.rand(1000, 1, device="cuda"), torch.rand(1, 3072, device="cuda")
    bias = torch.randn(3072, device="cuda", dtype=torch.bfloat16)
    r = torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, bias=bias, out_dtype=torch.bfloat16)
    ref = (a.float() * sa) @ (b.float() * sb).t() + bias.float()
    out["scaled_mm_rowwise_bias_odd_m_relerr"] = float((r.float() - ref).norm() / ref.norm())
    return out


def build(kind: str, tok: Path, scratch: Path) -> Path:
    return build_synthetic(kind, scratch / kind, tok)


def variants_m3(path: Path, maker: TextMaker) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    ref = load_engine(path, "cuda", "fp32", 16384, kernels="torch")
    passages = maker.passages(600)
    acc_texts = passages[:100]
    truth = ref.embed(acc_texts, sparse=True)
    del ref
    gc.collect()
    torch.cuda.empty_cache()
    uniform = PackedBatch.from_encoded(
        [Encoded(ids=[0, *rng.integers(5, 250000, 510).tolist(), 2]) for _ in range(32)]
    )
    lens = np.clip(rng.lognormal(np.log(200), 0.8, 80), 8, 2048).astype(int)
    mixed = PackedBatch.from_encoded(
        [Encoded(ids=[0, *rng.integers(5, 250000, n - 2).tolist(), 2]) for n in lens]
    )
    texts = {n: maker.text(int(n * 1.5) + 16) for n in (128, 512, 8192)}
    for name, dtype, opts in (
        ("torch", "bf16", {"kernels": "torch"}),
        ("fused", "bf16", {}),
        ("fused_erf", "bf16", {"gelu_epilogue": False}),
        ("fp8", "fp8", {}),
    ):
        try:
            out[name] = measure(load_engine(path, "cuda", dtype, 16384, **opts), texts, uniform, mixed,
                                passages, acc_texts, truth)  # fmt: skip
        except Exception:
            out[name] = {"error": traceback.format_exc()[-1500:]}
        print(name, json.dumps(out[name]), flush=True)
        gc.collect()
        torch.cuda.empty_cache()
    return out


def measure(eng: Any, texts: dict[int, str], uniform: PackedBatch, mixed: PackedBatch,
            passages: list[str], acc_texts: list[str], truth: list[Any]) -> dict[str, Any]:  # fmt: skip
    allh = HeadRequest(dense=True, sparse=True, colbert=True)
    row: dict[str, Any] = {"precision": getattr(eng.backend, "precision", "")}
    for n, text in texts.items():
        row[f"embed_{n}_ms"] = ms(lambda t=text, n=n: eng.embed([t], max_length=n), 30 if n < 8192 else 8)
    one = PackedBatch.from_encoded(eng.tokenizer.encode([texts[128]], 128))
    row["forward_128_ms"] = ms(lambda: eng.backend.forward(one, HeadRequest(dense=True)))
    dense = HeadRequest(dense=True)
    row["uniform_32x512_tok_s"] = (
        uniform.num_tokens / ms(lambda: eng.backend.forward(uniform, dense), 10) * 1e3
    )
    row["mixed_all_tok_s"] = mixed.num_tokens / ms(lambda: eng.backend.forward(mixed, allh), 10) * 1e3
    tokens = sum(e.num_tokens for e in eng.embed(passages, sparse=True, colbert=True))
    row["corpus600_all_tok_s"] = (
        tokens / ms(lambda: eng.embed(passages, sparse=True, colbert=True), 3, 1) * 1e3
    )
    got = eng.embed(acc_texts, sparse=True)
    d = np.stack([g.dense for g in got])
    r = np.stack([t.dense for t in truth])
    cos = (d * r).sum(-1) / np.linalg.norm(d, axis=-1) / np.linalg.norm(r, axis=-1)
    ov = []
    for g, t in zip(got, truth, strict=True):
        k = min(10, len(t.sparse.indices))
        if k:
            ov.append(len(set(g.sparse.top_k(k).indices) & set(t.sparse.top_k(k).indices)) / k)
    row.update(cos_mean=float(cos.mean()), cos_min=float(cos.min()), sparse_top10=float(np.mean(ov)))
    return row


def host_breakdown(path: Path, maker: TextMaker) -> dict[str, Any]:
    eng = load_engine(path, "cuda", "bf16", 16384)
    out: dict[str, Any] = {}
    for n in (128, 8192):
        text = maker.text(int(n * 1.5) + 16)
        reps = 30 if n < 8192 else 8
        enc = eng.tokenizer.encode([text], n)
        batch = PackedBatch.from_encoded(enc)
        row = {
            "tokenize_ms": ms(lambda t=text, n=n: eng.tokenizer.encode([t], n), reps),
            "from_encoded_ms": ms(lambda e=enc: PackedBatch.from_encoded(e), reps),
            "hidden_states_ms": ms(lambda b=batch: eng.backend.hidden_states(b), reps),  # type: ignore[attr-defined]
            "forward_ms": ms(lambda b=batch: eng.backend.forward(b, HeadRequest(dense=True)), reps),
            "embed_ms": ms(lambda t=text, n=n: eng.embed([t], max_length=n), reps),
        }
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(5):
            eng.embed([text], max_length=n)
        torch.cuda.synchronize()
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
        row["cprofile"] = buf.getvalue()[-3500:]
        out[str(n)] = row
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
        for _ in range(5):
            eng.embed([maker.text(200)], max_length=128)
        torch.cuda.synchronize()
    out["cuda_128"] = p.key_averages().table(sort_by="cuda_time_total", row_limit=12)[-3000:]
    return out


def rerank(path: Path, maker: TextMaker) -> dict[str, Any]:
    out: dict[str, Any] = {}
    query = maker.text(24)
    passages = maker.texts(maker.uniform_lengths(100, 250, 350))
    ref = load_engine(path, "cuda", "fp32", 16384, kernels="torch")
    truth = np.array(
        [r.logit for r in sorted(ref.rerank(query, passages, max_length=512), key=lambda r: r.index)]
    )
    del ref
    runs = (
        ("bf16", "bf16", 16384),
        ("fp16", "fp16", 16384),
        ("fp16_b40k", "fp16", 40000),
        ("fp8", "fp8", 16384),
    )
    for name, dtype, budget in runs:
        try:
            eng = load_engine(path, "cuda", dtype, budget)
            encoded = eng.tokenizer.encode_pairs([query] * 100, passages, 512, 384)
            got = np.array(
                [r.logit for r in sorted(eng.rerank(query, passages, max_length=512), key=lambda r: r.index)]
            )
            from scipy.stats import spearmanr

            out[name] = {
                "rerank_ms": ms(lambda e=eng: e.rerank(query, passages, max_length=512), 15),
                "encode_pairs_ms": ms(
                    lambda e=eng: e.tokenizer.encode_pairs([query] * 100, passages, 512, 384), 15
                ),
                "run_ms": ms(lambda e=eng, x=encoded: e._run(x, HeadRequest(logits=True), None), 15),
                "tokens": sum(len(e) for e in encoded),
                "spearman": float(spearmanr(got, truth).statistic),
            }
            del eng
        except Exception:
            out[name] = {"error": traceback.format_exc()[-1500:]}
        print(name, out[name], flush=True)
        gc.collect()
        torch.cuda.empty_cache()
    return out


def main() -> None:
    tok, dest = Path(sys.argv[1]), Path(sys.argv[2])
    maker = TextMaker(Tokenizer.from_file(str(tok / "tokenizer.json")))
    scratch = Path(tempfile.mkdtemp())
    section("kernels")(kernel_checks)
    m3 = build("bge-m3", tok, scratch)
    section("host")(lambda: host_breakdown(m3, maker))
    section("variants")(lambda: variants_m3(m3, maker))
    rr = build("bge-reranker-v2-m3", tok, scratch)
    section("rerank")(lambda: rerank(rr, maker))
    dest.write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
