"""BGE-M3's and sentence embedders' heads, over packed hidden states.

Every function takes the states of a whole batch as one (T, H) tensor with `cu_seqlens` (N + 1,),
so the same code serves padded backends (after unpadding) and packed ones. The semantics are
FlagEmbedding's (see ../shared/reference/semantics.md):

- dense: the CLS state (or the mean over each text's tokens), normalised later by the engine;
- sparse: relu(sparse_linear(h)) per token; max per token id within a text; special ids and
  weights <= 0 dropped;
- ColBERT: colbert_linear(h) for every token but the first (CLS), EOS kept, L2-normalised.

`head_outputs` runs them for every backend and copies the results to the host through pinned
memory with one wait per batch. ColBERT returns ~4 KB per token, so at hundreds of thousands of
tokens a second its copy is the largest cost after the encoder: a pageable `.cpu()` is staged by the
driver at a few GB/s, a pinned buffer is copied by DMA at link speed. ColBERT vectors are computed
for every row (CLS included: a (T, D) product is simpler and no slower than gathering T - N rows
first) and the CLS rows are dropped by slicing on the host.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from m3engine.errors import UnsupportedTaskError
from m3engine.models.kinds import COLBERT_FILE, SPARSE_FILE
from m3engine.types import BatchOutputs, HeadRequest, SparseVector


def sequence_index(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """(T,) the index of the sequence each token belongs to."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    return torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)


def cls_pool(hidden: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    return hidden[cu_seqlens[:-1]]  # (N, H)


def mean_pool(hidden: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(hidden.dtype)  # (N,)
    sums = torch.zeros(len(lengths), hidden.shape[1], dtype=hidden.dtype, device=hidden.device)
    sums.index_add_(0, sequence_index(cu_seqlens), hidden)  # (N, H)
    return sums / lengths.clamp(min=1e-9)[:, None]


POOLERS = {"cls": cls_pool, "mean": mean_pool}


def sparse_weights(
    token_weights: torch.Tensor,  # (T,) relu(sparse_linear(h))
    input_ids: torch.Tensor,  # (T,)
    cu_seqlens: torch.Tensor,  # (N + 1,)
    special_ids: torch.Tensor,  # (S,) ids never reported
    vocab_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Max weight per (text, token id), dropping special ids and weights <= 0.

    Returns (seq, token_id, weight), each (K,), sorted by text then token id.
    """
    keep = (token_weights > 0) & ~torch.isin(input_ids, special_ids)
    key = sequence_index(cu_seqlens)[keep] * vocab_size + input_ids[keep]  # (K0,) unique per (text, id)
    unique, inverse = torch.unique(key, sorted=True, return_inverse=True)
    weights = torch.zeros(len(unique), dtype=token_weights.dtype, device=token_weights.device)
    weights.scatter_reduce_(0, inverse, token_weights[keep], reduce="amax", include_self=False)
    return unique // vocab_size, unique % vocab_size, weights


class M3Heads(nn.Module):
    """The sparse and ColBERT linear layers of a BGE-M3 checkpoint."""

    def __init__(self, hidden_size: int, colbert_dim: int) -> None:
        super().__init__()
        self.colbert_linear = nn.Linear(hidden_size, colbert_dim)
        self.sparse_linear = nn.Linear(hidden_size, 1)

    @classmethod
    def load(cls, path: Path, hidden_size: int) -> M3Heads:
        colbert = torch.load(path / COLBERT_FILE, map_location="cpu", weights_only=True)
        sparse = torch.load(path / SPARSE_FILE, map_location="cpu", weights_only=True)
        heads = cls(hidden_size, int(colbert["weight"].shape[0]))
        heads.colbert_linear.load_state_dict(colbert)
        heads.sparse_linear.load_state_dict(sparse)
        return heads

    @property
    def colbert_dim(self) -> int:
        return int(self.colbert_linear.out_features)

    def token_weights(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.sparse_linear(hidden)).squeeze(-1)  # (T,)


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
