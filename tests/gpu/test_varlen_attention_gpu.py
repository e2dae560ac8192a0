"""The Triton varlen attention kernel on CUDA in bf16/fp16 (the interpreter cannot check bf16) against
flash attention's varlen_attn and an fp32 reference, every candidate config, the engine's hook, and
the fast backend with each kernel (eager and graph-replayed batches).

Run on the device machine: `pytest -m gpu tests/gpu/test_varlen_attention_gpu.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

LENGTHS = (1, 17, 64, 65, 0, 3, 1, 130, 200, 5, 1000, 333, 2048)


def _packed(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cuda").manual_seed(5)
    t = sum(LENGTHS)
    qkv = torch.randn(t, 3 * 16 * 64, device="cuda", generator=g, dtype=dtype).view(t, 3, 16, 64)
    cu = torch.zeros(len(LENGTHS) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(LENGTHS).cumsum(0)
    return (*qkv.unbind(1), cu.cuda())  # q, k, v: (T, 16, 64) strided views; cu_seqlens


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out, start = [], 0
    for n in LENGTHS:
        qs, ks, vs = (x[start : start + n].float().transpose(0, 1) for x in (q, k, v))  # (nh, n, hd)
        w = torch.softmax(qs @ ks.transpose(1, 2) / math.sqrt(64), dim=-1)
        out.append((w @ vs).transpose(0, 1))
        start += n
    return torch.cat(out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_matches_varlen_attn_every_config(dtype: torch.dtype) -> None:
    from torch.nn.attention.varlen import varlen_attn

    from m3engine.backends.fast.varlen_attention import CONFIGS, attention_triton

    q, k, v, cu = _packed(dtype)
    ref = _reference(q, k, v)
    flash = varlen_attn(q, k, v, cu, cu, max(LENGTHS), max(LENGTHS))
    assert isinstance(flash, torch.Tensor)
    flash_err = float((flash.float() - ref).abs().max())
    for name, config in CONFIGS.items():
        out = attention_triton(q, k, v, cu, max(LENGTHS), config)
        err = float((out.float() - ref).abs().max())
        # within 2x flash attention's own distance from fp32, plus one bf16 rounding step
        assert err <= 2 * flash_err + 1e-2, (name, err, flash_err)


def test_a_plan_switches_the_kernel() -> None:
    from m3engine.backends.fast.encoder import attention
    from m3engine.backends.fast.inputs import PackedInputs
    from m3engine.backends.fast.varlen_attention import plan_attention

    q, k, v, cu = _packed(torch.bfloat16)
    ids = torch.zeros(q.shape[0], dtype=torch.long, device="cuda")
    inputs = PackedInputs(ids, ids, ids, cu, max(LENGTHS), LENGTHS)
    flash = attention(q, k, v, inputs, varlen=True)
    triton_out = attention(q, k, v, plan_attention(inputs), varlen=True)
    assert not torch.equal(flash, triton_out)  # a different kernel ran
    torch.testing.assert_close(triton_out.float(), flash.float(), atol=2e-2, rtol=0)


def test_backend_outputs_agree_between_kernels(long_dir: Path) -> None:
    """The whole model, graph-replayed (a short batch) and eager (a long one): the backend (Triton
    attention) against the same fused encoder with flash attention (inputs without a plan)."""
    from m3engine.backends.fast import FastBackend
    from m3engine.backends.fast.encoder import to_device
    from m3engine.backends.fast.fused import encode_fused
    from m3engine.backends.fast.graphs import MAX_TOKENS
    from m3engine.models.spec import inspect_model
    from m3engine.types import HeadRequest, PackedBatch, TokenIds
    from tests.gpu.test_fast_gpu import _random_text

    spec, tokens = inspect_model(long_dir), TokenIds(pad_id=1, special_ids=frozenset({0, 1, 2, 3}))
    backend = FastBackend(spec, tokens, device="cuda", dtype="bf16")
    assert "Triton varlen attention" in backend.precision
    rng = np.random.default_rng(4)
    short = PackedBatch.from_encoded([_random_text(rng, n) for n in (1, 37, 90)])
    long = PackedBatch.from_encoded([_random_text(rng, int(n)) for n in rng.integers(1, 3000, 12)])
    assert long.num_tokens > MAX_TOKENS  # eager
    heads = HeadRequest(dense=True, sparse=True, colbert=True)
    offset = backend.weights.config.position_offset
    for batch in (short, long, short):  # the short one is captured when asked for a second time
        a = backend.forward(batch, heads).dense
        inputs = to_device(batch, offset, torch.device("cuda"))
        with torch.inference_mode():
            flash = encode_fused(backend.weights, inputs, None, varlen=True)  # (T, H)
        b = flash[inputs.cu_seqlens[:-1].long()].float().cpu().numpy()  # (N, H) the CLS rows
        assert a is not None
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() > 0.9999, cos.min()
    assert backend.graphs is not None and len(backend.graphs.captured) == 1  # the short one
