"""The packed encoder forward: one (T, H) tensor for the whole batch, no padding anywhere.

Row-wise work (embeddings, LayerNorm, the matrix products) never mixes tokens, so only attention
needs to know where each sequence starts: it gets `cu_seqlens`. On CUDA in fp16/bf16 that is
`torch.nn.attention.varlen.varlen_attn` (flash attention over ragged sequences); elsewhere (CPU,
fp32) and for batches of only long sequences (`per_sequence_faster`) a plain SDPA call per
sequence, so CI tests the same packing and numerics. When the inputs carry an `attention_plan`
(varlen_attention.plan_attention), the batch runs the Triton kernel of varlen_attention.py instead
of flash attention (what the fast backend does on CUDA where Triton is installed; measured on an
H200: 1.3-1.4x flash's speed on the bench's passages, 2.5x on query-sized inputs).

Rows past `cu_seqlens[-1]` (the padding of a CUDA-graph bucket, or of an eager batch where graphs
run: staging.eager_rows) belong to no sequence: attention never reads them and every other step is
row-wise, so whatever they hold never reaches a real row.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from m3engine.backends.fast.inputs import PackedInputs
from m3engine.backends.fast.weights import EncoderConfig, EncoderWeights, LayerWeights
from m3engine.types import PackedBatch


def host_arrays(batch: PackedBatch, position_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, positions, token_types) as int64 host arrays, each (T,)."""
    lengths = batch.lengths
    starts = np.repeat(batch.cu_seqlens[:-1], lengths)  # (T,) start of each token's sequence
    positions = np.arange(batch.num_tokens, dtype=np.int64) - starts + position_offset
    types = batch.token_type_ids if batch.token_type_ids is not None else np.zeros_like(batch.input_ids)
    return batch.input_ids.astype(np.int64), positions, types.astype(np.int64)


def to_device(batch: PackedBatch, position_offset: int, device: torch.device) -> PackedInputs:
    ids, positions, types = host_arrays(batch, position_offset)
    stacked = torch.from_numpy(np.stack([ids, positions, types]))  # (3, T): one host-to-device copy
    if device.type == "cuda":
        stacked = stacked.pin_memory()
    stacked = stacked.to(device, non_blocking=True)
    cu = torch.from_numpy(batch.cu_seqlens.astype(np.int32)).to(device, non_blocking=True)
    return PackedInputs(
        stacked[0], stacked[1], stacked[2], cu, batch.max_len, tuple(int(n) for n in batch.lengths)
    )


def uses_varlen(device: torch.device, dtype: torch.dtype) -> bool:
    """Flash attention runs on CUDA in half precision only; fp32 and the CPU loop per sequence."""
    return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)


# From this length up, a batch of only long sequences runs one SDPA call per sequence where the
# Triton varlen kernel does not run (no Triton, or a head size it cannot take): on Hopper SDPA's
# kernels beat varlen_attn's on long inputs (measured on the bench's long documents, 4 k - 8 k
# tokens). Where the Triton kernel runs, it takes them: SDPA then picks cuDNN kernels whose plan
# is built per sequence length, so every new length pays. Measured on an H100 (24 documents of
# 4-8 k tokens, BGE-M3's shape, bf16): on lengths seen before SDPA ran 359 k tok/s and the Triton
# kernel 346 k; on new lengths SDPA took 2.9-4.2x its steady time, the Triton kernel 0.96-0.99x.
LONG_SEQUENCE = 2048


def per_sequence_faster(lengths: tuple[int, ...]) -> bool:
    """Whether a batch of these lengths attends faster one sequence at a time, even where the
    varlen kernels run: every sequence is long (LONG_SEQUENCE)."""
    return bool(lengths) and min(lengths) >= LONG_SEQUENCE


def _per_sequence(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: tuple[int, ...]
) -> torch.Tensor:
    out = torch.empty_like(q)
    start = 0
    for n in lengths:
        end = start + n
        qs, ks, vs = (x[start:end].transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # (1, nh, n, hd)
        out[start:end] = F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1)
        start = end
    return out


