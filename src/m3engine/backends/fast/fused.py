"""The packed encoder with fused row-wise kernels (CUDA), in bf16/fp16 or with fp8 matrix products.

Per layer, the unfused forward (encoder.py) launches ~11 kernels and passes over the activations
~8 times; this one launches 6 (bf16) or 7 (fp8):

    bf16:  QKV(+bias) | attention | out(+bias) | add+LN | FFN-in(+bias, GELU) | FFN-out(+bias) | add+LN
    fp8:   QKV        | attention | quantise   | out    | add+LN(+fp8 copy)  | FFN-in | bias+GELU(->fp8)
           | FFN-out | add+LN(+fp8 copy)

The GELU: `gelu_epilogue=True` uses cuBLASLt's bias+GELU epilogue (tanh approximation: within
4.8e-4 of the exact GELU, ~30x below bf16's rounding of the same values), `False` the exact erf
GELU in a Triton kernel after the product. Numerics otherwise match encoder.py: LayerNorm statistics
in fp32, every stored activation in the compute dtype.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from m3engine.backends.fast.encoder import PackedInputs, attention
from m3engine.backends.fast.fp8 import Fp8Layer, Fp8Weights, fp8_linear
from m3engine.backends.fast.kernels import (
    Quantized,
    add_layernorm,
    bias_gelu,
    embed_layernorm,
    quantize_rows,
)
from m3engine.backends.fast.weights import EncoderConfig, EncoderWeights, LayerWeights


def _ffn_in_gelu(x: torch.Tensor, lw: LayerWeights, epilogue: bool) -> torch.Tensor:
    """(T, F) GELU(x W^T + b) in x's dtype."""
    if epilogue:
        return torch._addmm_activation(lw.ffn_in_b, x, lw.ffn_in_w.t(), use_gelu=True)
    h, _ = bias_gelu(F.linear(x, lw.ffn_in_w), lw.ffn_in_b)
    assert h is not None
    return h


def half_layer(
    x: torch.Tensor,  # (T, H)
    lw: LayerWeights,
    cfg: EncoderConfig,
    inputs: PackedInputs,
    varlen: bool,
    gelu_epilogue: bool,
) -> torch.Tensor:
    """One post-LayerNorm layer in bf16/fp16, fused row-wise work; (T, H) -> (T, H)."""
    t = x.shape[0]
    qkv = F.linear(x, lw.qkv_w, lw.qkv_b).view(t, 3, cfg.heads, cfg.head_dim)  # (T, 3, nh, hd)
    q, k, v = qkv.unbind(1)
    ctx = attention(q, k, v, inputs, varlen).reshape(t, cfg.hidden)  # (T, H)
    x, _ = add_layernorm(F.linear(ctx, lw.attn_out_w, lw.attn_out_b), None, x, lw.ln1_w, lw.ln1_b, cfg.eps)
    h = _ffn_in_gelu(x, lw, gelu_epilogue)  # (T, F)
    x, _ = add_layernorm(F.linear(h, lw.ffn_out_w, lw.ffn_out_b), None, x, lw.ln2_w, lw.ln2_b, cfg.eps)
    return x


def fp8_layer(
    x: torch.Tensor,  # (T, H) bf16
    xq: Quantized,  # x as e4m3 rows
    lw: LayerWeights,
    f: Fp8Layer,
    cfg: EncoderConfig,
    inputs: PackedInputs,
    varlen: bool,
    quantize_out: bool,  # the next layer runs in fp8: also return the output's e4m3 rows
) -> tuple[torch.Tensor, Quantized | None]:
    t, dtype = x.shape[0], x.dtype
    qkv = fp8_linear(xq, f.qkv, lw.qkv_b, dtype).view(t, 3, cfg.heads, cfg.head_dim)
    q, k, v = qkv.unbind(1)
    ctx = attention(q, k, v, inputs, varlen).reshape(t, cfg.hidden)  # (T, H) bf16
    a = fp8_linear(quantize_rows(ctx), f.attn_out, lw.attn_out_b, dtype)
    x, x8 = add_layernorm(a, None, x, lw.ln1_w, lw.ln1_b, cfg.eps, quant=True)
    assert x8 is not None
    h = fp8_linear(x8, f.ffn_in, None, dtype)  # (T, F) before bias and GELU
    _, h8 = bias_gelu(h, lw.ffn_in_b, store=False, quant=True)
    assert h8 is not None
    a = fp8_linear(h8, f.ffn_out, lw.ffn_out_b, dtype)
    return add_layernorm(a, None, x, lw.ln2_w, lw.ln2_b, cfg.eps, quant=quantize_out)


def encode_fused(
    w: EncoderWeights,
    inputs: PackedInputs,
    fp8: Fp8Weights | None,
    varlen: bool = True,
    gelu_epilogue: bool = True,
) -> torch.Tensor:
    """(T, H) final states; layers in `fp8.layers` use fp8 matrix products, the rest bf16/fp16.

    `varlen=False` attends per sequence (the CPU, where the Triton interpreter runs the kernels).
    """
    cfg = w.config
    layers8 = fp8.layers if fp8 is not None else {}
    x, xq = embed_layernorm(
        inputs.input_ids, inputs.positions, inputs.token_types, w.word, w.position, w.token_type,
        w.emb_ln_w, w.emb_ln_b, cfg.eps, quant=0 in layers8,
    )  # fmt: skip
    for i, lw in enumerate(w.layers):
        f = layers8.get(i)
        if f is None:
            x, xq = half_layer(x, lw, cfg, inputs, varlen, gelu_epilogue), None
            continue
        if xq is None:  # the previous layer ran in bf16
            xq = quantize_rows(x)
        x, xq = fp8_layer(x, xq, lw, f, cfg, inputs, varlen, quantize_out=(i + 1) in layers8)
    return x
