"""Batch forming under a token budget: sorted by length so no batch pads a short text to a long one."""

from __future__ import annotations

from collections.abc import Sequence


def batch_cost(longest: int, count: int, total: int, padded: bool) -> int:
    """The tokens a batch costs the backend: count * longest when it pads, the sum of lengths when not.

    The one rule of every token budget: planned batches (`plan_batches`) and the server's batches
    formed across requests (former.py) alike."""
    return longest * count if padded else total


def plan_batches(lengths: Sequence[int], max_tokens: int, max_size: int, padded: bool) -> list[list[int]]:
    """Group input indices into batches, longest first, each within `max_tokens` and `max_size`.

    A batch costs max_len * n tokens when the backend pads and sum(len) when it does not. A single
    input longer than `max_tokens` still forms a batch of its own: the budget bounds how many inputs
    share a pass, never whether an input may run.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0  # sum of lengths in `current`; its first item is its longest
    for i in order:
        n = len(current) + 1
        longest = lengths[current[0]] if current else lengths[i]  # sorted: the first is the longest
        cost = batch_cost(longest, n, total + lengths[i], padded)
        if current and (n > max_size or cost > max_tokens):
            batches.append(current)
            current, total = [], 0
        current.append(i)
        total += lengths[i]
    if current:
        batches.append(current)
    return batches
