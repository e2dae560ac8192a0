"""BGE-M3's and sentence embedders' heads, over packed hidden states.

Every function takes the states of a whole batch as one (T, H) tensor with `cu_seqlens` (N + 1,),
so the same code serves padded backends (after unpadding) and packed ones. The semantics are
FlagEmbedding's (see ../shared/reference/semantics.md):

- dense: the CLS state (or the mean over each text's tokens), normalised later by the engine;
- sparse: relu(sparse_linear(h)) per token; max per token id within a text; special ids and
  weights <= 0 dropped;
- ColBERT: colbert_linear(h) for every token but the first (CLS), EOS kept, L2-normalised.

Precision follows FlagEmbedding's `use_fp16=True`: when the encoder ran in half precision (bf16 or
fp16), the ColBERT linear runs in that dtype (cuBLAS accumulates in fp32), the norm is taken in fp32
and the vectors come back as float16 (FlagEmbedding returns `colbert_vecs` as float16 arrays): half
the bytes of the largest output to copy and keep. Dense and sparse stay float32 (their heads run in
fp32 over the states: N rows, and a (H,) dot product per token). In fp32 every head runs in fp32.

The heads are pure functions: `head_tensors` computes the device part of every requested output
(no copy, no wait); head_outputs.build_outputs (numpy, shared with the onnx backend) turns the same
tensors, once on the host, into BatchOutputs. Moving the tensors to the host is the backend's
business (backends/transfer.py: the fast backend copies them through pinned buffers on a side
stream while the next batch runs). ColBERT vectors are computed for every row (CLS included: a
(T, D) product is simpler and no slower than gathering T - N rows first).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from m3engine.errors import UnsupportedTaskError
from m3engine.models.kinds import COLBERT_FILE, SPARSE_FILE
from m3engine.types import HeadRequest

HALF = (torch.float16, torch.bfloat16)  # encoder dtypes whose ColBERT rows come back as float16


def sequence_index(cu_seqlens: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """(T,) the index of the sequence each token belongs to.

    `total` (T, when the caller knows it on the host) spares a device -> host sync on CUDA.
    """
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    index = torch.arange(len(lengths), device=cu_seqlens.device)
    return torch.repeat_interleave(index, lengths, output_size=total)


def cls_pool(hidden: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    return hidden[cu_seqlens[:-1]]  # (N, H)


def mean_pool(hidden: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(hidden.dtype)  # (N,)
    sums = torch.zeros(len(lengths), hidden.shape[1], dtype=hidden.dtype, device=hidden.device)
    sums.index_add_(0, sequence_index(cu_seqlens, hidden.shape[0]), hidden)  # (N, H)
    return sums / lengths.clamp(min=1e-9)[:, None]


POOLERS = {"cls": cls_pool, "mean": mean_pool}


class M3Heads(nn.Module):
    """The sparse and ColBERT linear layers of a BGE-M3 checkpoint."""

    def __init__(self, hidden_size: int, colbert_dim: int) -> None:
        super().__init__()
        self.colbert_linear = nn.Linear(hidden_size, colbert_dim)
        self.sparse_linear = nn.Linear(hidden_size, 1)
        self._casts: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

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

    def colbert(self, hidden: torch.Tensor) -> torch.Tensor:
        """(T, H) -> (T, D) L2-normalised rows: float32 from fp32 states, float16 from half ones."""
        if hidden.dtype not in HALF:
            return F.normalize(self.colbert_linear(hidden.float()), dim=-1)
        weight, bias = self._cast_colbert(hidden.dtype, hidden.device)
        rows = F.linear(hidden, weight, bias)  # (T, D) in the compute dtype
        norms = torch.linalg.vector_norm(rows, dim=-1, keepdim=True, dtype=torch.float32)  # (T, 1)
        out = torch.empty(rows.shape, dtype=torch.float16, device=rows.device)
        # one kernel: rows / max(norm, eps) computed in fp32 (as F.normalize), stored as fp16
        return torch.div(rows, norms.clamp_min(1e-12), out=out)

    def _cast_colbert(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The ColBERT weight and bias in `dtype`, cast once (the fp32 module stays for fp32 states)."""
        key = (dtype, device)
        if key not in self._casts:
            weight, bias = self.colbert_linear.weight.detach(), self.colbert_linear.bias.detach()
            self._casts[key] = (weight.to(device, dtype), bias.to(device, dtype))
        return self._casts[key]


def head_tensors(
    hidden: torch.Tensor,  # (T, H) final states, compute dtype
    cu_seqlens: torch.Tensor,  # (N + 1,) int64, on the states' device
    num_seqs: int,  # N, known on the host
    request: HeadRequest,
    pooling: str,
    m3_heads: M3Heads | None,
) -> dict[str, torch.Tensor]:
    """The device part of each requested output: dense (N, H) fp32, colbert (T, D), sparse (T,) fp32.

    Queued only: nothing here waits on the device.
    """
    if (request.sparse or request.colbert) and m3_heads is None:
        raise UnsupportedTaskError(
            "sparse and ColBERT outputs need a BGE-M3 checkpoint (colbert/sparse heads)"
        )
    out: dict[str, torch.Tensor] = {}
    # (T, H) in fp32 for the sparse head and mean pooling; CLS pooling converts only N rows, and
    # ColBERT reads `hidden` in its own dtype (M3Heads.colbert)
    states = hidden.float() if request.sparse or pooling != "cls" else hidden
    if request.dense and pooling == "cls" and num_seqs == 1:
        # one text: its CLS row is row 0, a slice (no index kernel); copied, as `hidden` may be a
        # CUDA graph's static output, which the next replay overwrites
        out["dense"] = states[:1].to(torch.float32, copy=True)  # (1, H)
    elif request.dense:
        out["dense"] = POOLERS[pooling](states, cu_seqlens).float()  # (N, H)
    if request.colbert and m3_heads is not None:
        out["colbert"] = m3_heads.colbert(hidden)  # (T, D) float32, or float16 from half states
    if request.sparse and m3_heads is not None:
        out["sparse"] = m3_heads.token_weights(states)  # (T,)
    return out
