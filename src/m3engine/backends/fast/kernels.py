"""Triton kernels for the row-wise work between the matrix products: one pass over memory each.

The unfused layer reads and writes each (T, H) activation several times around a LayerNorm (add,
then normalise) and each (T, F) one twice around the GELU; at ~700 k tokens/s those passes cost
10-20 % of an H200's time. Each kernel here handles one row per program, in fp32 registers:

- `add_layernorm`: LayerNorm(x + bias + residual), optionally also the row quantised to fp8 e4m3
  with its scale, for the next fp8 matrix product;
- `embed_layernorm`: LayerNorm(word[id] + position[pos] + token_type[type]), the gathers included;
- `bias_gelu`: exact (erf) GELU of x + bias, to bf16/fp16 or straight to fp8 with a row scale;
- `quantize_rows`: a row's fp8 e4m3 values and scale (amax / 448) for the attention output.

fp8 rows are stored as values in e4m3 with one fp32 scale per row (x ~= q * scale): with
per-output-channel weight scales that is exactly what `torch._scaled_mm`'s row-wise mode takes.

Correctness is tested on the CPU with TRITON_INTERPRET=1 (tests/test_fast_kernels.py); the kernels
run only on CUDA tensors in production.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

FP8_MAX = 448.0  # the largest finite e4m3fn value
FP8 = torch.float8_e4m3fn


@triton.jit
def _quantize_store(y, q_row_ptr, s_ptr, row, cols, mask, FP8_MAX: tl.constexpr):
    # y: (BLOCK,) fp32 row; q_row_ptr points at this row's first e4m3 value
    amax = tl.max(tl.where(mask, tl.abs(y), 0.0), axis=0)
    scale = tl.maximum(amax, 1e-12) / FP8_MAX
    q = tl.clamp(y / scale, -FP8_MAX, FP8_MAX)
    tl.store(q_row_ptr + cols, q.to(q_row_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + row, scale)


@triton.jit
def layernorm_row(v, cols, mask, w_ptr, b_ptr, N, eps):
    # v: (BLOCK,) fp32 row, zeros past N; LayerNorm with statistics in fp32, the affine from w_ptr, b_ptr
    mean = tl.sum(v, axis=0) / N
    d = tl.where(mask, v - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=0) / N + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    return d * rstd * w + b


@triton.jit
def _add_ln_kernel(
    x_ptr, bias_ptr, res_ptr, w_ptr, b_ptr, y_ptr, q_ptr, s_ptr,
    N, eps,
    HAS_BIAS: tl.constexpr, QUANT: tl.constexpr, BLOCK: tl.constexpr, FP8_MAX: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    v = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
    v += tl.load(res_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = layernorm_row(v, cols, mask, w_ptr, b_ptr, N, eps)
    tl.store(y_ptr + row * N + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    if QUANT:
        _quantize_store(y, q_ptr + row * N, s_ptr, row, cols, mask, FP8_MAX)


# The id, position and type columns are views into one staged buffer at offsets 0, T and 2T int64s:
# the positions are 16-byte aligned or not with T's parity. Their alignment is not specialised on
# (each row loads one scalar from them), so an odd-sized batch compiles nothing new.
@triton.jit(do_not_specialize_on_alignment=["ids_ptr", "pos_ptr", "types_ptr"])
def _embed_ln_kernel(
    ids_ptr, pos_ptr, types_ptr, word_ptr, position_ptr, ttype_ptr, w_ptr, b_ptr, y_ptr, q_ptr, s_ptr,
    N, eps,
    QUANT: tl.constexpr, BLOCK: tl.constexpr, FP8_MAX: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    token = tl.load(ids_ptr + row).to(tl.int64)
    pos = tl.load(pos_ptr + row).to(tl.int64)
    ttype = tl.load(types_ptr + row).to(tl.int64)
    v = tl.load(word_ptr + token * N + cols, mask=mask, other=0.0).to(tl.float32)
    v += tl.load(position_ptr + pos * N + cols, mask=mask, other=0.0).to(tl.float32)
    v += tl.load(ttype_ptr + ttype * N + cols, mask=mask, other=0.0).to(tl.float32)
    y = layernorm_row(v, cols, mask, w_ptr, b_ptr, N, eps)
    tl.store(y_ptr + row * N + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    if QUANT:
        _quantize_store(y, q_ptr + row * N, s_ptr, row, cols, mask, FP8_MAX)


@triton.jit
def _bias_gelu_kernel(
    x_ptr, bias_ptr, y_ptr, q_ptr, s_ptr,
    N,
    HAS_BIAS: tl.constexpr, STORE: tl.constexpr, QUANT: tl.constexpr, BLOCK: tl.constexpr,
    FP8_MAX: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    v = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))  # exact GELU, as BERT / XLM-R use
    if STORE:
        tl.store(y_ptr + row * N + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    if QUANT:
        _quantize_store(y, q_ptr + row * N, s_ptr, row, cols, mask, FP8_MAX)


@triton.jit
def _quantize_kernel(x_ptr, q_ptr, s_ptr, N, BLOCK: tl.constexpr, FP8_MAX: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    v = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
    _quantize_store(v, q_ptr + row * N, s_ptr, row, cols, mask, FP8_MAX)


Quantized = tuple[torch.Tensor, torch.Tensor]  # (T, N) e4m3 values, (T, 1) fp32 scales


def _block(n: int) -> tuple[int, int]:
    block = triton.next_power_of_2(n)
    return block, max(1, min(16, block // 256))  # (BLOCK, num_warps): ~8 elements per thread


def _fp8_outputs(rows: int, n: int, like: torch.Tensor, quant: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if not quant:  # unused pointers: the kernel's QUANT branch is compiled out
        return like, like
    return (
        torch.empty(rows, n, dtype=FP8, device=like.device),
        torch.empty(rows, 1, dtype=torch.float32, device=like.device),
    )


def add_layernorm(
    x: torch.Tensor,  # (T, N) the sublayer's output
    bias: torch.Tensor | None,  # (N,) its bias, when the matrix product did not add it
    residual: torch.Tensor,  # (T, N)
    weight: torch.Tensor,  # (N,)
    ln_bias: torch.Tensor,  # (N,)
    eps: float,
    quant: bool = False,
) -> tuple[torch.Tensor, Quantized | None]:
    """(T, N) LayerNorm(x + bias + residual) in x's dtype, and its fp8 rows when `quant`."""
    rows, n = x.shape
    y = torch.empty_like(x)
    q, s = _fp8_outputs(rows, n, x, quant)
    block, warps = _block(n)
    _add_ln_kernel[(rows,)](
        x, bias if bias is not None else x, residual, weight, ln_bias, y, q, s, n, eps,
        HAS_BIAS=bias is not None, QUANT=quant, BLOCK=block, FP8_MAX=FP8_MAX, num_warps=warps,
    )  # fmt: skip
    return y, ((q, s) if quant else None)


