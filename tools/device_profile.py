"""Where the device time of bulk work goes (device machine): token budget, kernels, attention kernels.

1. budget: dense forward rate on the bench's pre-tokenized mixed passages at several token budgets
   (the batches launched one ahead of collection, as the engine runs them);
2. kernels: torch.profiler over one pass of those passages at the default budget, device time summed
   by kernel name (matrix products, attention, LayerNorm, ...);
3. attention: one sequence of L tokens (16 heads x 64, bf16, q/k/v strided views of one QKV product as
   the encoder makes them): varlen_attn against SDPA per sequence with each backend forced, TFLOP/s.

    PYTHONPATH=src python3 tools/device_profile.py TOKENIZER_DIR SCRATCH_DIR [OUT_JSON]
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.engine import Engine
from m3engine.scheduling import pipeline
from m3engine.scheduling.batching import plan_batches
from m3engine.settings import EngineSettings


def cuda_ms(fn: Any, reps: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps * 1e3


def budget_sweep(engine: Engine, encoded: list[Any], heads: Any) -> list[dict[str, Any]]:
    lengths = [len(e) for e in encoded]
    tokens = sum(lengths)
    rows = []
    for budget in (8192, 16384, 32768, 65536):
        plan = plan_batches(lengths, budget, engine.settings.max_batch_size, False)
        ms = cuda_ms(lambda p=plan: pipeline.run_planned(engine._launcher, encoded, p, heads, None), reps=3)
        rows.append({"budget": budget, "batches": len(plan), "ms": ms, "tok_s": tokens / ms * 1e3})
        rate = tokens / ms / 1e3
        print(f"budget {budget}: {len(plan)} batches, {ms:.0f} ms, {rate:.0f} k tok/s", flush=True)
    return rows


def kernel_table(engine: Engine, encoded: list[Any], heads: Any) -> list[dict[str, Any]]:
    lengths = [len(e) for e in encoded]
    plan = plan_batches(lengths, engine.settings.max_batch_tokens, engine.settings.max_batch_size, False)
    run = lambda: pipeline.run_planned(engine._launcher, encoded, plan, heads, None)  # noqa: E731
    run()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    by_name: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", None)
        if us is None:
            us = getattr(event, "self_cuda_time_total", 0.0)
        if us > 0:
            by_name[event.key[:110]] += us
    total = sum(by_name.values())
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])
    rows = [{"kernel": k, "ms": v / 1e3, "share": v / total} for k, v in ranked]
    print(f"device time {total / 1e3:.1f} ms over {sum(lengths)} tokens; by kernel:")
    for row in rows[:30]:
        print(f"  {row['ms']:8.2f} ms {100 * row['share']:5.1f} %  {row['kernel']}")
    return rows


def attention_rows(n: int, nh: int = 16, hd: int = 64) -> list[dict[str, Any]]:
    from torch.nn.attention.varlen import varlen_attn

    qkv = torch.randn(n, 3 * nh * hd, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.view(n, 3, nh, hd).unbind(1)  # (n, nh, hd) strided, as the encoder makes them
    cu = torch.tensor([0, n], device="cuda", dtype=torch.int32)
    qs, ks, vs = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, nh, n, hd) views
    qc, kc, vc = (x.contiguous() for x in (qs, ks, vs))
    variants: dict[str, Any] = {
        "varlen_attn": lambda: varlen_attn(q, k, v, cu, cu, n, n),
        "sdpa default": lambda: F.scaled_dot_product_attention(qs, ks, vs),
    }
    backends = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)
    for backend in backends:
        for layout, (a, b, c) in (("views", (qs, ks, vs)), ("contiguous", (qc, kc, vc))):

            def call(a: Any = a, b: Any = b, c: Any = c, backend: Any = backend) -> Any:
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(a, b, c)

            variants[f"{backend.name.lower()} {layout}"] = call
    flops = 4 * n * n * nh * hd
    rows = []
    for name, fn in variants.items():
        try:
            ms = cuda_ms(fn, reps=20)
        except RuntimeError as error:
            print(f"  L={n} {name}: unavailable ({str(error).splitlines()[0][:80]})")
            continue
        rows.append({"tokens": n, "kernel": name, "ms": ms, "tflops": flops / ms / 1e9})
        print(f"  L={n} {name}: {ms:.3f} ms, {flops / ms / 1e9:.0f} TFLOP/s", flush=True)
    return rows


def attention_table() -> list[dict[str, Any]]:
    return [row for n in (256, 512, 2048, 4096, 8192) for row in attention_rows(n)]


def main() -> None:
    tokenizer, scratch = Path(sys.argv[1]), Path(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    print("attention, one sequence, 16 x 64, bf16:")
    result["attention"] = attention_table()
    path = scratch / "bge-m3"
    if not (path / "config.json").is_file():
        build_synthetic("bge-m3", path, tokenizer)
    settings = EngineSettings(model=str(path), backend="fast", device="cuda", dtype="bf16")
    engine = Engine.from_settings(settings)
    maker = TextMaker(engine.tokenizer._tok)
    passages = maker.passages(2000)
    task = engine.tasks.embed(passages, max_length=2048)
    result["budget"] = budget_sweep(engine, task.encoded, task.heads)
    result["kernels"] = kernel_table(engine, task.encoded, task.heads)
    docs = maker.long_documents(24)
    task = engine.tasks.embed(docs, max_length=8192)
    print("long documents:")
    result["long_budget"] = budget_sweep(engine, task.encoded, task.heads)
    result["long_kernels"] = kernel_table(engine, task.encoded, task.heads)
    if out:
        out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
