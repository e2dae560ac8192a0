"""FlashAttention-4's varlen forward (PyPI `flash-attn-4`, CuTe DSL kernels for Hopper and Blackwell)
as the packed encoder's attention: optional, used only when asked for (`FastBackend(attention="fa4")`).

Its Hopper kernel for head size 64 works on 192 x 128 tiles with warp-specialised wgmma, where
varlen_attention.py's Triton kernel works on 64 x 64 tiles: faster per tile, more of a short
sequence's last tile wasted. Whether it pays on a given mix of lengths is measured, not assumed
(tools/varlen_triton_probe.py, tools/settings_probe.py `fa4`).
"""

from __future__ import annotations

import importlib.util

import torch


def available() -> bool:
    """Whether flash-attn-4 is installed (its import compiles nothing)."""
    return importlib.util.find_spec("flash_attn") is not None and _has_cute()


def _has_cute() -> bool:
    try:
        return importlib.util.find_spec("flash_attn.cute") is not None
    except ImportError:
        return False


def attention_fa4(
    q: torch.Tensor,  # (T, nh, hd), last dim contiguous
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,  # (N + 1,) int32
    max_len: int,
) -> torch.Tensor:
    """Bidirectional attention within each sequence; (T, nh, hd)."""
    from flash_attn.cute import flash_attn_varlen_func

    out = flash_attn_varlen_func(
        q, k, v, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens, max_seqlen_q=max_len, max_seqlen_k=max_len
    )
    result: torch.Tensor = out[0] if isinstance(out, tuple) else out  # (out, lse) when asked for lse
    return result
