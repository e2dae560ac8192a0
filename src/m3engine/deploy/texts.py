"""Texts for calibration and validation: a built-in multilingual sample, or the user's own file.

sample_texts.txt holds 84 sentences in 25 languages and 12 scripts (news, questions, medicine,
code, commerce). Passages are seeded random concatenations of them, so a few hundred texts of
realistic length and language mix come from a small file; queries are single sentences. A user's
file (`--texts` / `--calibration`: .txt, .jsonl or .parquet, read by cli/files.py) replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np


def sample_sentences() -> list[str]:
    text = resources.files("m3engine.deploy").joinpath("sample_texts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def compose(sentences: list[str], count: int, per_text: int, seed: int) -> list[str]:
    """`count` texts of `per_text` sentences each, drawn with a seeded generator."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sentences), size=(count, per_text))
    return [" ".join(sentences[i] for i in row) for row in picks.tolist()]


@dataclass(frozen=True)
class ValidationTexts:
    """Queries and passages for the retrieval check (passages alone for dense / sparse / ColBERT)."""

    queries: list[str]
    passages: list[str]

    @classmethod
    def built_in(cls, queries: int = 32, passages: int = 128, per_passage: int = 8) -> ValidationTexts:
        sentences = sample_sentences()
        return cls(
            queries=compose(sentences, queries, 1, seed=11),
            passages=compose(sentences, passages, per_passage, seed=12),
        )

    @classmethod
    def from_texts(cls, texts: list[str], queries: int = 32) -> ValidationTexts:
        """A user's texts as passages; their first sentences (up to the first period) as queries."""
        heads = [t.split(". ")[0] for t in texts[:queries]]
        return cls(queries=heads, passages=list(texts))


def calibration_texts(count: int = 64, per_text: int = 8) -> list[str]:
    """The built-in calibration set: other draws than validation's (seed), so the gate is not fitted."""
    return compose(sample_sentences(), count, per_text, seed=21)
