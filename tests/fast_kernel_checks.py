"""Checks of the Triton kernels and the fused encoder, run by tests/test_fast_kernels.py in a child
process with TRITON_INTERPRET=1 (the interpreter must be chosen before triton.jit decorates, and
must not leak into other tests of the same process). Usage: python -m tests.fast_kernel_checks CKPT.

Prints one line per check and exits non-zero on the first failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"

import torch
from torch.nn import functional as F


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def check_row_kernels() -> None:
    from m3engine.backends.fast import kernels as K

    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    t, n, f = 29, 96, 200  # not powers of two: the masks matter
    x, r = torch.randn(t, n, generator=g), torch.randn(t, n, generator=g)
    bias, w, lb = (torch.randn(n, generator=g) for _ in range(3))
    y, q = K.add_layernorm(x, bias, r, w, lb, 1e-5, quant=True)
    ref = F.layer_norm(x + bias + r, (n,), w, lb, 1e-5)
    assert _rel(y, ref) < 1e-6, _rel(y, ref)
    assert q is not None and q[0].dtype == K.FP8 and q[1].shape == (t, 1)
    # scale = row amax / 448 exactly. The values only loosely: Triton 3.6's interpreter casts to
    # e4m3 wrongly where rounding carries into the next binade (126.8 -> 64, not 128; ~2 % of
    # values), so the exact comparison with torch's cast is a GPU test (tests/gpu).
    torch.testing.assert_close(q[1][:, 0], ref.abs().amax(1) / K.FP8_MAX, rtol=1e-6, atol=0)
    assert _rel(q[0].float() * q[1], ref) < 0.1
    y2, q2 = K.add_layernorm(x, None, r, w, lb, 1e-5)
    assert q2 is None and _rel(y2, F.layer_norm(x + r, (n,), w, lb, 1e-5)) < 1e-6
    h, hb = torch.randn(t, f, generator=g) * 3, torch.randn(f, generator=g)
    gelu, hq = K.bias_gelu(h, hb, store=True, quant=True)
    assert gelu is not None and hq is not None
    assert _rel(gelu, F.gelu(h + hb)) < 1e-6, _rel(gelu, F.gelu(h + hb))
    assert _rel(hq[0].float() * hq[1], F.gelu(h + hb)) < 0.1
    none, only = K.bias_gelu(h, None, store=False, quant=True)
    assert none is None and only is not None
    word, pos, types = torch.randn(50, n, generator=g), torch.randn(20, n, generator=g), torch.randn(2, n)
    ids, ps = torch.randint(0, 50, (t,), generator=g), torch.randint(0, 20, (t,), generator=g)
    ts = torch.randint(0, 2, (t,), generator=g)
    e, _ = K.embed_layernorm(ids, ps, ts, word, pos, types, w, lb, 1e-5)
    eref = F.layer_norm(word[ids] + pos[ps] + types[ts], (n,), w, lb, 1e-5)
    assert _rel(e, eref) < 1e-6, _rel(e, eref)
    print("row kernels ok")


def check_small_gemm() -> None:
    """Split-K GEMMs (every mode) and their consumers against fp32 torch, odd and even shapes."""
    from m3engine.backends.fast import small_gemm as sg

    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    c1, c3 = sg.Config(16, 32, 32, 1), sg.Config(16, 32, 32, 3)  # K = 80, split 3: last chunk masked
    atomic, even = sg.Config(16, 16, 16, 2, atomic=True), sg.Config(64, 32, 64, 2)  # K = 128: EVEN_K
    f32, f16 = torch.float32, torch.float16  # the interpreter's bf16 dots are wrong: fp16 stands in
    cases = (
        (f32, 48, 80, 7, c1), (f32, 48, 80, 1, c3), (f32, 48, 80, 64, atomic), (f32, 64, 128, 64, even),
        (f32, 64, 128, 7, c3), (f16, 48, 80, 7, c3), (f16, 64, 128, 64, c1), (f16, 48, 80, 1, atomic),
        (f16, 64, 128, 7, even),
    )  # fmt: skip
    acts = {None: lambda v: v, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "gelu": F.gelu}
    for i, (dtype, n, k, m, c) in enumerate(cases):
        tol = 1e-5 if dtype == f32 else 2e-3
        x, w = torch.randn(m, k, generator=g).to(dtype), torch.randn(n, k, generator=g).to(dtype)
        bias, res = torch.randn(n, generator=g).to(dtype), torch.randn(m, n, generator=g).to(dtype)
        lw, lb = torch.randn(n, generator=g), torch.randn(n, generator=g)
        ref = x.float() @ w.float().t()
        parts = sg.splitk_parts(x, w, c)
        assert parts.dtype == f32 and _rel(parts.sum(0), ref) < 1e-5, (i, _rel(parts.sum(0), ref))
        act = list(acts)[i % 3]
        y, yref = sg.small_linear(x, w, bias, act, c), acts[act](ref + bias.float())
        assert y.dtype == dtype and y.shape == (m, n) and _rel(y, yref) < tol, (i, act, _rel(y, yref))
        ln = sg.parts_add_layernorm(parts, bias, res, lw, lb, 1e-5)
        lref = F.layer_norm(ref + bias.float() + res.float(), (n,), lw, lb, 1e-5)
        assert ln.dtype == dtype and _rel(ln, lref) < tol, (i, _rel(ln, lref))
    assert sg.config_for(1024, 4096, 4096) is None  # beyond the table: cuBLAS
    assert sg.heuristic(48, 80, 7).block_m == 16
    print("small gemm ok")


def check_fused_encoder(path: Path) -> None:
    """The fused encoder (fp32 and fp8 matrix products) against encoder.py on a packed batch."""
    from m3engine.backends.fast.encoder import encode, to_device
    from m3engine.backends.fast.fp8 import quantize_layers
    from m3engine.backends.fast.fused import encode_fused
    from m3engine.backends.fast.weights import load_encoder
    from m3engine.types import Encoded, PackedBatch

    weights = load_encoder(path, torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(3)
    items = [Encoded(ids=[0, *torch.randint(5, 200, (n,), generator=g).tolist(), 2]) for n in (1, 30, 7, 60)]
    batch = PackedBatch.from_encoded(items)
    inputs = to_device(batch, weights.config.position_offset, torch.device("cpu"))
    ref = encode(weights, inputs, False)
    fused = encode_fused(weights, inputs, None, varlen=False, gelu_epilogue=False)
    assert _rel(fused, ref) < 1e-5, _rel(fused, ref)
    print("fused fp32 ok", _rel(fused, ref))
    # every product through small_gemm (the tiny model's shapes get heuristic configs); the tanh GELU
    # is checked per kernel above: on the CPU torch's _addmm_activation computes the erf GELU
    small = encode_fused(weights, inputs, None, varlen=False, gelu_epilogue=False, small_m=4096)
    assert _rel(small, fused) < 1e-5, _rel(small, fused)
    print("fused small-M ok", _rel(small, fused))
    # the last layer on the CLS rows alone, through cuBLAS-sized and small_gemm products
    rows = torch.tensor([0, 3, 35, 44])  # each sequence's first row: lengths 3, 32, 9, 62
    assert rows.tolist() == inputs.cu_seqlens[:-1].tolist()
    for small_m in (0, 4096):
        cls = encode_fused(
            weights, inputs, None, varlen=False, gelu_epilogue=False, small_m=small_m, rows=rows
        )
        assert cls.shape == (len(items), ref.shape[1]) and _rel(cls, ref[rows]) < 1e-5, _rel(cls, ref[rows])
    print("fused CLS rows ok")
    fp8 = quantize_layers(weights.layers)
    low = encode_fused(weights, inputs, fp8, varlen=False)
    cos = F.cosine_similarity(low, ref, dim=-1)
    # A loose bound: e4m3 on a 32-wide random model is coarse (torch's own e4m3 cast in place of
    # the kernels gives mean 0.975, min 0.877 here), and the interpreter's cast is coarser still.
    # A wrong scale, transpose or row would give cosines near 0. The real gate: bench, on the GPU.
    assert cos.mean() > 0.94 and cos.min() > 0.7, (cos.mean(), cos.min())
    half = quantize_layers(weights.layers, keep_bf16=frozenset({0}))
    mixed = F.cosine_similarity(encode_fused(weights, inputs, half, varlen=False), ref, dim=-1)
    assert mixed.mean() > 0.94 and mixed.min() > 0.7, (mixed.mean(), mixed.min())
    low_cls = encode_fused(weights, inputs, fp8, varlen=False, rows=rows)  # the same kernels on fewer rows
    assert _rel(low_cls, low[rows]) < 1e-5, _rel(low_cls, low[rows])
    print("fused fp8 ok", float(cos.mean()), float(cos.min()))


if __name__ == "__main__":
    check_row_kernels()
    check_small_gemm()
    check_fused_encoder(Path(sys.argv[1]))
