"""The device tensors of one packed batch, as every step of the encoder reads them.

Apart from the encoder (encoder.py, fused.py) and the Triton attention kernel (varlen_attention.py),
so that both import it and neither imports the other at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


class AttentionConfig(NamedTuple):
    """The tiles of the Triton varlen attention kernel (varlen_attention.py)."""

    block_m: int  # query rows per program
    block_n: int  # key rows per inner step
    warps: int = 4
    stages: int = 2
    tail: int = 0  # key rows per step of a sequence's ragged end (0: block_n); a power of two <= block_n


class AttentionPlan(NamedTuple):
    """One batch's block table and the config it was planned for, read by every layer."""

    table: torch.Tensor  # (slots, 2) int32, varlen_attention.plan_blocks(cu_seqlens, T, config.block_m)
    config: AttentionConfig


@dataclass
class PackedInputs:
    """The device tensors of one packed batch."""

    input_ids: torch.Tensor  # (T,) int64
    positions: torch.Tensor  # (T,) int64, index into the position table
    token_types: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (N + 1,) int32, as flash attention wants it
    max_len: int  # longest sequence (a host int: no device sync to read it)
    lengths: tuple[int, ...]  # per-sequence lengths on the host, for the CPU attention loop
    attention_plan: AttentionPlan | None = None  # a block table: the Triton kernel runs
