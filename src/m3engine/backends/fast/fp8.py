"""FP8 (e4m3) weights for the encoder's matrix products, with one scale per output channel.

A weight (N, K) is stored as e4m3 values and an fp32 scale per row (W ~= Wq * s[:, None]), the
activation as e4m3 rows with a scale per token (kernels.py makes them); `torch._scaled_mm`'s
row-wise mode multiplies on Hopper's fp8 tensor cores (~1.8x bf16's rate) and applies both scales
and the bias in its epilogue, writing bf16. What stays in bf16 / fp32: embeddings, every LayerNorm,
attention (softmax(QK^T)V in flash attention), the residual stream, and the heads (fp32).

Which layers are quantised is a set of layer indices (`Fp8Weights.layers`), reported by the backend
so a user sees what ran in fp8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from m3engine.backends.fast.kernels import FP8, FP8_MAX, Quantized
from m3engine.backends.fast.weights import LayerWeights


@dataclass
class Fp8Matrix:
    weight_t: torch.Tensor  # (K, N) e4m3, column-major: the transpose of a contiguous (N, K)
    scale: torch.Tensor  # (1, N) fp32, per output channel


@dataclass
class Fp8Layer:
    qkv: Fp8Matrix
    attn_out: Fp8Matrix
    ffn_in: Fp8Matrix
    ffn_out: Fp8Matrix


@dataclass
class Fp8Weights:
    layers: dict[int, Fp8Layer]  # layer index -> its fp8 matrices; other layers run in bf16

    def describe(self, total: int) -> str:
        done = sorted(self.layers)
        if len(done) == total:
            return f"fp8 e4m3: QKV, attention output, FFN in/out of all {total} layers"
        return f"fp8 e4m3: QKV, attention output, FFN in/out of layers {done} (of {total})"


def quantize_matrix(weight: torch.Tensor) -> Fp8Matrix:
    """Per-output-channel e4m3 copy of an (N, K) weight."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / FP8_MAX  # (N,)
    q = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)  # (N, K) contiguous
    return Fp8Matrix(weight_t=q.t(), scale=scale[None, :].contiguous())


def quantize_layer(lw: LayerWeights) -> Fp8Layer:
    return Fp8Layer(
        qkv=quantize_matrix(lw.qkv_w),
        attn_out=quantize_matrix(lw.attn_out_w),
        ffn_in=quantize_matrix(lw.ffn_in_w),
        ffn_out=quantize_matrix(lw.ffn_out_w),
    )


def quantize_layers(layers: list[LayerWeights], keep_bf16: frozenset[int] = frozenset()) -> Fp8Weights:
    """fp8 copies of every layer's four matrices, except the layers in `keep_bf16`."""
    return Fp8Weights({i: quantize_layer(lw) for i, lw in enumerate(layers) if i not in keep_bf16})


def fp8_linear(
    x: Quantized,  # ((T, K) e4m3, (T, 1) fp32)
    m: Fp8Matrix,
    bias: torch.Tensor | None,  # (N,) bf16
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """(T, N) = (xq * xs) @ (Wq * ws)^T + bias, in `out_dtype`."""
    values, scales = x
    out = torch._scaled_mm(
        values, m.weight_t, scale_a=scales, scale_b=m.scale, bias=bias, out_dtype=out_dtype
    )
    assert isinstance(out, torch.Tensor)
    return out