def embed_layernorm(
    ids: torch.Tensor,  # (T,) int64
    positions: torch.Tensor,  # (T,) int64
    token_types: torch.Tensor,  # (T,) int64
    word: torch.Tensor,  # (V, N)
    position: torch.Tensor,  # (P, N)
    token_type: torch.Tensor,  # (types, N)
    weight: torch.Tensor,  # (N,)
    ln_bias: torch.Tensor,  # (N,)
    eps: float,
    quant: bool = False,
) -> tuple[torch.Tensor, Quantized | None]:
    """(T, N) LayerNorm of the summed embeddings, and its fp8 rows when `quant`."""
    rows, n = int(ids.shape[0]), int(word.shape[1])
    y = torch.empty(rows, n, dtype=word.dtype, device=word.device)
    q, s = _fp8_outputs(rows, n, y, quant)
    block, warps = _block(n)
    _embed_ln_kernel[(rows,)](
        ids, positions, token_types, word, position, token_type, weight, ln_bias, y, q, s, n, eps,
        QUANT=quant, BLOCK=block, FP8_MAX=FP8_MAX, num_warps=warps,
    )  # fmt: skip
    return y, ((q, s) if quant else None)


def bias_gelu(
    x: torch.Tensor, bias: torch.Tensor | None, store: bool = True, quant: bool = False
) -> tuple[torch.Tensor | None, Quantized | None]:
    """GELU(x + bias) for (T, F) x: in x's dtype when `store`, as fp8 rows when `quant`."""
    rows, n = x.shape
    y = torch.empty_like(x) if store else x
    q, s = _fp8_outputs(rows, n, x, quant)
    block, warps = _block(n)
    _bias_gelu_kernel[(rows,)](
        x, bias if bias is not None else x, y, q, s, n,
        HAS_BIAS=bias is not None, STORE=store, QUANT=quant, BLOCK=block, FP8_MAX=FP8_MAX,
        num_warps=warps,
    )  # fmt: skip
    return (y if store else None), ((q, s) if quant else None)


def quantize_rows(x: torch.Tensor) -> Quantized:
    """(T, N) e4m3 values and (T, 1) fp32 scales with x ~= q * s."""
    rows, n = x.shape
    q, s = _fp8_outputs(rows, n, x, True)
    block, warps = _block(n)
    _quantize_kernel[(rows,)](x, q, s, n, BLOCK=block, FP8_MAX=FP8_MAX, num_warps=warps)
    return q, s
