"""Every task of one model, each built from its inputs and one options object (options.py).

A task is first a `Bulk` (validated; tokenized by pieces: scheduling/pipeline.py) and `prepare()`
makes it a `Prepared` (tokenized at once); prepared.py holds both. The split lets two runners share
the same semantics: `Engine` runs a task's batches itself, one call at a time; the server's scheduler
forms batches across many prepared tasks (requests) and calls `finish` when every sequence of a task
has come back.

    >>> task = builder.embed(["a text"], EmbedOptions(sparse=True))  # validated and tokenized, not run
    >>> task.encoded, task.heads                                      # what the backend must see
    >>> results = task.finish(outputs_in_input_order)

The tasks live one family to a module (embed.py, rerank.py, classify.py); the checks and limits
that need the model, in `TaskContext` (context.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from m3engine.results import Classification, Embedding, HybridScore, RerankResult
from m3engine.tasks import classify as _classify
from m3engine.tasks import embed as _embed
from m3engine.tasks import rerank as _rerank
from m3engine.tasks.context import TaskContext
from m3engine.tasks.options import (
    ClassifyOptions,
    EmbedOptions,
    PairScoreOptions,
    RerankOptions,
    ScoreOptions,
)
from m3engine.tasks.prepared import Bulk as Bulk
from m3engine.tasks.prepared import Prepared as Prepared

Texts = str | Sequence[str]
Pairs = Sequence[Sequence[str]]


class TaskBuilder(TaskContext):
    """Validation, tokenization and result shaping of every task, for one model.

    Each `*_bulk` method gives a `Bulk`; the plain one the same task tokenized at once (`Prepared`).
    `options=None` is the options' defaults.
    """

    def embed(self, texts: Texts, options: EmbedOptions | None = None) -> Prepared[list[Embedding]]:
        return self.embed_bulk(texts, options).prepare()

    def embed_bulk(self, texts: Texts, options: EmbedOptions | None = None) -> Bulk[list[Embedding]]:
        return _embed.embed_bulk(self, texts, options or EmbedOptions())

    def embed_ids(
        self, sequences: Sequence[Sequence[int]], options: EmbedOptions | None = None
    ) -> Prepared[list[Embedding]]:
        """Pre-tokenized inputs (OpenAI's token-id form), run as given."""
        return _embed.embed_ids(self, sequences, options or EmbedOptions())

    def score(self, pairs: Pairs, options: ScoreOptions | None = None) -> Prepared[list[HybridScore]]:
        return self.score_bulk(pairs, options).prepare()

    def score_bulk(self, pairs: Pairs, options: ScoreOptions | None = None) -> Bulk[list[HybridScore]]:
        return _embed.score_bulk(self, pairs, options or ScoreOptions())

    def rerank(
        self, query: str, documents: Sequence[str], options: RerankOptions | None = None
    ) -> Prepared[list[RerankResult]]:
        """With `max_chunks_per_doc` > 1, long documents are scored as windows (no Bulk form)."""
        return _rerank.rerank(self, query, documents, options or RerankOptions())

    def rerank_bulk(
        self, query: str, documents: Sequence[str], options: RerankOptions | None = None
    ) -> Bulk[list[RerankResult]]:
        return _rerank.rerank_bulk(self, query, documents, options or RerankOptions())

    def score_pairs(self, pairs: Pairs, options: PairScoreOptions | None = None) -> Prepared[list[float]]:
        return self.score_pairs_bulk(pairs, options).prepare()

    def score_pairs_bulk(self, pairs: Pairs, options: PairScoreOptions | None = None) -> Bulk[list[float]]:
        return _rerank.score_pairs_bulk(self, pairs, options or PairScoreOptions())

    def classify(
        self, texts: Texts, options: ClassifyOptions | None = None
    ) -> Prepared[list[Classification]]:
        return self.classify_bulk(texts, options).prepare()

    def classify_bulk(
        self, texts: Texts, options: ClassifyOptions | None = None
    ) -> Bulk[list[Classification]]:
        return _classify.classify_bulk(self, texts, options or ClassifyOptions())

    def classify_pairs(
        self, pairs: Pairs, options: ClassifyOptions | None = None
    ) -> Prepared[list[Classification]]:
        """Sequence-pair classification (TEI's /predict with [text_a, text_b] inputs)."""
        return _classify.classify_pairs(self, pairs, options or ClassifyOptions())
