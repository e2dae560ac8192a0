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

`small_m`: batches of at most this many token rows run the bf16 layer's products through
small_gemm.py (split-K Triton GEMMs that keep every SM streaming weights; the add+LayerNorm after
attention-out and FFN-out then sums the fp32 partial products itself). On for batches up to
small_gemm.SMALL_M tokens of models whose product shapes were measured (BGE-M3 / the reranker on an
H200: -7 % GPU time at 128 tokens); the fp8 layer never uses it.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from m3engine.backends.fast import small_gemm as sg
from m3engine.backends.fast.encoder import attention, keep_rows
from m3engine.backends.fast.fp8 import Fp8Layer, Fp8Weights, fp8_linear
from m3engine.backends.fast.inputs import PackedInputs
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


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, small: bool) -> torch.Tensor:
    """(T, N) x W^T + b in x's dtype: split-K Triton when `small` and the table has a config."""
    c = sg.config_for(w.shape[0], w.shape[1], x.shape[0]) if small else None
    return F.linear(x, w, b) if c is None else sg.small_linear(x, w, b, None, c)


def _ffn_in(x: torch.Tensor, lw: LayerWeights, epilogue: bool, small: bool) -> torch.Tensor:
    """(T, F) GELU(x W^T + b): tanh GELU with `epilogue` (as cuBLASLt's), else the exact erf one."""
    c = sg.config_for(lw.ffn_in_w.shape[0], lw.ffn_in_w.shape[1], x.shape[0]) if small else None
    if c is None:
        return _ffn_in_gelu(x, lw, epilogue)
    return sg.small_linear(x, lw.ffn_in_w, lw.ffn_in_b, "gelu_tanh" if epilogue else "gelu", c)


def _linear_add_ln(
    x: torch.Tensor,  # (T, K) the sublayer's input
    w: torch.Tensor,  # (N, K)
    b: torch.Tensor,  # (N,)
    residual: torch.Tensor,  # (T, N)
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    eps: float,
    small: bool,
) -> torch.Tensor:
    """(T, N) LayerNorm(x W^T + b + residual); split-K partial sums go straight into the row kernel."""
    c = sg.config_for(w.shape[0], w.shape[1], x.shape[0]) if small else None
    if c is None:
        return add_layernorm(F.linear(x, w, b), None, residual, ln_w, ln_b, eps)[0]
    return sg.parts_add_layernorm(sg.splitk_parts(x, w, c), b, residual, ln_w, ln_b, eps)


