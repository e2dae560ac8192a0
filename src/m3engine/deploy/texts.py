"""Texts for calibration and validation: a built-in multilingual sample, or the user's own file.

accuracy/sample_texts.txt holds 84 sentences in 25 languages and 12 scripts (news, questions, medicine,
code, commerce). Passages are seeded random concatenations of them, so a few hundred texts of
realistic length and language mix come from a small file; queries are single sentences. A user's
file (`--texts` / `--calibration`: .txt, .jsonl or .parquet, read by cli/files.py) replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass

from m3engine.accuracy.sample import compose, sample_sentences


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
