"""Workload texts made from a tokenizer's own vocabulary, at the token counts a workload asks for.

Random ids are decoded into text; re-encoding that text gives about the same number of tokens
(the workloads count the tokens actually produced, never the targets).
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

FIRST_ID = 5  # past <s>, <pad>, </s>, <unk> and one spare


class TextMaker:
    def __init__(self, tokenizer: Tokenizer, seed: int = 0) -> None:
        self._tok = tokenizer
        self._vocab = tokenizer.get_vocab_size()
        self._rng = np.random.default_rng(seed)

    def text(self, tokens: int) -> str:
        """A text of about `tokens` tokens (special tokens excluded)."""
        ids = self._rng.integers(FIRST_ID, self._vocab - 1, size=max(1, tokens)).tolist()
        return self._tok.decode(ids, skip_special_tokens=True)

    def texts(self, lengths: list[int]) -> list[str]:
        return [self.text(n) for n in lengths]

    def passages(self, count: int, longest: int = 2048) -> list[str]:
        """The bench's mixed passages: lognormal token counts, median 200, sigma 0.8, from 8 to `longest`."""
        return self.texts(self.lognormal_lengths(count, 200, 0.8, 8, longest))

    def long_documents(self, count: int) -> list[str]:
        """The bench's long documents: 4,000 to 8,000 tokens each, uniformly."""
        return self.texts(self.uniform_lengths(count, 4000, 8000))

    def lognormal_lengths(self, count: int, median: float, sigma: float, low: int, high: int) -> list[int]:
        raw = self._rng.lognormal(np.log(median), sigma, size=count)
        return [int(x) for x in np.clip(raw, low, high)]

    def uniform_lengths(self, count: int, low: int, high: int) -> list[int]:
        return [int(x) for x in self._rng.integers(low, high + 1, size=count)]


def count_tokens(tokenizer: Tokenizer, texts: list[str], max_length: int) -> int:
    """Tokens the model sees (special tokens included, truncated at `max_length`)."""
    return sum(min(len(e.ids), max_length) for e in tokenizer.encode_batch(texts))
