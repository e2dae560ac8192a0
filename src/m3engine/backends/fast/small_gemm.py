"""Matrix products for few tokens (M <= a few hundred): enough CTAs to stream the weights at HBM speed.

At M = 128 tokens cuBLAS tiles an (M, N) output into 16-48 tiles, so on a 132-SM GPU most SMs idle
and a layer's ~25 MB of weights stream at ~20 % of HBM bandwidth. Here the output is cut into small
tiles *and* K into `split_k` contiguous chunks, so every SM streams its own slice of W:

    out[m, n] = sum_s sum_{k in chunk s} x[m, k] * W[n, k]          (W (N, K) as stored, row-major)

Each program computes one (BLOCK_M, BLOCK_N) tile over one K chunk in fp32 and either
- MODE_EPILOGUE (split_k == 1): adds the bias, applies the activation, stores in x's dtype
  (cuBLASLt's bias/GELU epilogue, same order: fp32 accumulator + bias, GELU, one rounding);
- MODE_PARTS: stores its fp32 partial sums to parts[s] of an (S, M, N) buffer: plain stores, no
  zero-fill, deterministic; the consumer sums the S slices (`finish` for QKV / FFN-in, or
  `parts_add_layernorm` for the products followed by add+LayerNorm, which then costs no extra kernel);
- MODE_ATOMIC: fp32 atomic adds into a zeroed (M, N) buffer, read by the same consumers as a single
  slice (order-dependent rounding: no entry of the table below picks it).

The consumers work in fp32 throughout, so the split path rounds once less than cuBLAS + add_layernorm
(cuBLAS rounds x W^T + b to bf16 before the row kernel reads it): equal within bf16 rounding.

`CONFIGS` is a fixed table per (N, K) and M bound, measured once per GPU model; an entry of None
keeps cuBLAS for that shape and M. Nothing is tuned at request time.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from m3engine.backends.fast.kernels import layernorm_row

MODE_EPILOGUE, MODE_PARTS, MODE_ATOMIC = 0, 1, 2
ACT_NONE, ACT_GELU_TANH, ACT_GELU_ERF = 0, 1, 2
ACTS = {None: ACT_NONE, "gelu_tanh": ACT_GELU_TANH, "gelu": ACT_GELU_ERF}

# Token counts up to which the fused layer runs its products here: measured (H200, whole 24-layer
# encoder, graph replay at 128 tokens) 0.949 -> 0.886 ms; at 512 tokens no gain, so it stops at 256.
# Only for models whose four product shapes the table holds (small_m_for); encode_fused(small_m=...)
# overrides it.
SMALL_M = 256


class Config(NamedTuple):
    block_m: int
    block_n: int
    block_k: int
    split_k: int
    warps: int = 4
    stages: int = 3
    atomic: bool = False  # split_k > 1 only: MODE_ATOMIC instead of MODE_PARTS


# (N, K) -> ((max M, config or None for cuBLAS), ...) ascending in M; BGE-M3's four layer products.
# Measured on an H200: per product, the fastest Triton config where it beat cuBLAS by >= 3 %,
# else None. Split-K wins for the N = 1024 products
# (attention-out, FFN-out: 16-32 output tiles for 132 SMs); QKV and FFN-in stay on cuBLAS.
# shapes where cuBLAS won at every row count: the split-K kernel never runs for them
CUBLAS_ONLY: tuple[tuple[int, Config | None], ...] = tuple((m, None) for m in (16, 64, 128, 256, 512))
CONFIGS: dict[tuple[int, int], tuple[tuple[int, Config | None], ...]] = {
    (3072, 1024): CUBLAS_ONLY,
    (1024, 1024): (
        (16, Config(block_m=16, block_n=32, block_k=128, split_k=4, warps=4, stages=4, atomic=False)),
        (64, Config(block_m=64, block_n=32, block_k=128, split_k=4, warps=4, stages=4, atomic=False)),
        (128, Config(block_m=64, block_n=32, block_k=128, split_k=2, warps=4, stages=4, atomic=False)),
        (256, Config(block_m=64, block_n=64, block_k=128, split_k=2, warps=4, stages=4, atomic=False)),
        (512, None),
    ),
    (4096, 1024): CUBLAS_ONLY,
    (1024, 4096): (
        (16, Config(block_m=16, block_n=32, block_k=128, split_k=4, warps=4, stages=4, atomic=False)),
        (64, Config(block_m=64, block_n=32, block_k=128, split_k=4, warps=4, stages=4, atomic=False)),
        (128, Config(block_m=64, block_n=64, block_k=128, split_k=4, warps=4, stages=4, atomic=False)),
        (256, Config(block_m=64, block_n=64, block_k=128, split_k=2, warps=4, stages=4, atomic=False)),
        (512, None),
    ),
}
SMS = 132  # H100 / H200 SXM: the CTA count the heuristic aims at for shapes not in CONFIGS


def warmup_token_counts(small_m: int) -> list[int]:
    """A token count in each M range of the table up to `small_m`, and one past it: running the
    encoder once at each compiles every config a batch can pick (each is one compile, ~0.3 s)."""
    bounds = sorted({min(max_m, small_m) for rows in CONFIGS.values() for max_m, _ in rows})
    return [*bounds, small_m + 1]


def small_m_for(hidden: int, ffn: int) -> int:
    """SMALL_M for a model whose layer products were all measured (the table's shapes), else 0."""
    shapes = {(3 * hidden, hidden), (hidden, hidden), (ffn, hidden), (hidden, ffn)}
    return SMALL_M if shapes <= CONFIGS.keys() else 0


def heuristic(n: int, k: int, m: int) -> Config:
    """A config for a shape the table lacks: one M tile, 64-wide N tiles, K split to fill the SMs."""
    block_m = min(128, max(16, triton.next_power_of_2(m)))
    block_n = 64 if n >= 64 else max(16, triton.next_power_of_2(n))
    block_k = 128 if k >= 256 else max(16, triton.next_power_of_2(k) // 2)
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    split = 1
    while tiles * split < SMS and k // (2 * split * block_k) >= 2:  # keep >= 2 K steps per chunk
        split *= 2
    return Config(block_m, block_n, block_k, split)


def config_for(n: int, k: int, m: int) -> Config | None:
    """The table's config for (N, K) at M tokens, None for cuBLAS, the heuristic for unknown shapes."""
    rows = CONFIGS.get((n, k))
    if rows is None:
        return heuristic(n, k, m)
    for max_m, cfg in rows:
        if m <= max_m:
            return cfg
    return None  # beyond the table: cuBLAS


@triton.jit
def _gelu(v, ACT: tl.constexpr):
    if ACT == 1:  # tanh approximation, as cuBLASLt's epilogue: 0.5 (1 + tanh u) = sigmoid(2u)
        u = 0.7978845608028654 * (v + 0.044715 * v * v * v)
        v = v * tl.sigmoid(2.0 * u)
    elif ACT == 2:  # exact erf GELU, as kernels.bias_gelu
        v = 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
    return v


@triton.jit(do_not_specialize=["M"])  # a token count: no new compile for M == 1 or M % 16 == 0
def _gemm_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    M, N, K, stride_xm, stride_wn,
    K_CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    MODE: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, EVEN_K: tl.constexpr,
):  # fmt: skip
    # M tiles vary fastest: the programs that read one W tile run together, so W leaves HBM once
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # wrapped row / column indices: loads stay in bounds without masks (stores are masked)
    rm = offs_m % M
    rn = offs_n % N
    # this program's K range: [k0, k0 + K_CHUNK), a multiple of BLOCK_K. A compile-time trip count
    # (one compile per K and split; few shapes) also runs under the interpreter, which fails on
    # loops over runtime bounds with numpy >= 2.3
    k0 = pid_k * K_CHUNK
    offs_k = k0 + tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rm[:, None].to(tl.int64) * stride_xm + offs_k[None, :]  # (BLOCK_M, BLOCK_K)
    w_ptrs = w_ptr + rn[:, None].to(tl.int64) * stride_wn + offs_k[None, :]  # (BLOCK_N, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, K_CHUNK, BLOCK_K):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_mask = offs_k[None, :] + kk < K
            a = tl.load(x_ptrs, mask=k_mask, other=0.0)
            b = tl.load(w_ptrs, mask=k_mask, other=0.0)
        acc = tl.dot(a, tl.trans(b), acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    idx = offs_m[:, None].to(tl.int64) * N + offs_n[None, :]  # (BLOCK_M, BLOCK_N) into (M, N)
    if MODE == 0:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn).to(tl.float32)[None, :]
        acc = _gelu(acc, ACT)
        tl.store(out_ptr + idx, acc.to(out_ptr.dtype.element_ty), mask=mask)
    elif MODE == 1:
        tl.store(out_ptr + pid_k.to(tl.int64) * M * N + idx, acc, mask=mask)
    else:
        tl.atomic_add(out_ptr + idx, acc, mask=mask, sem="relaxed")


@triton.jit
def _finish_kernel(
    parts_ptr, bias_ptr, out_ptr, MN, N,
    S: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # elementwise over the flat (M, N) output: sum of the S fp32 slices + bias, activation, cast
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    v = tl.load(parts_ptr + offs, mask=mask, other=0.0)
    for s in tl.static_range(1, S):
        v += tl.load(parts_ptr + s * MN + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        v += tl.load(bias_ptr + offs % N, mask=mask, other=0.0).to(tl.float32)
    v = _gelu(v, ACT)
    tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _parts_add_ln_kernel(
    parts_ptr, bias_ptr, res_ptr, w_ptr, b_ptr, y_ptr,
    MN, N, eps,
    S: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # one row: LayerNorm(sum_s parts[s, row] + bias + residual[row]), statistics in fp32
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    v = tl.load(res_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
    for s in tl.static_range(S):
        v += tl.load(parts_ptr + s * MN + row * N + cols, mask=mask, other=0.0)
    if HAS_BIAS:
        v += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = layernorm_row(v, cols, mask, w_ptr, b_ptr, N, eps)
    tl.store(y_ptr + row * N + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def _launch(
    x: torch.Tensor,  # (M, K), rows contiguous
    w: torch.Tensor,  # (N, K), rows contiguous
    bias: torch.Tensor | None,  # (N,) MODE_EPILOGUE only
    out: torch.Tensor,  # (M, N) x's dtype | (S, M, N) fp32 | (M, N) fp32 zeroed
    cfg: Config,
    mode: int,
    act: int,
) -> None:
    m, k = x.shape
    n = w.shape[0]
    assert x.stride(1) == 1 and w.stride(1) == 1 and w.shape[1] == k, (x.stride(), w.shape)
    grid = (triton.cdiv(m, cfg.block_m), triton.cdiv(n, cfg.block_n), cfg.split_k)
    chunk = triton.cdiv(k, cfg.split_k * cfg.block_k) * cfg.block_k
    _gemm_kernel[grid](
        x, w, bias if bias is not None else w, out, m, n, k, x.stride(0), w.stride(0),
        K_CHUNK=chunk, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, SPLIT_K=cfg.split_k,
        MODE=mode, HAS_BIAS=bias is not None, ACT=act, EVEN_K=k % (cfg.split_k * cfg.block_k) == 0,
        num_warps=cfg.warps, num_stages=cfg.stages,
    )  # fmt: skip


def splitk_parts(x: torch.Tensor, w: torch.Tensor, cfg: Config) -> torch.Tensor:
    """x W^T without bias as fp32 partial sums: (S, M, N), or (1, M, N) summed by atomics."""
    m, n = x.shape[0], w.shape[0]
    if cfg.split_k > 1 and cfg.atomic:
        acc = torch.zeros(1, m, n, dtype=torch.float32, device=x.device)
        _launch(x, w, None, acc, cfg, MODE_ATOMIC, ACT_NONE)
        return acc
    parts = torch.empty(cfg.split_k, m, n, dtype=torch.float32, device=x.device)
    _launch(x, w, None, parts, cfg, MODE_PARTS, ACT_NONE)
    return parts


def finish(
    parts: torch.Tensor, bias: torch.Tensor | None, act: str | None, dtype: torch.dtype
) -> torch.Tensor:
    """(M, N) act(sum_s parts[s] + bias) in `dtype` from (S, M, N) fp32 partial sums."""
    s, m, n = parts.shape
    out = torch.empty(m, n, dtype=dtype, device=parts.device)
    block = 1024
    _finish_kernel[(triton.cdiv(m * n, block),)](
        parts, bias if bias is not None else parts, out, m * n, n,
        S=s, HAS_BIAS=bias is not None, ACT=ACTS[act], BLOCK=block, num_warps=4,
    )  # fmt: skip
    return out


def small_linear(
    x: torch.Tensor,  # (M, K)
    w: torch.Tensor,  # (N, K)
    bias: torch.Tensor | None,  # (N,)
    act: str | None,  # None, "gelu_tanh" (cuBLASLt's epilogue) or "gelu" (exact erf)
    cfg: Config,
) -> torch.Tensor:
    """(M, N) act(x W^T + bias) in x's dtype: one kernel when split_k == 1, else parts + `finish`."""
    if cfg.split_k == 1:
        out = torch.empty(x.shape[0], w.shape[0], dtype=x.dtype, device=x.device)
        _launch(x, w, bias, out, cfg, MODE_EPILOGUE, ACTS[act])
        return out
    return finish(splitk_parts(x, w, cfg), bias, act, x.dtype)


def parts_add_layernorm(
    parts: torch.Tensor,  # (S, M, N) fp32 partial sums of the sublayer's product
    bias: torch.Tensor | None,  # (N,) the product's bias
    residual: torch.Tensor,  # (M, N)
    weight: torch.Tensor,  # (N,)
    ln_bias: torch.Tensor,  # (N,)
    eps: float,
) -> torch.Tensor:
    """(M, N) LayerNorm(sum_s parts[s] + bias + residual) in the residual's dtype."""
    s, m, n = parts.shape
    y = torch.empty_like(residual)
    block = triton.next_power_of_2(n)
    _parts_add_ln_kernel[(m,)](
        parts, bias if bias is not None else parts, residual, weight, ln_bias, y, m * n, n, eps,
        S=s, HAS_BIAS=bias is not None, BLOCK=block, num_warps=max(1, min(16, block // 256)),
    )  # fmt: skip
    return y
