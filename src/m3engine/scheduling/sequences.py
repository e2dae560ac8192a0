"""One request's tokenized sequences in the flat form a batch is packed from.

Every sequence's ids lie back to back in one int64 array, with `bounds` marking where each starts
(the layout of `PackedBatch`). The batch former and the worker see only this, not one `Encoded`
object per sequence: packing a batch is one `np.concatenate` instead of a loop over every token,
and between processes (`serve --frontends N`) a job crosses the socket as two byte strings and a
short list, which pickle costs next to nothing, where a list of dataclasses costs a few
microseconds per sequence on each side.

    >>> seqs = Sequences.from_encoded(task.encoded)
    >>> batch = pack([(seqs, 0), (other, 2)])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from m3engine.types import Encoded, IntArray, PackedBatch

Wire = tuple[bytes, list[int], bytes | None]  # (ids, bounds, type ids): what crosses the socket


class Sequences:
    __slots__ = ("bounds", "ids", "lengths", "type_ids")

    def __init__(self, ids: IntArray, bounds: list[int], type_ids: IntArray | None = None) -> None:
        self.ids, self.bounds, self.type_ids = ids, bounds, type_ids
        self.lengths = [b - a for a, b in itertools.pairwise(bounds)]

    @classmethod
    def from_encoded(cls, encoded: Sequence[Encoded]) -> Sequences:
        bounds = [0]
        for e in encoded:
            bounds.append(bounds[-1] + len(e.ids))
        ids = np.fromiter((t for e in encoded for t in e.ids), dtype=np.int64, count=bounds[-1])
        types = None
        if any(e.type_ids is not None for e in encoded):
            types = np.fromiter(
                (t for e in encoded for t in (e.type_ids or [0] * len(e))), dtype=np.int64, count=bounds[-1]
            )
        return cls(ids, bounds, types)

    def to_wire(self) -> Wire:
        return self.ids.tobytes(), self.bounds, None if self.type_ids is None else self.type_ids.tobytes()

    @classmethod
    def from_wire(cls, wire: Wire) -> Sequences:
        """Read-only arrays over the received bytes: they are only read (concatenated into batches)."""
        ids, bounds, types = wire
        return cls(
            np.frombuffer(ids, dtype=np.int64),
            bounds,
            None if types is None else np.frombuffer(types, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> Encoded:
        """Sequence `index` as an `Encoded` (for tests and debugging; the hot path never builds one)."""
        a, b = self.bounds[index], self.bounds[index + 1]
        types = None if self.type_ids is None else self.type_ids[a:b].tolist()
        return Encoded(ids=self.ids[a:b].tolist(), type_ids=types)

    def row(self, index: int) -> IntArray:
        if len(self.lengths) == 1:
            return self.ids  # the common case, one query per request: no slice object
        return self.ids[self.bounds[index] : self.bounds[index + 1]]

    def type_row(self, index: int) -> IntArray:
        if self.type_ids is None:
            return np.zeros(self.lengths[index], dtype=np.int64)
        return self.type_ids[self.bounds[index] : self.bounds[index + 1]]


def pack(rows: Sequence[tuple[Sequences, int]]) -> PackedBatch:
    """One batch of the given (sequences, index) rows, in that order."""
    cu = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([s.lengths[i] for s, i in rows], out=cu[1:])
    ids = np.concatenate([s.row(i) for s, i in rows]) if rows else np.zeros(0, dtype=np.int64)
    types = None
    if any(s.type_ids is not None for s, _ in rows):
        types = np.concatenate([s.type_row(i) for s, i in rows])
    return PackedBatch(input_ids=ids, cu_seqlens=cu, token_type_ids=types)
