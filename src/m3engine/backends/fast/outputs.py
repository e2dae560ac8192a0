"""The heads over packed states, with every result copied to the host through pinned memory.

Same semantics as `m3engine.models.heads.compute_outputs` (tests hold them equal); the difference is
the transfer. ColBERT returns ~4 KB per token, so at hundreds of thousands of tokens a second its
copy is the largest cost after the encoder: a pageable `.cpu()` is staged by the driver at a few
GB/s, a pinned buffer is copied by DMA at link speed. The pinned tensors come from PyTorch's
caching host allocator, so after warm-up they cost no allocation; the numpy arrays returned keep
them alive.

ColBERT vectors are computed for every row (CLS included: a (T, D) product is simpler and no
slower than gathering T - N rows first) and the CLS rows are dropped by slicing on the host.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.nn import functional as F

from m3engine.errors import UnsupportedTaskError
from m3engine.models.heads import POOLERS, M3Heads, sparse_weights
from m3engine.types import BatchOutputs, HeadRequest, SparseVector


def _to_host(tensor: torch.Tensor) -> torch.Tensor:
    """Start an asynchronous copy into pinned memory; valid after the stream synchronises."""
    if tensor.device.type != "cuda":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host


def head_outputs(
    hidden: torch.Tensor,  # (T, H) final states, compute dtype
    input_ids: torch.Tensor,  # (T,)
    cu_seqlens: torch.Tensor,  # (N + 1,) int64
    lengths: tuple[int, ...],  # (N,) on the host
    request: HeadRequest,
    pooling: str,
    m3_heads: M3Heads | None,
    special_ids: torch.Tensor,  # (S,)
    vocab_size: int,
) -> BatchOutputs:
    if (request.sparse or request.colbert) and m3_heads is None:
        raise UnsupportedTaskError(
            "sparse and ColBERT outputs need a BGE-M3 checkpoint (colbert/sparse heads)"
        )
    pending: dict[str, torch.Tensor] = {}
    needs_all_rows = request.sparse or request.colbert or pooling != "cls"
    # (T, H): heads in fp32 whatever the encoder ran in; CLS pooling alone converts only N rows
    states = hidden.float() if needs_all_rows else hidden
    if request.dense:
        pending["dense"] = _to_host(POOLERS[pooling](states, cu_seqlens).float())  # (N, H)
    if request.colbert and m3_heads is not None:
        pending["colbert"] = _to_host(F.normalize(m3_heads.colbert_linear(states), dim=-1))  # (T, D)
    sparse = None
    if request.sparse and m3_heads is not None:
        # torch.unique synchronises on its own; the small results then travel with the others
        sparse = sparse_weights(
            m3_heads.token_weights(states), input_ids, cu_seqlens, special_ids, vocab_size
        )
        pending.update(seq=_to_host(sparse[0]), tok=_to_host(sparse[1]), weight=_to_host(sparse[2]))
    if hidden.device.type == "cuda":
        torch.cuda.current_stream(hidden.device).synchronize()  # the one wait for every copy above
    out = BatchOutputs()
    if "dense" in pending:
        out.dense = pending["dense"].numpy()
    if "colbert" in pending:
        rows = pending["colbert"].numpy()
        starts = np.concatenate([[0], np.cumsum(lengths)])
        out.colbert = [rows[a + 1 : b] for a, b in itertools.pairwise(starts)]
    if sparse is not None:
        seq, tok, weight = (pending[k].numpy() for k in ("seq", "tok", "weight"))
        bounds = np.searchsorted(seq, np.arange(len(lengths) + 1))
        out.sparse = [SparseVector(tok[a:b], weight[a:b]) for a, b in itertools.pairwise(bounds)]
    return out