def attention(
    q: torch.Tensor,  # (T, nh, hd)
    k: torch.Tensor,
    v: torch.Tensor,
    inputs: PackedInputs,
    varlen: bool,
) -> torch.Tensor:
    """Bidirectional attention within each sequence; (T, nh, hd).

    `varlen`: one kernel over the packed batch, the Triton one where `inputs` carry a plan, else
    flash attention's varlen_attn (CUDA, half precision); otherwise SDPA one sequence at a time.
    """
    if varlen:
        if inputs.attention_plan is not None:
            from m3engine.backends.fast.varlen_attention import attention_triton

            plan = inputs.attention_plan
            return attention_triton(q, k, v, inputs.cu_seqlens, inputs.max_len, plan.config, plan.table)
        from torch.nn.attention.varlen import varlen_attn

        cu = inputs.cu_seqlens
        out = varlen_attn(q, k, v, cu, cu, inputs.max_len, inputs.max_len)
        assert isinstance(out, torch.Tensor)  # no aux outputs asked for
        return out
    return _per_sequence(q, k, v, inputs.lengths)


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name == "relu":
        return F.relu(x)
    return F.gelu(x, approximate="tanh")  # gelu_new, gelu_pytorch_tanh


def embed(w: EncoderWeights, inputs: PackedInputs) -> torch.Tensor:
    """(T, H) LayerNorm(word + position + token type)."""
    x = w.word[inputs.input_ids] + w.position[inputs.positions] + w.token_type[inputs.token_types]
    return F.layer_norm(x, (w.config.hidden,), w.emb_ln_w, w.emb_ln_b, w.config.eps)


def keep_rows(
    ctx: torch.Tensor, x: torch.Tensor, rows: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention output and the residual, (T, H) each, cut to `rows` (R,) when given: the rest of
    the layer is row-wise, so it then runs on the R rows alone."""
    return (ctx, x) if rows is None else (ctx[rows], x[rows])


def layer(
    x: torch.Tensor,
    lw: LayerWeights,
    cfg: EncoderConfig,
    inputs: PackedInputs,
    varlen: bool,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """One post-LayerNorm transformer layer over packed rows; (T, H) -> (T, H), or (R, H) for `rows`.

    `rows` (R,): only these rows' outputs. QKV and attention still run on every row (the keys and
    values are all needed); the products and LayerNorms after attention run on the R rows alone.
    """
    t = x.shape[0]
    qkv = F.linear(x, lw.qkv_w, lw.qkv_b).view(t, 3, cfg.heads, cfg.head_dim)  # (T, 3, nh, hd)
    q, k, v = qkv.unbind(1)  # (T, nh, hd) each, strided views of qkv
    ctx, x = keep_rows(attention(q, k, v, inputs, varlen).reshape(t, cfg.hidden), x, rows)  # (T or R, H)
    x = F.layer_norm(
        F.linear(ctx, lw.attn_out_w, lw.attn_out_b) + x, (cfg.hidden,), lw.ln1_w, lw.ln1_b, cfg.eps
    )
    h = activate(F.linear(x, lw.ffn_in_w, lw.ffn_in_b), cfg.activation)  # (T or R, F)
    return F.layer_norm(
        F.linear(h, lw.ffn_out_w, lw.ffn_out_b) + x, (cfg.hidden,), lw.ln2_w, lw.ln2_b, cfg.eps
    )


def encode(
    w: EncoderWeights, inputs: PackedInputs, varlen: bool, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """The final hidden states in the weights' dtype: (T, H), or (R, H) of `rows` alone (`layer`)."""
    x = embed(w, inputs)
    if not w.layers:
        return x if rows is None else x[rows]
    last = len(w.layers) - 1
    for i, lw in enumerate(w.layers):
        x = layer(x, lw, w.config, inputs, varlen, rows if i == last else None)
    return x


def classify(w: EncoderWeights, cls: torch.Tensor) -> torch.Tensor:
    """(R, C) logits in fp32 from the final states of R CLS rows, (R, H) (FastBackend passes them
    rounded up to staging.cls_rows where graphs run, and reads the first N)."""
    head = w.classifier
    assert head is not None, "classify() needs a checkpoint with a classification head"
    pooled = torch.tanh(F.linear(cls, head.dense_w, head.dense_b))
    return F.linear(pooled, head.out_w, head.out_b).float()