def half_layer(
    x: torch.Tensor,  # (T, H)
    lw: LayerWeights,
    cfg: EncoderConfig,
    inputs: PackedInputs,
    varlen: bool,
    gelu_epilogue: bool,
    small_m: int = 0,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """One post-LayerNorm layer in bf16/fp16, fused row-wise work; (T, H) -> (T, H), or (R, H) of
    `rows` alone (encoder.layer)."""
    t = x.shape[0]
    qkv = _linear(x, lw.qkv_w, lw.qkv_b, 0 < t <= small_m).view(t, 3, cfg.heads, cfg.head_dim)
    q, k, v = qkv.unbind(1)  # (T, nh, hd) each
    ctx, x = keep_rows(attention(q, k, v, inputs, varlen).reshape(t, cfg.hidden), x, rows)  # (T or R, H)
    small = 0 < x.shape[0] <= small_m  # the products below run on R rows: small_gemm picks by R
    x = _linear_add_ln(ctx, lw.attn_out_w, lw.attn_out_b, x, lw.ln1_w, lw.ln1_b, cfg.eps, small)
    h = _ffn_in(x, lw, gelu_epilogue, small)  # (T or R, F)
    return _linear_add_ln(h, lw.ffn_out_w, lw.ffn_out_b, x, lw.ln2_w, lw.ln2_b, cfg.eps, small)


def fp8_layer(
    x: torch.Tensor,  # (T, H) bf16
    xq: Quantized,  # x as e4m3 rows
    lw: LayerWeights,
    f: Fp8Layer,
    cfg: EncoderConfig,
    inputs: PackedInputs,
    varlen: bool,
    quantize_out: bool,  # the next layer runs in fp8: also return the output's e4m3 rows
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Quantized | None]:
    """One layer with e4m3 products; (T, H) -> (T, H), or (R, H) of `rows` alone (encoder.layer),
    with the output's e4m3 rows when `quantize_out`."""
    assert rows is None or not quantize_out, (
        "a layer cut to some rows is the last: nothing reads its e4m3 rows"
    )
    t, dtype = x.shape[0], x.dtype
    qkv = fp8_linear(xq, f.qkv, lw.qkv_b, dtype).view(t, 3, cfg.heads, cfg.head_dim)
    q, k, v = qkv.unbind(1)
    ctx, x = keep_rows(attention(q, k, v, inputs, varlen).reshape(t, cfg.hidden), x, rows)  # (T or R, H) bf16
    a = fp8_linear(quantize_rows(ctx), f.attn_out, lw.attn_out_b, dtype)
    x, x8 = add_layernorm(a, None, x, lw.ln1_w, lw.ln1_b, cfg.eps, quant=True)
    assert x8 is not None
    h = fp8_linear(x8, f.ffn_in, None, dtype)  # (T or R, F) before bias and GELU
    _, h8 = bias_gelu(h, lw.ffn_in_b, store=False, quant=True)
    assert h8 is not None
    a = fp8_linear(h8, f.ffn_out, lw.ffn_out_b, dtype)
    return add_layernorm(a, None, x, lw.ln2_w, lw.ln2_b, cfg.eps, quant=quantize_out)


def default_small_m(w: EncoderWeights) -> int:
    """Batches up to this many tokens run their products in small_gemm (0: never, for this model)."""
    return sg.small_m_for(w.config.hidden, int(w.layers[0].ffn_in_w.shape[0])) if w.layers else 0


def warmup_token_counts(w: EncoderWeights) -> list[int]:
    """Token counts whose eager passes compile every Triton kernel variant a batch can pick."""
    small_m = default_small_m(w)
    return sg.warmup_token_counts(small_m) if small_m else [1]


def encode_fused(
    w: EncoderWeights,
    inputs: PackedInputs,
    fp8: Fp8Weights | None,
    varlen: bool = True,
    gelu_epilogue: bool = True,
    small_m: int | None = None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """(T, H) final states, or (R, H) of `rows` alone (encoder.encode); layers in `fp8.layers` use
    fp8 matrix products, the rest bf16/fp16.

    `varlen=False` attends per sequence (the CPU, where the Triton interpreter runs the kernels).
    `small_m`: see the module docstring; None: small_gemm.SMALL_M where its table holds this
    model's product shapes (measured ones only), else 0.
    """
    cfg = w.config
    if small_m is None:
        small_m = default_small_m(w)
    layers8 = fp8.layers if fp8 is not None else {}
    x, xq = embed_layernorm(
        inputs.input_ids, inputs.positions, inputs.token_types, w.word, w.position, w.token_type,
        w.emb_ln_w, w.emb_ln_b, cfg.eps, quant=0 in layers8,
    )  # fmt: skip
    if not w.layers:
        return x if rows is None else x[rows]
    last = len(w.layers) - 1
    for i, lw in enumerate(w.layers):
        f = layers8.get(i)
        keep = rows if i == last else None
        if f is None:
            x, xq = half_layer(x, lw, cfg, inputs, varlen, gelu_epilogue, small_m, keep), None
            continue
        if xq is None:  # the previous layer ran in bf16
            xq = quantize_rows(x)
        # `w` may hold the first layers alone (the warm-up's one-layer copy) while `fp8.layers`
        # covers the whole stack: the last layer of `w` quantises its output for no one
        x, xq = fp8_layer(x, xq, lw, f, cfg, inputs, varlen, i < last and (i + 1) in layers8, keep)
    return x
