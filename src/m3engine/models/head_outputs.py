"""The heads' host side: a batch's head outputs, as numpy arrays, turned into BatchOutputs.

numpy only, so that every backend shares it, the onnx backend in an install without torch too.
The device side (models/heads.py: the torch backends; the graph itself for onnx) gives each output
packed, one row per token of the batch: dense (N, H), sparse (T,) token weights, ColBERT (T, D)
rows with each text's CLS row still in, logits (N, C). What depends on the data's values is done
here: sparse's max per (text, token id) needs a data-dependent size, which on a device would make
every launch wait for its batch; ColBERT's CLS rows are dropped by slicing.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from m3engine.types import BatchOutputs, FloatArray, IntArray, SparseVector


def sparse_weights(
    token_weights: FloatArray,  # (T,) relu(sparse_linear(h))
    input_ids: IntArray,  # (T,)
    lengths: Sequence[int],  # (N,)
    special_ids: IntArray,  # (S,) ids never reported
    vocab_size: int,
) -> list[SparseVector]:
    """Max weight per (text, token id), dropping special ids and weights <= 0; ids ascending per text.

    On the host: the device's part is the (T,) weights alone, so no data-dependent size (a sync)
    stops a launched batch from being queued behind the previous one.
    """
    seq = np.repeat(np.arange(len(lengths)), lengths)  # (T,)
    keep = (token_weights > 0) & ~np.isin(input_ids, special_ids)
    key = seq[keep] * vocab_size + input_ids[keep]  # (K0,) one value per (text, id)
    weights = token_weights[keep]
    order = np.argsort(key, kind="stable")
    key, weights = key[order], weights[order]
    starts = np.flatnonzero(np.diff(key, prepend=-1))  # (K,) first entry of each distinct key
    best = np.maximum.reduceat(weights, starts) if len(starts) else weights[:0]
    unique = key[starts]
    bounds = np.searchsorted(unique // vocab_size, np.arange(len(lengths) + 1))
    tokens = unique % vocab_size
    return [SparseVector(tokens[a:b], best[a:b]) for a, b in itertools.pairwise(bounds.tolist())]


def build_outputs(
    host: Mapping[str, np.ndarray],  # head_tensors' outputs (any subset), as host arrays
    input_ids: IntArray,  # (T,)
    lengths: Sequence[int],  # (N,)
    special_ids: IntArray,  # (S,)
    vocab_size: int,
) -> BatchOutputs:
    """BatchOutputs from the heads' packed arrays: ColBERT rows split per text without CLS, sparse
    weights aggregated per token id. `logits` (N, C), when present, pass through."""
    out = BatchOutputs(dense=host.get("dense"), logits=host.get("logits"))
    if "colbert" in host:
        starts = np.concatenate([[0], np.cumsum(lengths)])
        out.colbert = [host["colbert"][a + 1 : b] for a, b in itertools.pairwise(starts)]
    if "sparse" in host:
        out.sparse = sparse_weights(host["sparse"], input_ids, lengths, special_ids, vocab_size)
    return out
