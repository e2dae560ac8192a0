"""Sequence classification: texts or text pairs -> the label probabilities (or logits) of each."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m3engine.results import Classification
from m3engine.tasks import postprocess
from m3engine.tasks.context import TaskContext, split_pairs
from m3engine.tasks.options import ClassifyOptions
from m3engine.tasks.prepared import Bulk, Prepared, estimate_tokens
from m3engine.tokenization.tokenizer import check_texts
from m3engine.types import BatchOutputs, Encoded, HeadRequest


def classify_bulk(
    ctx: TaskContext, texts: str | Sequence[str], options: ClassifyOptions
) -> Bulk[list[Classification]]:
    ctx.require("classify")
    items = check_texts(texts)
    limit = ctx.text_limit("passage", options.max_length)
    return Bulk(
        estimate_tokens(items, limit),
        lambda a, b: ctx.encode_texts(items[a:b], "passage", options.max_length, options.truncate),
        HeadRequest(logits=True),
        lambda encoded, out: _labels(ctx, encoded, out, options.raw_scores),
    )


def classify_pairs(
    ctx: TaskContext, pairs: Sequence[Sequence[str]], options: ClassifyOptions
) -> Prepared[list[Classification]]:
    """Sequence-pair classification (TEI's /predict with [text_a, text_b] inputs)."""
    ctx.require("classify")
    firsts, seconds = split_pairs(pairs)
    encoded = ctx.encode_pairs(firsts, seconds, options.truncate, options.max_length, None)
    return Prepared(
        encoded, HeadRequest(logits=True), lambda out: _labels(ctx, encoded, out, options.raw_scores)
    )


def _labels(
    ctx: TaskContext, encoded: list[Encoded], out: BatchOutputs, raw_scores: bool
) -> list[Classification]:
    assert out.logits is not None
    spec = ctx.spec
    probs = out.logits if raw_scores else postprocess.label_probabilities(out.logits, spec.multi_label)
    return [
        Classification(
            index=i,
            label=spec.labels[int(np.argmax(row))],
            score=float(np.max(row)),
            scores={label: float(p) for label, p in zip(spec.labels, row, strict=True)},
            num_tokens=len(encoded[i]),
            truncated=encoded[i].truncated,
        )
        for i, row in enumerate(probs)
    ]
