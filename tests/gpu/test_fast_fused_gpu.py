"""The fused Triton kernels and the fp8 path on CUDA: kernels against torch, fp8 within its gate.

Run on the device machine: `pytest -m gpu tests/gpu`. Skipped where torch sees no CUDA device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from m3engine.backends.base import BatchLimits
from m3engine.types import HeadRequest, PackedBatch
from tests.gpu.test_fast_gpu import ALL, _backends, _check_gate, _random_text, _states

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_row_kernels_match_torch_on_cuda() -> None:
    from m3engine.backends.fast import kernels as K

    g = torch.Generator(device="cuda").manual_seed(7)
    t, n = 1000, 1024
    x, r = (torch.randn(t, n, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    w, b, bias = (torch.randn(n, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    y, q = K.add_layernorm(x, bias, r, w, b, 1e-5, quant=True)
    ref = F.layer_norm(x.float() + bias.float() + r.float(), (n,), w.float(), b.float(), 1e-5)
    torch.testing.assert_close(y.float(), ref, atol=3e-2, rtol=1e-2)
    assert q is not None
    scale = ref.abs().amax(1, keepdim=True) / K.FP8_MAX
    torch.testing.assert_close(q[1], scale, rtol=1e-5, atol=0)
    expect = (ref / q[1]).clamp(-K.FP8_MAX, K.FP8_MAX).to(K.FP8).float()
    assert (q[0].float() != expect).float().mean().item() < 1e-3  # same rounding as torch's cast
    h = torch.randn(t, 4096, device="cuda", generator=g, dtype=torch.bfloat16) * 3
    hb = torch.randn(4096, device="cuda", generator=g, dtype=torch.bfloat16)
    gelu, _ = K.bias_gelu(h, hb)
    assert gelu is not None
    torch.testing.assert_close(gelu.float(), F.gelu(h.float() + hb.float()), atol=3e-2, rtol=1e-2)


@pytest.mark.parametrize("epilogue", [True, False])
def test_fused_bf16_matches_plain_encoder(long_dir: Path, epilogue: bool) -> None:
    """The fused Triton row kernels (tanh GELU in cuBLASLt's epilogue, which the backend runs, or
    the exact erf GELU) against the plain torch encoder, both with the Triton attention kernel."""
    from m3engine.backends.fast.encoder import encode, to_device
    from m3engine.backends.fast.fused import encode_fused
    from m3engine.backends.fast.varlen_attention import plan_attention

    fast, _, _ = _backends(long_dir, "bf16")
    assert "fused Triton row kernels" in fast.precision
    rng = np.random.default_rng(5)
    batch = PackedBatch.from_encoded([_random_text(rng, int(n)) for n in rng.integers(1, 600, 30)])
    inputs = plan_attention(to_device(batch, fast.weights.config.position_offset, torch.device("cuda")))
    with torch.inference_mode():
        a = encode_fused(fast.weights, inputs, None, varlen=True, gelu_epilogue=epilogue).float()
        b = encode(fast.weights, inputs, varlen=True).float()
    assert F.cosine_similarity(a, b, dim=-1).min().item() >= 0.999


@pytest.mark.parametrize(("dtype", "floor"), [("bf16", 0.9999), ("fp8", 0.999)])
def test_cls_only_last_layer_matches_every_row(long_dir: Path, dtype: str, floor: float) -> None:
    """The last layer on the CLS rows alone (dense-only and reranker batches) against all rows, after
    the warm-up's passes over each count of CLS rows (through a one-layer copy of the weights: in
    fp8, a stack whose last layer is not the model's, fused.encode_fused)."""
    fast, _, _ = _backends(long_dir, dtype)
    with torch.inference_mode():
        fast._choose_row_algorithms(BatchLimits(8192, 64, 1024, (HeadRequest(dense=True),)), 4096)
    rng = np.random.default_rng(6)
    for lengths in (rng.integers(1, 600, 30), [300]):
        batch = PackedBatch.from_encoded([_random_text(rng, int(n)) for n in lengths])
        full = _states(fast, batch, use_graphs=False).hidden
        cls = _states(fast, batch, use_graphs=False, cls_only=True)
        starts = torch.as_tensor(batch.cu_seqlens[:-1], device="cuda").long()  # (N,) first rows
        first = cls.cls_states()  # (N, H)
        assert cls.cls_only and first.shape == (batch.num_seqs, full.shape[1])
        assert F.cosine_similarity(first.float(), full[starts].float(), dim=-1).min().item() >= floor


