"""One encoder layer in one persistent kernel, for batches of a few hundred tokens.

At batch 1 the fused layer (fused.py) is seven kernels, each ~3-6 us on an H200 whatever it computes
(docs/benchmarks.md, round seven: 128 tokens replay in ~785 us, 16 tokens in ~700 us; with every
weight in L2 still ~660 us): launch, ramp-up and drain, not arithmetic or weight streaming, bound it.
Here one launch of one program per SM runs the layer's seven phases in turn, each program looping over
its share of the phase's work items, with a grid-wide barrier between phases:

    QKV(+bias) | attention | out (split-K parts) | add+LN | FFN-in(+bias, GELU) | FFN-out (parts) | add+LN

The arithmetic is small_gemm.py's and varlen_attention.py's: fp32 accumulation, split-K partial sums
summed by the add+LayerNorm in fp32, activations stored in the compute dtype; so the result equals the
fused layer with small_gemm's products within rounding.

The barrier: every program arrives on one int32 counter per layer (atomic add, release) and spins
until it reaches `phase x programs` (acquire). All programs must be resident at once, so the grid is
at most one program per SM. Loads of what other programs wrote in the same launch bypass L1
(`.cg`): an SM's L1 is not coherent with the others' stores.

`PHASE` >= 0 runs that one phase and no barrier: one launch per phase, the same code. The CPU tests
run it so under TRITON_INTERPRET=1, whose programs run one after another (a spin barrier would never
open); the persistent launch (`PHASE` = -1) runs on CUDA only.
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from m3engine.backends.fast.encoder import PackedInputs
from m3engine.backends.fast.kernels import layernorm_row
from m3engine.backends.fast.small_gemm import ACTS, apply_gelu
from m3engine.backends.fast.varlen_attention import DEFAULT, LOG2E, attend_slot, plan_blocks
from m3engine.backends.fast.weights import EncoderConfig, LayerWeights

PHASES = 7
ALL_PHASES = -1
BARRIERS_ONLY = -2  # probes: the six barriers and no work
NOTHING = -3  # probes: an empty launch
PREFETCH_CHUNK = 4096  # bytes per bulk L2 prefetch


class Tiles(NamedTuple):
    """Work items per phase: (BLOCK_M rows) x (N columns) x (split of K) of each product."""

    block_m: int = 128
    qkv_n: int = 32
    out_n: int = 32
    out_split: int = 4
    in_n: int = 32
    fout_n: int = 32
    fout_split: int = 4
    block_k: int = 128
    warps: int = 4
    stages: int = 3


DEFAULT_TILES = Tiles()


def tiles_for(tokens: int, base: Tiles = DEFAULT_TILES) -> Tiles:
    """`base` with BLOCK_M fitted to the token count (16..128 rows)."""
    return base._replace(block_m=min(base.block_m, max(16, triton.next_power_of_2(tokens))))


def supports(cfg: EncoderConfig, ffn: int, tiles: Tiles) -> bool:
    """Whether every product's shape splits evenly into this tiling (and attention's head size fits)."""
    h, k = cfg.hidden, tiles.block_k
    head_ok = cfg.head_dim >= 16 and cfg.head_dim & (cfg.head_dim - 1) == 0
    return (
        head_ok
        and (3 * h) % tiles.qkv_n == 0
        and h % k == 0
        and h % tiles.out_n == 0
        and h % (tiles.out_split * k) == 0
        and ffn % tiles.in_n == 0
        and h % tiles.fout_n == 0
        and ffn % (tiles.fout_split * k) == 0
    )


@cache
def _sm_count(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


@triton.jit
def _gemm_phase(
    pid, nprog, x_ptr, w_ptr, bias_ptr, out_ptr, M,
    N: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, SPLIT: tl.constexpr, PARTS: tl.constexpr, ACT: tl.constexpr,
    CACHE: tl.constexpr,
):  # fmt: skip
    # out = act(x W^T + bias) in out's dtype, or (PARTS) fp32 partial sums out[s] over K's chunk s.
    # x (M, K), W (N, K) row-major; item -> (M tile, N tile, K chunk), M tiles fastest.
    K_CHUNK: tl.constexpr = K // SPLIT
    N_TILES: tl.constexpr = N // BLOCK_N
    m_tiles = tl.cdiv(M, BLOCK_M)
    for item in range(pid, m_tiles * N_TILES * SPLIT, nprog):
        pid_m = item % m_tiles
        pid_n = (item // m_tiles) % N_TILES
        pid_k = item // (m_tiles * N_TILES)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = pid_k * K_CHUNK + tl.arange(0, BLOCK_K)
        rows = (offs_m % M).to(tl.int64)  # wrapped: loads stay in bounds, stores are masked
        x_ptrs = x_ptr + rows[:, None] * K + offs_k[None, :]  # (BLOCK_M, BLOCK_K)
        w_ptrs = w_ptr + offs_n[:, None].to(tl.int64) * K + offs_k[None, :]  # (BLOCK_N, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for _ in range(0, K_CHUNK, BLOCK_K):
            a = tl.load(x_ptrs, cache_modifier=CACHE)
            b = tl.load(w_ptrs)
            acc = tl.dot(a, tl.trans(b), acc)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        mask = offs_m[:, None] < M
        idx = offs_m[:, None].to(tl.int64) * N + offs_n[None, :]  # (BLOCK_M, BLOCK_N) into (M, N)
        if PARTS:
            tl.store(out_ptr + tl.cast(pid_k, tl.int64) * M * N + idx, acc, mask=mask)
        else:
            acc += tl.load(bias_ptr + offs_n).to(tl.float32)[None, :]
            acc = apply_gelu(acc, ACT)
            tl.store(out_ptr + idx, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _add_ln_phase(
    pid, nprog, parts_ptr, bias_ptr, res_ptr, w_ptr, b_ptr, y_ptr, M, eps,
    N: tl.constexpr, BLOCK_N: tl.constexpr, S: tl.constexpr, CACHE: tl.constexpr,
):  # fmt: skip
    # one row per item: y = LayerNorm(sum_s parts[s, row] + bias + residual[row]), fp32 statistics
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    for row in range(pid, M, nprog):
        r = tl.cast(row, tl.int64) * N
        v = tl.load(res_ptr + r + cols, mask=mask, other=0.0, cache_modifier=CACHE).to(tl.float32)
        for s in tl.static_range(S):
            v += tl.load(parts_ptr + s * M * N + r + cols, mask=mask, other=0.0, cache_modifier=CACHE)
        v += tl.load(bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        y = layernorm_row(v, cols, mask, w_ptr, b_ptr, N, eps)
        tl.store(y_ptr + r + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _attention_phase(
    pid, nprog, qkv_ptr, o_ptr, cu_ptr, table_ptr, slots, n_seqs, qk_scale,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr, CACHE: tl.constexpr,
):  # fmt: skip
    # item -> (query block slot, head); q, k, v are column blocks of the (M, 3H) QKV rows
    H: tl.constexpr = HEADS * HEAD_DIM
    for item in range(pid, slots * HEADS, nprog):
        attend_slot(
            item // HEADS, tl.cast(item % HEADS, tl.int64), qkv_ptr, qkv_ptr + H, qkv_ptr + 2 * H, o_ptr,
            cu_ptr, table_ptr, 3 * H, HEAD_DIM, 3 * H, HEAD_DIM, 3 * H, HEAD_DIM, H, HEAD_DIM,
            n_seqs, qk_scale, HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_T, CACHE,
        )  # fmt: skip


@triton.jit
def _prefetch_l2(pid, nprog, ptr, NBYTES: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    # this program's share of [ptr, ptr + NBYTES) asked for in L2, one bulk prefetch per CHUNK bytes:
    # chunks pid, pid + nprog, ... (the last one repeated where a program has fewer: no effect)
    N_CHUNKS: tl.constexpr = NBYTES // CHUNK
    chunks = tl.minimum(pid + tl.arange(0, BLOCK) * nprog, N_CHUNKS - 1)
    ptrs = ptr.to(tl.pointer_type(tl.uint8)) + chunks.to(tl.int64) * CHUNK
    size = tl.full([BLOCK], CHUNK, tl.int32)
    tl.inline_asm_elementwise(
        "cp.async.bulk.prefetch.L2.global [$1], $2;\n\tmov.u32 $0, 0;",
        "=r,l,r",
        [ptrs, size],
        dtype=tl.int32,
        is_pure=False,
        pack=1,
    )


@triton.jit
def _grid_barrier(counter_ptr, target):
    # every program: arrive (release: this program's stores before it), then wait for all (acquire)
    tl.debug_barrier()  # all of this program's threads have issued their stores
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    while tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu") < target:
        pass
    tl.debug_barrier()


@triton.jit(do_not_specialize=["M", "slots", "n_seqs"])
def _layer_kernel(
    x_ptr, qkv_w, qkv_b, out_w, out_b, ln1_w, ln1_b, in_w, in_b, fout_w, fout_b, ln2_w, ln2_b,
    qkv_ptr, ctx_ptr, parts_ptr, parts2_ptr, x1_ptr, h_ptr, y_ptr, cu_ptr, table_ptr, counter_ptr,
    next_qkv_w,
    M, slots, n_seqs, qk_scale, eps,
    H: tl.constexpr, BLOCK_H: tl.constexpr, F: tl.constexpr, HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, QKV_N: tl.constexpr, OUT_N: tl.constexpr,
    OUT_SPLIT: tl.constexpr, IN_N: tl.constexpr, FOUT_N: tl.constexpr, FOUT_SPLIT: tl.constexpr,
    BLOCK_K: tl.constexpr, ATT_M: tl.constexpr, ATT_N: tl.constexpr, ATT_T: tl.constexpr,
    ACT: tl.constexpr, PHASE: tl.constexpr, CACHE: tl.constexpr,
    PREFETCH: tl.constexpr, CHUNK: tl.constexpr, ESIZE: tl.constexpr, P_H: tl.constexpr,
    P_Q: tl.constexpr, P_F: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    ALL: tl.constexpr = PHASE == -1
    if PHASE == -2:
        for j in tl.static_range(1, 7):
            _grid_barrier(counter_ptr, j * nprog)
    if PREFETCH:  # this layer's later products and the next layer's QKV stream into L2 meanwhile
        _prefetch_l2(pid, nprog, out_w, H * H * ESIZE, CHUNK, P_H)
        _prefetch_l2(pid, nprog, in_w, F * H * ESIZE, CHUNK, P_F)
        _prefetch_l2(pid, nprog, fout_w, F * H * ESIZE, CHUNK, P_F)
        _prefetch_l2(pid, nprog, next_qkv_w, 3 * H * H * ESIZE, CHUNK, P_Q)
    if ALL or PHASE == 0:  # (M, 3H) = x Wqkv^T + b
        _gemm_phase(pid, nprog, x_ptr, qkv_w, qkv_b, qkv_ptr, M, 3 * H, H, BLOCK_M, QKV_N, BLOCK_K, 1,
                    False, 0, CACHE)  # fmt: skip
    if ALL:
        _grid_barrier(counter_ptr, nprog)
    if ALL or PHASE == 1:  # (M, H) attention within each sequence
        _attention_phase(pid, nprog, qkv_ptr, ctx_ptr, cu_ptr, table_ptr, slots, n_seqs, qk_scale,
                         HEADS, HEAD_DIM, ATT_M, ATT_N, ATT_T, CACHE)  # fmt: skip
    if ALL:
        _grid_barrier(counter_ptr, 2 * nprog)
    if ALL or PHASE == 2:  # (OUT_SPLIT, M, H) fp32 parts of ctx Wout^T
        _gemm_phase(pid, nprog, ctx_ptr, out_w, out_b, parts_ptr, M, H, H, BLOCK_M, OUT_N, BLOCK_K,
                    OUT_SPLIT, True, 0, CACHE)  # fmt: skip
    if ALL:
        _grid_barrier(counter_ptr, 3 * nprog)
    if ALL or PHASE == 3:  # x1 = LN(parts + b + x)
        _add_ln_phase(pid, nprog, parts_ptr, out_b, x_ptr, ln1_w, ln1_b, x1_ptr, M, eps, H, BLOCK_H,
                      OUT_SPLIT, CACHE)  # fmt: skip
    if ALL:
        _grid_barrier(counter_ptr, 4 * nprog)
    if ALL or PHASE == 4:  # (M, F) = GELU(x1 Win^T + b)
        _gemm_phase(pid, nprog, x1_ptr, in_w, in_b, h_ptr, M, F, H, BLOCK_M, IN_N, BLOCK_K, 1,
                    False, ACT, CACHE)  # fmt: skip
    if ALL:
        _grid_barrier(counter_ptr, 5 * nprog)
    if ALL or PHASE == 5:  # (FOUT_SPLIT, M, H) fp32 parts of h Wfout^T
        _gemm_phase(pid, nprog, h_ptr, fout_w, fout_b, parts2_ptr, M, H, F, BLOCK_M, FOUT_N, BLOCK_K,
                    FOUT_SPLIT, True, 0, CACHE)  # fmt: skip
    if ALL:
        _grid_barrier(counter_ptr, 6 * nprog)
    if ALL or PHASE == 6:  # y = LN(parts + b + x1)
        _add_ln_phase(pid, nprog, parts2_ptr, fout_b, x1_ptr, ln2_w, ln2_b, y_ptr, M, eps, H, BLOCK_H,
                      FOUT_SPLIT, CACHE)  # fmt: skip


def persistent_layer(
    x: torch.Tensor,  # (T, H) the layer's input, contiguous
    lw: LayerWeights,
    cfg: EncoderConfig,
    inputs: PackedInputs,
    counter: torch.Tensor,  # (1,) int32, zero: this launch's barrier counter
    tiles: Tiles,
    gelu: str = "gelu_tanh",  # "gelu_tanh" (cuBLASLt's epilogue) or "gelu" (exact erf)
    programs: int | None = None,  # default: one per SM
    phases: bool = False,  # one launch per phase, no barrier (the interpreter; probes)
    next_qkv_w: torch.Tensor | None = None,  # the next layer's QKV weights, asked for in L2 (CUDA)
    prefetch: bool = True,
    cache: str = "",  # the cache modifier of loads of what this launch wrote ("" or ".cg")
    only: int | None = None,  # probes: launch this PHASE value alone (BARRIERS_ONLY, NOTHING, 0..6)
) -> torch.Tensor:
    """(T, H) the post-LayerNorm layer of fused.half_layer, in one launch (or seven with `phases`)."""
    t, h = x.shape
    f = lw.ffn_in_w.shape[0]
    assert x.is_contiguous() and supports(cfg, f, tiles), (cfg, f, tiles)
    plan = inputs.attention_plan
    att, table = (plan.config, plan.table) if plan is not None else (DEFAULT, None)
    if table is None:
        table = plan_blocks(inputs.cu_seqlens, t, att.block_m)
    qkv = torch.empty(t, 3 * h, dtype=x.dtype, device=x.device)
    ctx, x1, y = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    hidden = torch.empty(t, f, dtype=x.dtype, device=x.device)
    # every buffer is written once per launch, before any program reads it: no L1 line of it is stale
    parts = torch.empty(tiles.out_split, t, h, dtype=torch.float32, device=x.device)
    parts2 = torch.empty(tiles.fout_split, t, h, dtype=torch.float32, device=x.device)
    if programs is None:
        programs = _sm_count(x.device.index or 0) if x.is_cuda else 4
    args = (
        x, lw.qkv_w, lw.qkv_b, lw.attn_out_w, lw.attn_out_b, lw.ln1_w, lw.ln1_b,
        lw.ffn_in_w, lw.ffn_in_b, lw.ffn_out_w, lw.ffn_out_b, lw.ln2_w, lw.ln2_b,
        qkv, ctx, parts, parts2, x1, hidden, y, inputs.cu_seqlens, table, counter,
        next_qkv_w if next_qkv_w is not None else lw.qkv_w,
        t, table.shape[0], inputs.cu_seqlens.numel() - 1, LOG2E / math.sqrt(cfg.head_dim), cfg.eps,
    )  # fmt: skip
    meta = dict(
        H=h, BLOCK_H=triton.next_power_of_2(h), F=f, HEADS=cfg.heads, HEAD_DIM=cfg.head_dim,
        BLOCK_M=tiles.block_m, QKV_N=tiles.qkv_n, OUT_N=tiles.out_n, OUT_SPLIT=tiles.out_split,
        IN_N=tiles.in_n, FOUT_N=tiles.fout_n, FOUT_SPLIT=tiles.fout_split, BLOCK_K=tiles.block_k,
        ATT_M=att.block_m, ATT_N=att.block_n, ATT_T=att.tail or att.block_n, ACT=ACTS[gelu],
        num_warps=tiles.warps, num_stages=tiles.stages,
    )  # fmt: skip
    # chunks per program of each prefetched matrix (H x H, 3H x H, F x H); sm_90's bulk prefetch
    esize = x.element_size()
    p_h, p_q, p_f = (
        triton.next_power_of_2(max(1, triton.cdiv(rows * h * esize // PREFETCH_CHUNK, programs)))
        for rows in (h, 3 * h, f)
    )
    prefetch = prefetch and x.is_cuda and not phases and torch.cuda.get_device_capability(x.device)[0] >= 9
    fetch = dict(PREFETCH=prefetch, CHUNK=PREFETCH_CHUNK, ESIZE=esize, P_H=p_h, P_Q=p_q, P_F=p_f)
    if only is not None:
        _layer_kernel[(programs,)](*args, **meta, **fetch, PHASE=only, CACHE=cache)
    elif phases:
        for phase in range(PHASES):
            _layer_kernel[(programs,)](*args, **meta, **fetch, PHASE=phase, CACHE=cache)
    else:
        _layer_kernel[(programs,)](*args, **meta, **fetch, PHASE=ALL_PHASES, CACHE=cache)
    return y
