"""The issue's workloads, each run through the engine and through the HF baseline in the same process.

Every function returns plain dicts (JSON-ready). Times are wall-clock around work that ends on the
host (results are numpy arrays), after warm-up; each figure is the median of the repeats.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from m3engine.bench.hf import HFBaseline
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.types import HeadRequest, PackedBatch


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call, `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        out.append(time.perf_counter() - start)
    return out


def _memory() -> int:
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def _peak() -> int:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0


def _ms(times: list[float], q: float = 50) -> float:
    return float(np.percentile(times, q)) * 1e3


def latency_ladder(
    engine: Engine, hf: HFBaseline, maker: TextMaker, lengths: list[int], repeats: int = 50
) -> list[dict[str, Any]]:
    """One text at a time, text in, dense vector out: median and p90 per length."""
    rows = []
    for n in lengths:
        text = maker.text(int(n * 1.5) + 16)  # longer than n: truncation makes it exactly n tokens
        got = engine.embed([text], max_length=n)[0].num_tokens
        reps = repeats if n <= 1024 else max(1, repeats // 3)
        fast = timed(partial(engine.embed, [text], max_length=n), reps, warmup=3)
        base = timed(partial(hf.embed, [text], n), reps, warmup=3)
        rows.append(
            {
                "tokens": got,
                "fast_ms_p50": _ms(fast),
                "fast_ms_p90": _ms(fast, 90),
                "hf_ms_p50": _ms(base),
                "hf_ms_p90": _ms(base, 90),
                "speedup": _ms(base) / _ms(fast),
            }
        )
        print(f"  latency {got} tokens: fast {_ms(fast):.2f} ms, hf {_ms(base):.2f} ms", flush=True)
    return rows


def batch_sweep(
    engine: Engine, hf: HFBaseline, sizes: list[int], length: int = 512, repeats: int = 20
) -> list[dict[str, Any]]:
    """Model throughput on already-tokenized (size, length) batches: the encoder alone, no padding."""
    rng = np.random.default_rng(1)
    vocab = hf.model.config.vocab_size
    rows = []
    for size in sizes:
        ids = rng.integers(5, vocab - 1, size=(size, length))
        ids[:, 0], ids[:, -1] = 0, 2
        cu = np.arange(size + 1, dtype=np.int64) * length
        packed = PackedBatch(input_ids=ids.reshape(-1), cu_seqlens=cu)
        on_device = torch.from_numpy(ids).to(hf.device)
        reps = repeats if size <= 32 else max(1, repeats // 4)
        fast = timed(partial(engine.backend.forward, packed, HeadRequest(dense=True)), reps, 2)
        base = timed(partial(hf.forward_ids, on_device), reps, 2)
        tokens = size * length
        rows.append(
            {
                "batch_size": size,
                "tokens": tokens,
                "fast_tok_s": tokens / np.median(fast),
                "hf_tok_s": tokens / np.median(base),
                "speedup": float(np.median(base) / np.median(fast)),
            }
        )
        print(f"  batch {size}x{length}: fast {tokens / np.median(fast) / 1e3:.0f} k tok/s", flush=True)
    return rows


def corpus(engine: Engine, hf: HFBaseline, texts: list[str], max_length: int, repeats: int) -> dict[str, Any]:
    """Text in, vectors out over a whole corpus: dense only, all three outputs, and the baseline."""
    tokens = sum(e.num_tokens for e in engine.embed(texts, max_length=max_length))
    _sync()
    base_memory = _memory()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    m3 = engine.spec.kind.value == "bge-m3"
    all_three = timed(lambda: engine.embed(texts, sparse=m3, colbert=m3, max_length=max_length), repeats)
    peak = _peak() - base_memory
    dense = timed(lambda: engine.embed(texts, max_length=max_length), repeats)
    tokenize = timed(lambda: engine.tokenizer.encode(texts, max_length), repeats, 0)
    base = timed(lambda: hf.embed(texts, max_length), max(1, repeats - 1))
    out = {
        "texts": len(texts),
        "tokens": tokens,
        "fast_dense_tok_s": tokens / np.median(dense),
        "fast_all_tok_s": tokens / np.median(all_three),
        "hf_dense_tok_s": tokens / np.median(base),
        "tokenize_only_tok_s": tokens / np.median(tokenize),
        "all_over_dense_cost": float(np.median(all_three) / np.median(dense) - 1),
        "peak_activation_gb": peak / 1e9,
    }
    out["speedup_dense"] = out["fast_dense_tok_s"] / out["hf_dense_tok_s"]
    out["speedup_all"] = out["fast_all_tok_s"] / out["hf_dense_tok_s"]
    print(
        f"  corpus {len(texts)} texts {tokens} tokens: fast dense {out['fast_dense_tok_s'] / 1e3:.0f} k, "
        f"all {out['fast_all_tok_s'] / 1e3:.0f} k, hf {out['hf_dense_tok_s'] / 1e3:.0f} k tok/s",
        flush=True,
    )
    return out


def rerank(
    engine: Engine, hf: HFBaseline, query: str, passages: list[str], max_length: int, repeats: int = 20
) -> dict[str, Any]:
    """One query against its passages: the latency of one whole rerank, and pairs per second."""
    fast = timed(lambda: engine.rerank(query, passages, max_length=max_length), repeats, 3)
    base = timed(lambda: hf.score(query, passages, max_length), max(1, repeats // 2), 2)
    tokens = sum(r.num_tokens for r in engine.rerank(query, passages, max_length=max_length))
    out = {
        "pairs": len(passages),
        "tokens": tokens,
        "fast_ms_p50": _ms(fast),
        "fast_ms_p90": _ms(fast, 90),
        "hf_ms_p50": _ms(base),
        "fast_pairs_s": len(passages) / np.median(fast),
        "hf_pairs_s": len(passages) / np.median(base),
        "speedup": _ms(base) / _ms(fast),
    }
    print(f"  rerank {len(passages)} pairs: fast {_ms(fast):.2f} ms, hf {_ms(base):.2f} ms", flush=True)
    return out
