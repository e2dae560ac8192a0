"""The memory a task's answer takes, known once it is tokenized and before any forward pass.

A request's answer (dense rows, sparse weights, ColBERT rows x width, labels) is what can grow far
past its body: a 4 MiB body of short texts asks for millions of ColBERT values. The server admits
this size against `--max-answer-bytes` before the batch runs (scheduling/admission.py), and holds
it until the answer has been sent.

Per value it counts the float32 the model gives back and the JSON text of it, twice: the pieces a
record serialises to and the joined body (server/respond.py); a float32 in JSON is at most 15
characters and a separator ("-1.2345678e-05,"). Base64 answers are smaller, and counted the same.
"""

from __future__ import annotations

from typing import Any

from m3engine.models.spec import ModelSpec
from m3engine.tasks.prepared import Prepared

BYTES_PER_VALUE = 4 + 2 * 16
SPARSE_VALUES_PER_TOKEN = 8
BYTES_PER_RECORD = 512  # the keys, index, counts and model name around each record's numbers
# /tokenize: each token is an object of five fields (id, text, special, start, stop), built as
# Python objects and then as JSON.
BYTES_PER_TOKEN_DETAIL = 600


def answer_values(task: Prepared[Any], spec: ModelSpec) -> int:
    """How many numbers the outputs of `task` hold: the heads it asks for, over its sequences."""
    heads, count, tokens = task.heads, len(task.encoded), task.num_tokens
    values = 0
    if heads.dense:
        values += count * spec.hidden_size
    if heads.sparse:
        # at most one (index, weight) per token, shaped as an object or a dict entry per weight in
        # the TEI and FlagEmbedding formats: counted as that many values
        values += SPARSE_VALUES_PER_TOKEN * tokens
    if heads.colbert:
        values += tokens * spec.hidden_size  # BGE-M3's ColBERT rows are as wide as its hidden size
    if heads.logits:
        values += count * max(1, len(spec.labels))
    return values


def answer_bytes(task: Prepared[Any], spec: ModelSpec) -> int:
    """An upper bound of the memory the answer of `task` takes while it is built and sent."""
    return len(task.encoded) * BYTES_PER_RECORD + answer_values(task, spec) * BYTES_PER_VALUE


def token_details_bytes(tokens: int, texts: int) -> int:
    """The same bound for /tokenize's answer of `tokens` tokens over `texts` texts."""
    return texts * BYTES_PER_RECORD + tokens * BYTES_PER_TOKEN_DETAIL
