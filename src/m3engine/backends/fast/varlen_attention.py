"""Non-causal attention over packed sequences of mixed, mostly short lengths: a Triton forward kernel.

Why: on the bench's passages (median ~200 tokens) flash attention's varlen kernel (128 x 128 tiles,
a grid of max_len / 128 query blocks for *every* sequence) ran at ~187 TFLOP/s on an H200, 22 % of
the encoder's device time. Here the grid holds only the query blocks that exist:

    grid = (slots, nh)      slot -> (sequence, query block) from a small int32 table

and each program runs FlashAttention's online softmax over its sequence's keys in BLOCK_N steps
(fp32 scores and accumulator; exp2 with log2(e) folded into the scale). Only a sequence's ragged end
(the keys past its last full block, in steps of `AttentionConfig.tail`) is masked; query rows past the
sequence's end are computed on zeros and never stored, so
nothing crosses a sequence boundary and rows past cu_seqlens[-1] (a graph bucket's padding) are not
written.

The table (`plan_blocks`) is built on the device from cu_seqlens by one small Triton launch (no
host sync, so CUDA graphs capture it): its length is an upper bound known from shapes alone
(T / BLOCK_M + N + 1), and its empty slots (at most 2 per sequence) hold sequence index N, whose
programs return at once. `plan_attention` builds it once per batch and hands it to every layer
through PackedInputs (built per layer instead, query-sized batches ran 1.6x slower).
`max_len` is not needed by the kernel; it stays for the same contract as encoder.attention.

q, k, v may be strided views (the encoder's `qkv.view(T, 3, nh, hd).unbind(1)`: row stride
3 * nh * hd, head stride hd); only the last dimension must be contiguous. Correctness is tested on
the CPU with TRITON_INTERPRET=1 (tests/test_varlen_attention.py) and on CUDA in bf16/fp16 against
varlen_attn (tests/gpu/test_varlen_attention_gpu.py).

Why the fast backend uses it on CUDA (measured on an H200, bf16, 16 x 64 heads, 16 k-token batches):
on the bench's passages (lognormal lengths, median 200, 8..2,048) flash attention takes 5.61 ms per
pass (188 TFLOP/s), this kernel 4.01 ms at 64 x 64 tiles with 3 stages (263 TFLOP/s, 1.40x); on
query-sized inputs (8..64 tokens) flash 1.61 ms, this kernel 0.62-0.65 ms (2.5x).

A sequence's ragged end is attended in steps of `AttentionConfig.tail` keys (32 by default) instead
of one masked block of 64, so a sequence of 200 keys computes 224 columns, not 256 (measured: the
passages 4.51 -> 4.0 ms per pass).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl

from m3engine.backends.fast.inputs import AttentionConfig, AttentionPlan, PackedInputs

LOG2E = 1.4426950408889634

# Tile candidates, each checked against flash attention by the tests; DEFAULT: the fastest on the
# bench's passages on an H200 (wider tiles, more warps and 4 stages were slower).
CONFIGS = {
    "64x64": AttentionConfig(64, 64, 4, 2),
    "64x64s3": AttentionConfig(64, 64, 4, 3),
    "64x32": AttentionConfig(64, 32, 4, 2),
    "32x64": AttentionConfig(32, 64, 4, 2),
    "128x64": AttentionConfig(128, 64, 8, 3),
    "128x32": AttentionConfig(128, 32, 4, 3),
    "64x128": AttentionConfig(64, 128, 4, 2),
    "64x128s3": AttentionConfig(64, 128, 4, 3),
    "128x128w8": AttentionConfig(128, 128, 8, 2),
    "64x64s3t32": AttentionConfig(64, 64, 4, 3, 32),
    "64x64s3t16": AttentionConfig(64, 64, 4, 3, 16),
    "64x64s4": AttentionConfig(64, 64, 4, 4),
    "64x64w8s3": AttentionConfig(64, 64, 8, 3),
    "64x128s3t32": AttentionConfig(64, 128, 4, 3, 32),
    "128x64w8s3t32": AttentionConfig(128, 64, 8, 3, 32),
}
DEFAULT = CONFIGS["64x64s3t32"]


@triton.jit
def _attend_block(q, acc, m_i, l_i, k_ptrs, v_ptrs, valid, qk_scale, MASKED: tl.constexpr):
    # q: (BLOCK_M, D); k_ptrs, v_ptrs: (BLOCK_N, D) pointers; valid: (BLOCK_N,) keys inside the sequence
    if MASKED:
        k = tl.load(k_ptrs, mask=valid[:, None], other=0.0)
        v = tl.load(v_ptrs, mask=valid[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    s = tl.dot(q, tl.trans(k)) * qk_scale  # (BLOCK_M, BLOCK_N) fp32, in log2 units
    if MASKED:
        s = tl.where(valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: every key block holds one valid key
    p = tl.math.exp2(s - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)  # 0 on the first block (m_i = -inf)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit(do_not_specialize=["n_seqs"])  # per batch: no new compile for one sequence or 16
def _varlen_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, cu_ptr, table_ptr,
    sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, so_t, so_h,
    n_seqs, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    slot = tl.program_id(0)
    head = tl.program_id(1).to(tl.int64)
    seq = tl.load(table_ptr + 2 * slot)
    if seq >= n_seqs:  # a slot past the real block count (the table's length is an upper bound)
        return
    block = tl.load(table_ptr + 2 * slot + 1)
    start = tl.load(cu_ptr + seq).to(tl.int64)
    end = tl.load(cu_ptr + seq + 1).to(tl.int64)
    rows = start + block * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) packed token rows
    dims = tl.arange(0, HEAD_DIM)
    in_seq = rows < end
    q = tl.load(q_ptr + rows[:, None] * sq_t + head * sq_h + dims[None, :], mask=in_seq[:, None], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    cols = tl.arange(0, BLOCK_N)
    full_end = start + (end - start) // BLOCK_N * BLOCK_N  # key blocks before this need no mask
    for n0 in range(start, full_end, BLOCK_N):
        keys = n0 + cols
        k_ptrs = k_ptr + keys[:, None] * sk_t + head * sk_h + dims[None, :]
        v_ptrs = v_ptr + keys[:, None] * sv_t + head * sv_h + dims[None, :]
        acc, m_i, l_i = _attend_block(q, acc, m_i, l_i, k_ptrs, v_ptrs, keys < end, qk_scale, False)
    tail = tl.arange(0, BLOCK_T)
    for n0 in range(full_end, end, BLOCK_T):  # the ragged end, in steps of BLOCK_T <= BLOCK_N keys
        keys = n0 + tail
        k_ptrs = k_ptr + keys[:, None] * sk_t + head * sk_h + dims[None, :]
        v_ptrs = v_ptr + keys[:, None] * sv_t + head * sv_h + dims[None, :]
        acc, m_i, l_i = _attend_block(q, acc, m_i, l_i, k_ptrs, v_ptrs, keys < end, qk_scale, True)

    out = acc / l_i[:, None]
    o_ptrs = o_ptr + rows[:, None] * so_t + head * so_h + dims[None, :]
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=in_seq[:, None])


@triton.jit(do_not_specialize=["n_seqs", "slots"])
def _plan_kernel(cu_ptr, table_ptr, n_seqs, slots, BLOCK_M: tl.constexpr, CHUNK: tl.constexpr):
    # Sequence i owns slots [cu[i] // BLOCK_M + i, cu[i + 1] // BLOCK_M + i + 1): at least its
    # ceil(n_i / BLOCK_M) query blocks, at most 2 more, with no prefix sum over the other sequences.
    i = tl.program_id(0)
    start = tl.load(cu_ptr + i)
    end = tl.load(cu_ptr + i + 1)
    first = start // BLOCK_M + i
    blocks = (end - start + BLOCK_M - 1) // BLOCK_M
    # the next sequence's first slot; the last sequence also marks the table's tail
    stop = tl.where(i == n_seqs - 1, slots, end // BLOCK_M + i + 1)
    for s0 in range(first, stop, CHUNK):
        slot = s0 + tl.arange(0, CHUNK)
        block = slot - first
        seq = tl.where(block < blocks, i, n_seqs)  # n_seqs: an empty slot, its programs return
        tl.store(table_ptr + 2 * slot, seq, mask=slot < stop)
        tl.store(table_ptr + 2 * slot + 1, block, mask=slot < stop)


def supports_head_dim(head_dim: int) -> bool:
    """Whether the kernel runs at this head size: tl.dot needs a power of two >= 16 (BGE-M3: 64)."""
    return head_dim >= 16 and head_dim & (head_dim - 1) == 0


def plan_blocks(cu_seqlens: torch.Tensor, total: int, block_m: int) -> torch.Tensor:
    """(slots, 2) int32 on cu_seqlens' device: (sequence, query block) per program, (N, *) if empty.

    One launch, no host sync (capturable). `total` (rows of q, >= cu_seqlens[-1]) bounds the table
    from shapes alone: slots = total // block_m + N + 1, at most 2 empty slots per sequence.
    """
    n = cu_seqlens.numel() - 1
    assert n >= 1 and cu_seqlens.dtype == torch.int32
    slots = total // block_m + n + 1
    table = torch.empty(slots, 2, dtype=torch.int32, device=cu_seqlens.device)
    _plan_kernel[(n,)](cu_seqlens, table, n, slots, BLOCK_M=block_m, CHUNK=16, num_warps=1)
    return table


def attention_triton(
    q: torch.Tensor,  # (T, nh, hd), last dim contiguous
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,  # (N + 1,) int32
    max_len: int,
    config: AttentionConfig = DEFAULT,
    table: torch.Tensor | None = None,  # plan_blocks(cu_seqlens, T, config.block_m)
    out: torch.Tensor | None = None,  # (T, nh, hd) contiguous, to write into; else a new one
) -> torch.Tensor:
    """Bidirectional attention within each sequence, softmax(q k^T / sqrt(hd)) v; (T, nh, hd) contiguous.

    Rows past cu_seqlens[-1] are left unwritten, as no sequence owns them.
    """
    t, nh, hd = q.shape
    assert k.shape == v.shape == q.shape and q.dtype == k.dtype == v.dtype
    assert q.stride(2) == k.stride(2) == v.stride(2) == 1, "head_dim must be contiguous"
    assert supports_head_dim(hd), "tl.dot needs a power-of-two head_dim >= 16"
    tail = config.tail or config.block_n
    assert 16 <= tail <= config.block_n and tail & (tail - 1) == 0, f"tail {tail}: a power of two >= 16"
    if out is None:
        out = torch.empty(t, nh, hd, dtype=q.dtype, device=q.device)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    n = cu_seqlens.numel() - 1
    if t == 0 or n == 0:
        return out
    if table is None:
        table = plan_blocks(cu_seqlens, t, config.block_m)
    grid = (table.shape[0], nh)
    _varlen_fwd_kernel[grid](
        q, k, v, out, cu_seqlens, table,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1),
        n, LOG2E / math.sqrt(hd),
        HEAD_DIM=hd, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_T=tail,
        num_warps=config.warps, num_stages=config.stages,
    )  # fmt: skip
    return out


def plan_attention(inputs: PackedInputs, config: AttentionConfig = DEFAULT) -> PackedInputs:
    """`inputs` with the block table of this batch: every layer's attention then runs this kernel."""
    table = plan_blocks(inputs.cu_seqlens, inputs.input_ids.shape[0], config.block_m)
    return dataclasses.replace(inputs, attention_plan=AttentionPlan(table, config))
