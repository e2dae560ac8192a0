"""The Triton varlen attention kernel (varlen_attention.py) against flash attention's varlen_attn on the
bench's passage batches (device machine), per BLOCK config.

Lengths as tools/varlen_probe.py: lognormal, median 200, sigma 0.8, 8..2,048, planned into batches of
16,384 tokens (at most 256 sequences) longest first, as the engine plans them; a second corpus of
short inputs (8..64 tokens, query-sized). q/k/v are strided views of one (T, 3 x 1,024) product,
16 heads x 64, bf16. Per variant: ms per pass over all batches (CUDA events, mean of REPS passes
after a warm-up pass that also compiles), attention TFLOP/s (4 n^2 nh hd per sequence), the ratio to
flash, and the largest |difference| to flash's output. Variants: flash; each Triton config with its
block table built per call; the default config with the table prebuilt once per batch; the engine's
`attention()` with inputs planned as the fast backend plans them (once per batch).

    PYTHONPATH=src python tools/varlen_triton_probe.py [OUT_JSON]             # CUDA
    TRITON_INTERPRET=1 PYTHONPATH=src python tools/varlen_triton_probe.py --dry   # CPU: small, slow

The dry run checks the plumbing only: tiny batches, two configs, fp16, per-sequence SDPA in fp32
standing in for flash; its times mean nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DRY = "--dry" in sys.argv
if DRY:  # before triton.jit decorates the kernel
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, str(ROOT))
    from tests.triton_interpreter import allow_loaded_loop_bounds

    allow_loaded_loop_bounds()

from m3engine.backends.fast import encoder  # noqa: E402
from m3engine.backends.fast.encoder import PackedInputs  # noqa: E402
from m3engine.backends.fast.varlen_attention import (  # noqa: E402
    CONFIGS,
    DEFAULT,
    Config,
    attention_triton,
    plan_attention,
    plan_blocks,
)
from m3engine.scheduling.batching import plan_batches  # noqa: E402

NH, HD = (2, 64) if DRY else (16, 64)
DEVICE = "cpu" if DRY else "cuda"
DTYPE = torch.float16 if DRY else torch.bfloat16
REPS = 1 if DRY else 10
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, tuple[int, ...]]
Attn = Callable[[Batch], torch.Tensor]


def corpus(name: str, seed: int = 0) -> list[list[int]]:
    """Lengths of each planned batch."""
    rng = np.random.default_rng(seed)
    if DRY:  # a few small batches, still ragged, with a 1-token input
        raw = np.exp(rng.normal(np.log(24), 0.8, 12))
        lengths = [1, *np.clip(np.round(raw), 2, 100).astype(int).tolist()]
        return [[lengths[i] for i in b] for b in plan_batches(lengths, 160, 256, False)]
    if name == "passages":
        raw = np.exp(rng.normal(np.log(200), 0.8, 2000))
        lengths = np.clip(np.round(raw), 8, 2048).astype(int).tolist()
    else:
        lengths = rng.integers(8, 65, 4000).tolist()
    return [[lengths[i] for i in b] for b in plan_batches(lengths, 16384, 256, False)]


def make_batch(lengths: list[int]) -> Batch:
    t = sum(lengths)
    qkv = torch.randn(t, 3 * NH * HD, device=DEVICE).to(DTYPE)
    q, k, v = qkv.view(t, 3, NH, HD).unbind(1)  # (T, nh, hd) views, as the encoder makes them
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return q, k, v, cu.to(DEVICE), max(lengths), tuple(lengths)


def flash(b: Batch) -> torch.Tensor:
    q, k, v, cu, max_len, lengths = b
    if DRY:  # no flash attention on the CPU: fp32 SDPA per sequence stands in
        return encoder._per_sequence(q.float(), k.float(), v.float(), lengths).to(q.dtype)
    from torch.nn.attention.varlen import varlen_attn

    out = varlen_attn(q, k, v, cu, cu, max_len, max_len)
    assert isinstance(out, torch.Tensor)
    return out


def triton_variant(config: Config) -> Attn:
    def run(b: Batch) -> torch.Tensor:
        return attention_triton(b[0], b[1], b[2], b[3], b[4], config)

    return run


def prebuilt_variant(data: list[Batch], config: Config) -> Attn:
    tables = {id(b): plan_blocks(b[3], b[0].shape[0], config.block_m) for b in data}

    def run(b: Batch) -> torch.Tensor:
        return attention_triton(b[0], b[1], b[2], b[3], b[4], config, table=tables[id(b)])

    return run


def engine_variant(data: list[Batch]) -> Attn:
    """encoder.attention() as the fast backend calls it: the inputs carry a plan built once per batch."""
    plans = {}
    for b in data:
        ids = torch.zeros(b[0].shape[0], dtype=torch.long, device=b[0].device)
        plans[id(b)] = plan_attention(PackedInputs(ids, ids, ids, b[3], b[4], b[5]))

    def run(b: Batch) -> torch.Tensor:
        return encoder.attention(b[0], b[1], b[2], plans[id(b)], varlen=True)  # only >= 2,048: SDPA

    return run


def time_pass(fn: Attn, data: list[Batch]) -> float:
    """ms per pass over all batches."""
    if DRY:
        start = time.perf_counter()
        for b in data:
            fn(b)
        return (time.perf_counter() - start) * 1e3
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(REPS):
        for b in data:
            fn(b)
    end.record()
    torch.cuda.synchronize()
    return begin.elapsed_time(end) / REPS


def probe(name: str) -> list[dict[str, Any]]:
    planned = corpus(name)
    data = [make_batch(b) for b in planned]
    flops = sum(4 * n * n * NH * HD for b in planned for n in b)
    configs = {"64x64s3": DEFAULT, "32x16": Config(32, 16)} if DRY else CONFIGS
    default = next(n for n, c in configs.items() if c == DEFAULT)
    variants: dict[str, Attn] = {"flash varlen": flash}
    variants.update({f"triton {n}": triton_variant(c) for n, c in configs.items()})
    variants[f"triton {default} prebuilt table"] = prebuilt_variant(data, DEFAULT)
    variants[f"engine (triton {default})"] = engine_variant(data)
    reference = [flash(b) for b in data]
    tokens = sum(map(sum, planned))
    print(f"{name}: {len(planned)} batches, {tokens} tokens, {sum(map(len, planned))} sequences", flush=True)
    rows: list[dict[str, Any]] = []
    base_ms = None
    for label, fn in variants.items():
        outs = [fn(b) for b in data]  # warm-up; compiles each config once
        diff = max(float((o.float() - r.float()).abs().max()) for o, r in zip(outs, reference, strict=True))
        ms = time_pass(fn, data)
        base_ms = base_ms or ms
        row = {"corpus": name, "variant": label, "ms": ms, "tflops": flops / ms / 1e9, "max_diff": diff}
        rows.append({**row, "vs_flash": base_ms / ms})
        print(
            f"  {label:32s} {ms:8.3f} ms/pass  {flops / ms / 1e9:6.1f} TFLOP/s  "
            f"x{base_ms / ms:5.2f} vs flash  max|diff| {diff:.2e}",
            flush=True,
        )
    return rows


def main() -> None:
    rows = [row for name in (("dry",) if DRY else ("passages", "short")) for row in probe(name)]
    args = [a for a in sys.argv[1:] if a != "--dry"]
    if args:
        gpu = "cpu (interpreter)" if DRY else torch.cuda.get_device_name()
        Path(args[0]).write_text(json.dumps({"gpu": gpu, "dtype": str(DTYPE), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
