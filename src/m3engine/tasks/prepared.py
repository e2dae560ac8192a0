"""A task between validation and results: `Bulk` (not tokenized yet) and `Prepared` (tokenized).

A `Bulk` is what the Engine's pipeline tokenizes in pieces on its threads; `Bulk.prepare()` is the
whole task tokenized at once, what the server's scheduler runs. Both finish into the same results.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from m3engine.errors import InputError
from m3engine.types import BatchOutputs, Encoded, HeadRequest

R = TypeVar("R")
CHARS_PER_TOKEN_GUESS = 4  # for sizing pipeline pieces only: English ~4.5, XLM-R on the bench's texts 5.5


@dataclass(frozen=True)
class Prepared(Generic[R]):
    """A tokenized task: the sequences to run, the heads they need, and how to turn outputs into R."""

    encoded: list[Encoded]
    heads: HeadRequest
    finish: Callable[[BatchOutputs], R]  # takes outputs for `encoded`, in the same order

    @property
    def num_tokens(self) -> int:
        return sum(len(e) for e in self.encoded)


@dataclass(frozen=True)
class Bulk(Generic[R]):
    """A validated task not tokenized yet, so that a pipeline can tokenize it in pieces.

    `encode(start, stop)` tokenizes inputs start:stop, one Encoded each; any piece may be encoded on
    any thread, in any order. `finish` takes every input's Encoded and the outputs for them, both in
    input order. `prepare()` is the whole task tokenized at once (what the server's scheduler runs).

    A task whose result is one record per input may also give `records` (the records of one batch's
    inputs, from their indices, Encoded and outputs) and `assemble` (the result from every record in
    input order): the pipeline then builds each batch's records as it collects the batch, while the
    device runs the next one, instead of all of them after the last batch.
    """

    sizes: list[int]  # estimated tokens of each input (characters / 4, capped at the limit)
    encode: Callable[[int, int], list[Encoded]]
    heads: HeadRequest
    finish: Callable[[list[Encoded], BatchOutputs], R]
    records: Callable[[list[int], list[Encoded], BatchOutputs], list[Any]] | None = None
    assemble: Callable[[list[Any]], R] | None = None

    def piece(self, start: int, stop: int) -> list[Encoded]:
        """`encode(start, stop)`, with input errors naming the input by its index in the whole task."""
        try:
            encoded = self.encode(start, stop)
        except InputError as error:
            raise shift_index(error, start) from None
        assert len(encoded) == stop - start, "one Encoded per input"
        return encoded

    def prepare(self) -> Prepared[R]:
        encoded = self.encode(0, len(self.sizes))
        return Prepared(encoded, self.heads, partial(self.finish, encoded))


_INDEXED = re.compile(r"^(input|pair|query|passage|document) (\d+)\b")


def shift_index(error: InputError, offset: int) -> InputError:
    """The same error, its leading "input N" (or "pair N") naming input N + offset of the whole task."""
    message = str(error)
    if offset == 0 or not _INDEXED.match(message):
        return error
    shifted = _INDEXED.sub(lambda m: f"{m.group(1)} {int(m.group(2)) + offset}", message, count=1)
    return type(error)(shifted)


def estimate_tokens(texts: Sequence[str], limit: int) -> list[int]:
    """A guess of each text's tokens from its characters, for cutting pipeline pieces."""
    return [min(len(t) // CHARS_PER_TOKEN_GUESS + 2, limit) for t in texts]
