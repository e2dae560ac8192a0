"""Checks of the Triton varlen attention kernel, run by tests/test_varlen_attention.py in a child process
with TRITON_INTERPRET=1 (chosen before triton.jit decorates; kept out of the test process).
Usage: python -m tests.varlen_attention_checks. Prints one line per check, exits non-zero on a failure.

bf16 is not checked here: Triton 3.6's interpreter computes bf16 dots wrongly (errors ~1e8 on this
kernel, as small_gemm's checks found); fp16 stands in, and tests/gpu compares bf16 with varlen_attn.
"""

from __future__ import annotations

import math
import os

os.environ["TRITON_INTERPRET"] = "1"

import torch

from tests.triton_interpreter import allow_loaded_loop_bounds

allow_loaded_loop_bounds()

from m3engine.backends.fast.inputs import AttentionConfig, PackedInputs  # noqa: E402
from m3engine.backends.fast.varlen_attention import DEFAULT, attention_triton, plan_blocks  # noqa: E402

# 1-token and empty sequences, lengths around and off the block sizes, one of several blocks (200 =
# 12.5 blocks of 16); two neighbours of length 1 and 3 where a leak across the boundary is loud; 127 =
# one block of 64 and a ragged end of 63 (two steps of a 32-key tail).
LENGTHS = (1, 17, 64, 65, 0, 3, 1, 130, 200, 5, 127)
PAD = 7  # rows past cu_seqlens[-1], as a CUDA-graph bucket has: no sequence owns them


def reference(qkv: torch.Tensor, lengths: tuple[int, ...]) -> torch.Tensor:
    """Plain per-sequence, per-head softmax attention in fp64; (sum(lengths), nh, hd)."""
    q, k, v = qkv.double().unbind(1)  # (T, nh, hd) each
    out, start = [], 0
    for n in lengths:
        qs, ks, vs = (x[start : start + n].transpose(0, 1) for x in (q, k, v))  # (nh, n, hd)
        w = torch.softmax(qs @ ks.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)  # (nh, n, n)
        out.append((w @ vs).transpose(0, 1))
        start += n
    return torch.cat(out)


def packed(lengths: tuple[int, ...], nh: int, hd: int, dtype: torch.dtype, seed: int) -> tuple:
    """(qkv (T, 3, nh, hd), q, k, v strided views as the encoder makes them, cu_seqlens int32)."""
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    qkv = torch.randn(total + PAD, 3 * nh * hd, generator=g)
    qkv[total:] = 1e4  # padding rows: a kernel that read them would be far off
    qkv = qkv.to(dtype).view(total + PAD, 3, nh, hd)
    q, k, v = qkv.unbind(1)  # (T, nh, hd), row stride 3 nh hd, head stride hd
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return qkv, q, k, v, cu


def check_values(dtype: torch.dtype, atol: float) -> None:
    nh, hd = 2, 32
    qkv, q, k, v, cu = packed(LENGTHS, nh, hd, dtype, seed=1)
    total = sum(LENGTHS)
    ref = reference(qkv[:total], LENGTHS)
    # The data tells a leak apart: attending over the two neighbours 3 and 1 as one sequence, or
    # over the whole batch, moves outputs by far more than atol.
    merged = reference(qkv[:total], (*LENGTHS[:5], 4, *LENGTHS[7:]))
    assert (merged - ref).abs().max() > 100 * atol
    whole = reference(qkv[:total], (total,))
    assert (whole - ref).abs().max() > 100 * atol
    # tail: the ragged end of a sequence in steps of fewer keys than block_n (one step or several)
    Cfg = AttentionConfig
    full = (Cfg(16, 16), Cfg(32, 16), Cfg(64, 64), Cfg(64, 64, tail=16), Cfg(32, 64, 4, 2, 32))
    full += (DEFAULT,)  # the backend's: 64 x 64, a 32-key tail
    configs = full if dtype == torch.float32 else (Cfg(16, 16), Cfg(16, 32, tail=16))
    for c in configs:
        # into a NaN-filled buffer: the padding rows must stay untouched (a store without its row
        # mask would write the last sequence's spare query rows there)
        out = torch.full_like(q, float("nan"))
        assert attention_triton(q, k, v, cu, max(LENGTHS), c, out=out) is out
        assert out[total:].isnan().all()
        err = float((out[:total].double() - ref).abs().max())
        assert err < atol, (dtype, c, err)
        print(f"{dtype} {c.block_m}x{c.block_n} tail {c.tail} max |err| {err:.2e} (atol {atol:g})")


