"""The matrix-product rate this GPU reaches on BGE-M3's layer shapes, and what it bounds a rerank to.

    PYTHONPATH=src python3 tools/gemm_peak_probe.py [--tokens 32991] [--batch 16384]

For bf16, fp16 and fp8 (e4m3, `torch._scaled_mm` with per-row / per-column scales, bf16 out) it
times the four products of one XLM-R-large layer at M = --batch rows (QKV 1024 -> 3072, attention-out
1024 -> 1024, FFN-in 1024 -> 4096, FFN-out 4096 -> 1024) and one large square product, each the
median of 50 runs by CUDA events. From the layer's four products it prints the time the products
alone take for --tokens tokens through 24 layers (the bench's rerank of one query and 100 passages:
32,991 tokens), which no engine can undercut with these kernels: attention, LayerNorms, the
embedding, tokenization and copies all come on top.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

LAYERS = 24
SHAPES = {"qkv": (1024, 3072), "attn-out": (1024, 1024), "ffn-in": (1024, 4096), "ffn-out": (4096, 1024)}


def _time_ms(fn: Callable[[], object], runs: int = 50) -> float:
    for _ in range(5):
        fn()
    times: list[float] = []
    for _ in range(runs):
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)))
    return statistics.median(times)


def _product(dtype: str, m: int, k: int, n: int) -> Callable[[], torch.Tensor]:
    """A callable running one (m, k) x (k, n) product in `dtype`."""
    x = torch.randn(m, k, device="cuda")
    w = torch.randn(n, k, device="cuda")  # (N, K) as a checkpoint stores it
    if dtype == "fp8":
        x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        sx = torch.ones(m, 1, device="cuda")
        sw = torch.ones(1, n, device="cuda")
        return lambda: torch._scaled_mm(x8, w8.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    xh, wh = x.to(half), w.to(half)
    return lambda: torch.nn.functional.linear(xh, wh)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=32991)
    parser.add_argument("--batch", type=int, default=16384)
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__)
    for dtype in ("bf16", "fp16", "fp8"):
        cells, layer_ms = [], 0.0
        for name, (k, n) in SHAPES.items():
            ms = _time_ms(_product(dtype, args.batch, k, n))
            layer_ms += ms
            cells.append(f"{name} {2 * args.batch * k * n / ms / 1e9:.0f}")
        square = _time_ms(_product(dtype, 8192, 8192, 8192))
        flops = 2 * args.batch * sum(k * n for k, n in SHAPES.values())
        floor = layer_ms * LAYERS * args.tokens / args.batch
        print(
            f"{dtype}: TFLOP/s at M={args.batch}: {', '.join(cells)}; one layer's four {layer_ms:.3f} ms "
            f"({flops / layer_ms / 1e9:.0f} TFLOP/s); 8192^3 {2 * 8192**3 / square / 1e9:.0f} TFLOP/s; "
            f"products alone for {args.tokens} tokens x {LAYERS} layers: {floor:.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