def test_fp8_within_gate(long_dir: Path) -> None:
    """The issue's fp8 gate: dense cosine mean >= 0.999 and min >= 0.995; sparse top-10 >= 0.95."""
    fast, ref, _ = _backends(long_dir, "fp8")
    assert fast.fp8 is not None and len(fast.fp8.layers) == len(fast.weights.layers)
    assert "fp8" in fast.precision
    rng = np.random.default_rng(2)
    batch = PackedBatch.from_encoded([_random_text(rng, int(n)) for n in rng.integers(1, 600, 40)])
    _check_gate(fast.forward(batch, ALL), ref.forward(batch, ALL), 0.95, 0.999, 0.995, colbert_min=0.99)


def test_fp8_graph_replay_equals_eager(long_dir: Path) -> None:
    fast, _, _ = _backends(long_dir, "fp8")
    rng = np.random.default_rng(3)
    batch = PackedBatch.from_encoded([_random_text(rng, int(n)) for n in (5, 100, 37)])
    _states(fast, batch, use_graphs=True)  # asked once: eager (graphs.CAPTURE_AFTER)
    graphed = _states(fast, batch, use_graphs=True).hidden.float().clone()
    eager = _states(fast, batch, use_graphs=False).hidden.float()
    assert fast.graphs is not None and len(fast.graphs.captured) == 1
    assert F.cosine_similarity(graphed, eager, dim=-1).min().item() >= 0.9999


def test_small_m_products_match_cublas_at_bge_m3_shapes() -> None:
    """The split-K Triton products (small_gemm.py, on by default up to SMALL_M tokens for these
    shapes) against cuBLAS, on two random layers of BGE-M3's exact widths: batches of 1 to 256 rows."""
    from m3engine.backends.fast import small_gemm as sg
    from m3engine.backends.fast.fused import encode_fused
    from m3engine.backends.fast.staging import unpack
    from m3engine.backends.fast.weights import EncoderConfig, EncoderWeights, LayerWeights

    g = torch.Generator(device="cuda").manual_seed(3)
    h, f = 1024, 4096

    def rnd(*shape: int, std: float = 0.02) -> torch.Tensor:
        return (torch.randn(*shape, device="cuda", generator=g) * std).to(torch.bfloat16)

    def layer() -> LayerWeights:
        one, zero = torch.ones(h, device="cuda", dtype=torch.bfloat16), rnd(h)
        return LayerWeights(
            rnd(3 * h, h),
            rnd(3 * h),
            rnd(h, h),
            rnd(h),
            one,
            zero,
            rnd(f, h),
            rnd(f),
            rnd(h, f),
            rnd(h),
            one,
            zero,
        )

    cfg = EncoderConfig(hidden=h, heads=16, layers=2, eps=1e-5, activation="gelu", position_offset=2)
    w = EncoderWeights(
        cfg, rnd(1000, h), rnd(600, h), rnd(1, h), rnd(h, std=1) + 1, rnd(h), [layer(), layer()], None
    )
    assert sg.small_m_for(h, f) == sg.SMALL_M > 0
    for lengths in ([1], [128], [7, 60, 100, 89]):
        t = sum(lengths)
        ids = torch.randint(5, 1000, (t,), device="cuda", generator=g)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        pos = torch.tensor(np.concatenate([np.arange(n) + 2 for n in lengths]), device="cuda")
        flat = torch.cat([ids, pos, torch.zeros_like(ids), torch.tensor(starts, device="cuda")])
        inputs = unpack(flat, t, len(lengths), max(lengths), tuple(lengths))
        small = encode_fused(w, inputs, None).float()  # small_m from the table
        blas = encode_fused(w, inputs, None, small_m=0).float()
        assert F.cosine_similarity(small, blas, -1).min().item() > 0.9999, lengths