def check_bge_m3_shape() -> None:
    """nh = 16, hd = 64 as BGE-M3; a prebuilt table gives the same output as one built per call."""
    lengths = (9, 70, 1, 33)
    qkv, q, k, v, cu = packed(lengths, 16, 64, torch.float32, seed=2)
    total = sum(lengths)
    table = plan_blocks(cu, q.shape[0], 64)
    out = attention_triton(q, k, v, cu, max(lengths), AttentionConfig(64, 64), table=table)
    err = float((out[:total].double() - reference(qkv[:total], lengths)).abs().max())
    assert err < 1e-5, err
    again = attention_triton(q, k, v, cu, max(lengths), AttentionConfig(64, 64))  # a new (T, nh, hd) output
    assert again.shape == q.shape and again.dtype == q.dtype and again.is_contiguous()
    assert torch.equal(out[:total], again[:total])
    print(f"bge-m3 shape ok, max |err| {err:.2e}")


def check_plan_blocks() -> None:
    """Every (sequence, query block) in exactly one slot; the rest marked empty (sequence N)."""
    cases = (
        ([1, 0, 16, 17, 40], 16, 3),  # 1 token, empty, exact and ragged multiples; 3 padding rows
        ([64] * 8, 64, 0),
        ([1] * 30, 32, 0),
        ([200, 3, 129], 64, 0),
        ([16, 16, 16, 0, 0], 16, 40),  # graphs.py pads cu_seqlens with empty sequences, rows too
        ([5], 16, 0),
    )
    for lengths, block, pad in cases:
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        total = sum(lengths) + pad
        table = plan_blocks(cu, total, block)
        assert table.dtype == torch.int32 and table.shape == (total // block + len(lengths) + 1, 2)
        real = sorted((s, b) for s, b in table.tolist() if s < len(lengths))
        want = [(i, b) for i, n in enumerate(lengths) for b in range(-(-n // block))]
        assert real == want, (lengths, block, table.tolist())
        assert ((table[:, 0] >= 0) & (table[:, 0] <= len(lengths))).all()
    table = plan_blocks(torch.tensor([0, 1, 1, 17, 34, 74], dtype=torch.int32), 77, 16)
    assert table[:, 0].tolist() == [0, 5, 2, 5, 3, 3, 4, 4, 4, 5]  # the layout the kernel doc gives
    print("plan blocks ok")


def check_engine_hook() -> None:
    """encoder.attention() runs this kernel when the inputs carry a plan (here on the CPU): its
    output is the kernel's, bit for bit, with the plan's table and config."""
    from m3engine.backends.fast.encoder import attention
    from m3engine.backends.fast.varlen_attention import plan_attention

    lengths = (5, 40, 1)
    qkv, q, k, v, cu = packed(lengths, 2, 16, torch.float32, seed=3)
    ids = torch.zeros(q.shape[0], dtype=torch.long)
    planned = plan_attention(PackedInputs(ids, ids, ids, cu, max(lengths), lengths))
    out = attention(q, k, v, planned, varlen=True)
    plan = planned.attention_plan
    assert plan is not None and plan.config == DEFAULT
    direct = attention_triton(q, k, v, cu, max(lengths), plan.config, plan.table)
    total = sum(lengths)
    assert torch.equal(out[:total], direct[:total])
    err = float((out[:total].double() - reference(qkv[:total], lengths)).abs().max())
    assert err < 1e-5, err
    print(f"engine hook ok, max |err| {err:.2e}")


if __name__ == "__main__":
    check_values(torch.float32, 1e-5)
    check_values(torch.float16, 4e-3)
    check_plan_blocks()
    check_bge_m3_shape()
    check_engine_hook()
    print("varlen attention ok")
