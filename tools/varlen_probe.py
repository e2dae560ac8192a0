"""Attention over packed batches of mixed lengths (device machine): flash varlen_attn against cuDNN's
ragged attention (`torch.ops.aten._cudnn_attention_forward` with cumulative lengths, the call that
torch's own varlen path makes when it picks cuDNN), on the bench's passage lengths.

Lengths: lognormal, median 200, sigma 0.8, 8..2,048 (the bench's mixed passages), planned into
batches of 16,384 tokens longest first as the engine plans them. q/k/v are strided views of one
(T, 3 x 1,024) product, 16 heads x 64, bf16. For each variant: total time over all batches, attention
TFLOP/s, largest difference to varlen_attn, and the time of the first call on a new shape (cuDNN
builds a graph per shape).

    PYTHONPATH=src python3 tools/varlen_probe.py [OUT_JSON]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.attention.varlen import varlen_attn

from m3engine.scheduling.batching import plan_batches

NH, HD = 16, 64
Attn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len)
    assert isinstance(out, torch.Tensor)
    return out


def cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
    out = torch.ops.aten._cudnn_attention_forward(
        q, k, v, None, cu, cu, max_len, max_len, False, 0.0, False, False
    )
    return out[0]


def cudnn_contiguous(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int
) -> torch.Tensor:
    return cudnn(q.contiguous(), k.contiguous(), v.contiguous(), cu, max_len)


def batches(seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(np.exp(rng.normal(np.log(200), 0.8, 2000))), 8, 2048).astype(int).tolist()
    return [[lengths[i] for i in b] for b in plan_batches(lengths, 16384, 256, False)]


def inputs(lengths: list[int]) -> tuple[torch.Tensor, ...]:
    t = sum(lengths)
    qkv = torch.randn(t, 3 * NH * HD, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.view(t, 3, NH, HD).unbind(1)  # (T, nh, hd) views, as the encoder makes them
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return q, k, v, cu.cuda()


def main() -> None:
    planned = batches()
    data = [(inputs(b), max(b)) for b in planned]
    flops = sum(4 * n * n * NH * HD for b in planned for n in b)
    reference = [flash(*x, m) for x, m in data]
    torch.cuda.synchronize()
    rows: list[dict[str, Any]] = []
    variants: dict[str, Attn] = {
        "flash varlen": flash,
        "cudnn ragged": cudnn,
        "cudnn contiguous": cudnn_contiguous,
    }
    for name, fn in variants.items():
        try:
            start = time.perf_counter()
            outs = [fn(*x, m) for x, m in data]  # first calls: one new shape per batch
            torch.cuda.synchronize()
            first_ms = (time.perf_counter() - start) * 1e3
            diff = max(
                float((o.float() - r.float()).abs().max()) for o, r in zip(outs, reference, strict=True)
            )
            reps = 10
            start = time.perf_counter()
            for _ in range(reps):
                for x, m in data:
                    fn(*x, m)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - start) * 1e3 / reps
        except RuntimeError as error:
            print(f"{name}: unavailable ({str(error).splitlines()[0][:120]})", flush=True)
            continue
        row = {
            "variant": name,
            "ms": ms,
            "tflops": flops / ms / 1e9,
            "max_diff": diff,
            "first_pass_ms": first_ms,
        }
        rows.append(row)
        print(
            f"{name}: {len(planned)} batches, {ms:.2f} ms per pass ({flops / ms / 1e9:.0f} TFLOP/s), "
            f"max |diff| to flash {diff:.2e}, first pass {first_ms:.0f} ms",
            flush=True,
        )
    # A second corpus: new shapes, to see whether cuDNN rebuilds graphs for every (T, max_len).
    fresh = [(inputs(b), max(b)) for b in batches(seed=1)]
    for name, fn in variants.items():
        if not any(r["variant"] == name for r in rows):
            continue
        torch.cuda.synchronize()
        start = time.perf_counter()
        for x, m in fresh:
            fn(*x, m)
        torch.cuda.synchronize()
        print(f"{name}: first pass over new shapes {(time.perf_counter() - start) * 1e3:.0f} ms", flush=True)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(
            json.dumps({"gpu": torch.cuda.get_device_name(), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
