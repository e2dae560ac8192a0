"""The heads as a backend runs them: the device part, then the copy and the host part."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from m3engine.backends.host_ring import HostRing
from m3engine.backends.transfer import PendingOutputs, collect_heads
from m3engine.models.heads import M3Heads, head_tensors
from m3engine.types import HeadRequest


def run_heads(
    hidden: torch.Tensor,  # (T, H)
    input_ids: np.ndarray,  # (T,)
    cu_seqlens: torch.Tensor,  # (N + 1,)
    lengths: Sequence[int],
    request: HeadRequest,
    pooling: str,
    heads: M3Heads | None,
    special_ids: np.ndarray,
    vocab_size: int,
    ring: HostRing | None = None,
) -> PendingOutputs:
    tensors = head_tensors(hidden, cu_seqlens, len(lengths), request, pooling, heads)
    return collect_heads(tensors, input_ids, lengths, special_ids, vocab_size, ring=ring)
