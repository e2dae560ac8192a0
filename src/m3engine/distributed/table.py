"""The output rows of a corpus job as an Arrow table: the one layout of every Parquet output, the
folder's parts and the single file alike (`m3engine embed ... --output OUT/` or `--output x.parquet`).

    id            the input's id (int64 when the input's ids are integers, else text), or the row's
                  number in the whole input when the input has no id column / field
    num_tokens    int32, tokens after truncation      truncated   bool
    dense         fixed_size_list<float32>[D]
    sparse        by `--sparse-format` (sparse_formats.py), each a Parquet column as is:
        indices_values   sparse_indices list<int64>, sparse_values list<float32>
                         (+ sparse_tokens list<string> with --sparse-tokens)
        pgvector         sparse: string, sparsevec text ('{6208:0.25,...}/250002', COPY loads it)
        tei              sparse: list<struct<index: int64, value: float32>>
        flag_dict, elasticsearch, vespa
                         sparse: map<string, float32> (token strings as keys with --sparse-tokens
                         for elasticsearch and vespa)
    colbert       list<fixed_size_list<float32>[C]>               (one vector per token but the first)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from m3engine.results import Embedding
from m3engine.sparse_formats import SparseFormat
from m3engine.types import SparseVector


def id_type(ids: Sequence[Any]) -> pa.DataType:
    return pa.int64() if all(isinstance(i, int) and not isinstance(i, bool) for i in ids) else pa.string()


def id_array(ids: Sequence[Any], kind: pa.DataType) -> pa.Array:
    return pa.array(ids if kind == pa.int64() else [str(i) for i in ids], kind)


@dataclass(frozen=True)
class Outputs:
    """The output columns a job asked for, and their widths (for a shard with no good row).
    `sparse`: the form of the sparse columns, None without sparse output."""

    dense: bool
    sparse: SparseFormat | None
    colbert: bool
    dense_dim: int | None
    colbert_dim: int | None


def embedding_table(
    ids: Sequence[Any], records: Sequence[Embedding], outputs: Outputs, id_kind: pa.DataType
) -> pa.Table:
    """The output rows of embedded texts, in the order given (`records[i]` is the row of `ids[i]`);
    `id_kind` is the shard's (`id_type` of all its ids), the same in each of its pieces."""
    columns: dict[str, pa.Array] = {
        "id": id_array(ids, id_kind),
        "num_tokens": pa.array([r.num_tokens for r in records], pa.int32()),
        "truncated": pa.array([r.truncated for r in records], pa.bool_()),
    }
    if outputs.dense:
        dim = records[0].dense.shape[0] if records and records[0].dense is not None else outputs.dense_dim
        flat: Any = np.concatenate([r.dense for r in records if r.dense is not None]) if records else []
        columns["dense"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
    if outputs.sparse is not None:
        weights = [r.sparse for r in records if r.sparse is not None]
        columns.update(sparse_columns(weights, outputs.sparse))
    if outputs.colbert:
        vectors = [np.asarray(r.colbert, np.float32) for r in records if r.colbert is not None]
        width = vectors[0].shape[1] if vectors else outputs.colbert_dim
        rows = pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate(vectors).reshape(-1) if vectors else [], pa.float32()), width
        )  # every token's vector, (sum of lengths, C); the offsets cut it per text
        offsets = np.concatenate([[0], np.cumsum([len(v) for v in vectors])]).astype(np.int32)
        columns["colbert"] = pa.ListArray.from_arrays(pa.array(offsets), rows)
    return pa.table(columns)


_ITEM = pa.struct([("index", pa.int64()), ("value", pa.float32())])


def sparse_columns(weights: Sequence[SparseVector], sparse: SparseFormat) -> dict[str, pa.Array]:
    """The sparse weights in the store's own form (the module docstring lists the columns). Every
    column is typed, so a piece with no rows has the schema of the others."""
    if sparse.style == "indices_values":
        columns = {
            "sparse_indices": pa.array([w.indices for w in weights], pa.list_(pa.int64())),
            "sparse_values": pa.array([w.values for w in weights], pa.list_(pa.float32())),
        }
        if sparse.token_of is not None:
            tokens = [sparse.render(w)["tokens"] for w in weights]
            columns["sparse_tokens"] = pa.array(tokens, pa.list_(pa.string()))
        return columns
    rendered = [sparse.render(w) for w in weights]
    if sparse.style == "pgvector":
        return {"sparse": pa.array(rendered, pa.string())}
    if sparse.style == "tei":
        return {"sparse": pa.array(rendered, pa.list_(_ITEM))}
    pairs = [list(r.items()) for r in rendered]  # flag_dict, elasticsearch, vespa: a JSON object each
    return {"sparse": pa.array(pairs, pa.map_(pa.string(), pa.float32()))}


def errors_jsonl(bad: Sequence[tuple[Any, str]]) -> bytes:
    return b"".join(
        json.dumps({"id": row_id, "reason": reason}, ensure_ascii=False).encode() + b"\n"
        for row_id, reason in bad
    )
