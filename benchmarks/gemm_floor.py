"""The matrix-product rate this GPU reaches on BGE-M3's layer shapes, and the floor it sets a rerank.

    python benchmarks/gemm_floor.py [--tokens 32991] [--batch 16384] [--dtypes bf16,fp16,fp8]

Torch alone (cuBLAS; no m3engine code). For each dtype (fp8: e4m3 through torch._scaled_mm with
per-row / per-column scales, bf16 out) it times the four products of one XLM-R-large layer at
M = --batch rows (QKV 1024 -> 3072, attention-out 1024 -> 1024, FFN-in 1024 -> 4096, FFN-out
4096 -> 1024) and one --square^3 product, each the median of --runs runs by CUDA events. It prints
per dtype one line: TFLOP/s of each product, the layer's four together, the square product, and the
time the products alone take for --tokens tokens through 24 layers (the bench's rerank of one query
and 100 passages is 32,991 tokens). No engine with these kernels can undercut that floor: attention,
LayerNorms, the embedding, tokenization and copies all come on top.

`--device cpu` times the same products on the CPU (wall clock; no fp8): a dry run, e.g.
`--device cpu --batch 64 --square 256 --runs 2 --dtypes bf16`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

LAYERS = 24
SHAPES = {"qkv": (1024, 3072), "attn-out": (1024, 1024), "ffn-in": (1024, 4096), "ffn-out": (4096, 1024)}


def time_ms(fn: Callable[[], object], device: str, runs: int) -> float:
    """Median milliseconds of `fn` over `runs` runs, after 5 warm-up runs."""
    for _ in range(5):
        fn()
    times: list[float] = []
    for _ in range(runs):
        if device == "cpu":
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
            continue
        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(float(start.elapsed_time(end)))
    return statistics.median(times)


def product(dtype: str, m: int, k: int, n: int, device: str) -> Callable[[], torch.Tensor]:
    """A callable running one (m, k) x (k, n) product in `dtype`."""
    x = torch.randn(m, k, device=device)  # (M, K)
    w = torch.randn(n, k, device=device)  # (N, K), as a checkpoint stores a Linear's weight
    if dtype == "fp8":
        x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        sx = torch.ones(m, 1, device=device)  # (M, 1) per-row scales
        sw = torch.ones(1, n, device=device)  # (1, N) per-column scales
        return lambda: torch._scaled_mm(x8, w8.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    xh, wh = x.to(half), w.to(half)
    return lambda: torch.nn.functional.linear(xh, wh)  # (M, N)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=32991, help="tokens whose floor to print")
    p.add_argument("--batch", type=int, default=16384, help="rows M of each layer product")
    p.add_argument("--square", type=int, default=8192, help="side of the square product")
    p.add_argument("--dtypes", default="bf16,fp16,fp8", help="of fp32, bf16, fp16, fp8 (CUDA only)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per product")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    return p


def main() -> None:
    args = parser().parse_args()
    dtypes = args.dtypes.split(",")
    if args.device == "cpu":
        print("cpu", torch.__version__)
        dtypes = [d for d in dtypes if d != "fp8"]
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: pass --device cpu for a dry run")
    else:
        torch.cuda.set_device(torch.device(args.device).index or 0)
        print(torch.cuda.get_device_name(), torch.__version__)
    m, side = args.batch, args.square
    for dtype in dtypes:
        cells, layer_ms = [], 0.0
        for name, (k, n) in SHAPES.items():
            ms = time_ms(product(dtype, m, k, n, args.device), args.device, args.runs)
            layer_ms += ms
            cells.append(f"{name} {2 * m * k * n / ms / 1e9:.1f}")
        square = time_ms(product(dtype, side, side, side, args.device), args.device, args.runs)
        flops = 2 * m * sum(k * n for k, n in SHAPES.values())
        floor = layer_ms * LAYERS * args.tokens / m
        print(
            f"{dtype}: TFLOP/s at M={m}: {', '.join(cells)}; one layer's four {layer_ms:.3f} ms "
            f"({flops / layer_ms / 1e9:.1f} TFLOP/s); {side}^3 {2 * side**3 / square / 1e9:.1f} TFLOP/s; "
            f"products alone for {args.tokens} tokens x {LAYERS} layers: {floor:.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
