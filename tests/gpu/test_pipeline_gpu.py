"""Launch before collect on CUDA: graph replays and side-stream copies give what sequential forwards give.

Run on the device machine: `pytest -m gpu tests/gpu`. Skipped where torch sees no CUDA device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m3engine import Engine
from m3engine.backends.fast import FastBackend
from m3engine.backends.fast.graphs import choose_bucket
from m3engine.models.spec import inspect_model
from m3engine.tasks.options import EmbedOptions
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, TokenIds
from tests.texts import LONG, MULTILINGUAL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
ALL = HeadRequest(dense=True, sparse=True, colbert=True)
TEXTS = [f"{MULTILINGUAL[i % len(MULTILINGUAL)]} {i}" + " more words" * (i % 9) for i in range(400)]


def _backend(path: Path, dtype: str) -> tuple[FastBackend, TextTokenizer]:
    tokenizer = TextTokenizer.load(path)
    tokens = TokenIds(tokenizer.pad_id, tokenizer.special_ids)
    backend = FastBackend(inspect_model(path), tokens, device="cuda", dtype=dtype)
    return backend, tokenizer


def _equal(got: BatchOutputs, want: BatchOutputs) -> None:
    for name in ("dense", "logits"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    if want.colbert is not None:
        assert got.colbert is not None
        for g, w in zip(got.colbert, want.colbert, strict=True):
            np.testing.assert_array_equal(g, w)
    if want.sparse is not None:
        assert got.sparse is not None
        assert [s.to_dict() for s in got.sparse] == [s.to_dict() for s in want.sparse]


def _batches(tokenizer: TextTokenizer, groups: list[list[str]]) -> list[PackedBatch]:
    return [PackedBatch.from_encoded(tokenizer.encode(g, 256)) for g in groups]


def test_launch_ahead_with_graph_replays_equals_sequential_forwards(bge_m3_dir: Path) -> None:
    backend, tokenizer = _backend(bge_m3_dir, "bf16")
    # batches 1 and 2 replay one graph back to back (its static buffers reused), 0 and 5 another;
    # 3 is over the graph limit (eager: 16 x 256 tokens and more)
    long = [*[LONG] * 16, LONG[:900], *TEXTS[12:20]]
    groups = [TEXTS[0:6], TEXTS[6:12], TEXTS[20:26], long, TEXTS[26:27], TEXTS[0:6][::-1]]
    batches = _batches(tokenizer, groups)
    assert backend.graphs is not None
    keys = [choose_bucket(b.num_tokens, b.num_seqs, b.max_len, backend.graphs.max_tokens) for b in batches]
    assert keys[1] is not None and keys[1] == keys[2] and keys[0] == keys[5] and keys[3] is None
    for b in batches:  # asked once: the next forward of each graph-sized batch captures its bucket
        backend.forward(b, ALL)
    expected = [backend.forward(b, ALL) for b in batches]
    for _ in range(3):  # every batch queued before any is collected
        pending = [backend.launch(b, ALL) for b in batches]
        for p, want in zip(pending, expected, strict=True):
            _equal(p.result(), want)
    for _ in range(3):  # the engine's order: launch i + 1, then collect i
        previous = None
        got = []
        for b in batches:
            p = backend.launch(b, ALL)
            if previous is not None:
                got.append(previous.result())
            previous = p
        assert previous is not None
        got.append(previous.result())
        for g, want in zip(got, expected, strict=True):
            _equal(g, want)


def test_reranker_launch_ahead_equals_forward(reranker_dir: Path) -> None:
    backend, tokenizer = _backend(reranker_dir, "fp16")
    pairs = [
        PackedBatch.from_encoded(tokenizer.encode_pairs([MULTILINGUAL[0]] * 6, TEXTS[i : i + 6], 128, 96))
        for i in (0, 6, 12, 18)
    ]
    for b in pairs:  # asked once: the next forward captures each bucket (graphs.CAPTURE_AFTER)
        backend.forward(b, HeadRequest(logits=True))
    expected = [backend.forward(b, HeadRequest(logits=True)) for b in pairs]
    pending = [backend.launch(b, HeadRequest(logits=True)) for b in pairs]
    for p, want in zip(pending, expected, strict=True):
        _equal(p.result(), want)


def test_engine_pipeline_on_cuda_keeps_order_and_results(bge_m3_dir: Path) -> None:
    # fp32: batch compositions differ between the two paths, and the tiny checkpoint's large weights
    # would amplify half-precision rounding differences past any tight check
    engine = Engine.load(str(bge_m3_dir), backend="fast", device="cuda", dtype="fp32", max_batch_tokens=1024)
    done: list[tuple[int, int]] = []
    piped = engine.embed(TEXTS, sparse=True, colbert=True, progress=lambda n, t: done.append((n, t)))
    whole = engine.execute(engine.tasks.embed(TEXTS, EmbedOptions(sparse=True, colbert=True)))
    assert [r.index for r in piped] == list(range(len(TEXTS))) and len(done) > 4
    assert sum(n for n, _ in done) == len(TEXTS)
    assert sum(t for _, t in done) == sum(r.num_tokens for r in piped)
    for a, b in zip(piped, whole, strict=True):
        assert a.num_tokens == b.num_tokens and a.dense is not None and b.dense is not None
        assert float(a.dense @ b.dense) >= 0.9999
        assert a.colbert is not None and b.colbert is not None and a.colbert.shape == b.colbert.shape
        assert (a.colbert * b.colbert).sum(-1).min() >= 0.9999
        assert a.sparse is not None and b.sparse is not None
        x, y = a.sparse.to_dict(), b.sparse.to_dict()
        for key in x.keys() | y.keys():  # a weight at the relu's edge may be dropped by one path only
            assert abs(x.get(key, 0.0) - y.get(key, 0.0)) < 1e-4
