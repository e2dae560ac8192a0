"""Every backend keeps the one contract of backends/base.py, and computes what the reference computes.

A new backend joins by adding its registry name to BACKENDS below (with what it needs to run here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3engine.backends.base import Backend, BackendInfo, BatchLimits
from m3engine.backends.registry import create_backend
from m3engine.models.spec import inspect_model
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, TokenIds
from tests.texts import MULTILINGUAL

BACKENDS = ["reference", "fast", "onnx"]
PADDED = {"reference", "onnx"}
# what each backend loads: the checkpoint, or for onnx the artifact `m3engine build` made of it
ARTIFACTS = {"onnx": {"bge_m3_dir": "m3_artifact", "reranker_dir": "reranker_artifact"}}
ALL = HeadRequest(dense=True, sparse=True, colbert=True)
LOGITS = HeadRequest(logits=True)


def _load(name: str, path: Path) -> tuple[Backend, TextTokenizer]:
    spec = inspect_model(path)
    tokenizer = TextTokenizer.load(path)
    tokens = TokenIds(pad_id=tokenizer.pad_id, special_ids=tokenizer.special_ids)
    return create_backend(name, spec=spec, tokens=tokens, device="cpu", dtype="fp32"), tokenizer


def _model(request: pytest.FixtureRequest, checkpoint: str) -> Path:
    fixture = ARTIFACTS.get(request.param, {}).get(checkpoint, checkpoint)
    path: Path = request.getfixturevalue(fixture)
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def m3(request: pytest.FixtureRequest) -> tuple[Backend, TextTokenizer]:
    return _load(request.param, _model(request, "bge_m3_dir"))


@pytest.fixture(scope="module", params=BACKENDS)
def cross(request: pytest.FixtureRequest) -> tuple[Backend, TextTokenizer]:
    return _load(request.param, _model(request, "reranker_dir"))


@pytest.fixture(scope="module")
def oracle(bge_m3_dir: Path) -> tuple[Backend, TextTokenizer]:
    return _load("reference", bge_m3_dir)


def _batch(tokenizer: TextTokenizer, texts: list[str]) -> PackedBatch:
    return PackedBatch.from_encoded(tokenizer.encode(texts, 64))


def _close(got: BatchOutputs, want: BatchOutputs) -> None:
    assert got.dense is not None and want.dense is not None
    np.testing.assert_allclose(got.dense, want.dense, atol=1e-4, rtol=1e-4)
    assert got.colbert is not None and want.colbert is not None
    for g, w in zip(got.colbert, want.colbert, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4)
    assert got.sparse is not None and want.sparse is not None
    for g, w in zip(got.sparse, want.sparse, strict=True):
        np.testing.assert_array_equal(g.indices, w.indices)
        np.testing.assert_allclose(g.values, w.values, atol=1e-4)


def test_info_says_what_runs_and_the_head_dims(m3: tuple[Backend, TextTokenizer]) -> None:
    backend, _ = m3
    assert isinstance(backend, Backend) and isinstance(backend.info, BackendInfo)
    assert backend.info.device == "cpu" and backend.info.dtype == "fp32"
    assert backend.info.padded is (backend.info.name in PADDED)
    assert backend.info.colbert_dim is not None and backend.info.colbert_dim > 0


def test_a_cross_encoder_has_no_colbert_head(cross: tuple[Backend, TextTokenizer]) -> None:
    assert cross[0].info.colbert_dim is None


def test_one_row_per_sequence_in_batch_order(m3: tuple[Backend, TextTokenizer]) -> None:
    backend, tokenizer = m3
    texts = MULTILINGUAL[:5]
    batch = _batch(tokenizer, texts)
    out = backend.launch(batch, ALL).result()
    assert out.dense is not None and out.dense.shape == (5, backend_hidden(backend))
    assert out.colbert is not None and [len(c) for c in out.colbert] == (batch.lengths - 1).tolist()
    assert out.colbert[0].shape[1] == backend.info.colbert_dim
    assert out.sparse is not None and len(out.sparse) == 5
    reversed_out = backend.forward(_batch(tokenizer, texts[::-1]), ALL)
    assert reversed_out.dense is not None
    np.testing.assert_allclose(reversed_out.dense[::-1], out.dense, atol=1e-5)


def backend_hidden(backend: Backend) -> int:
    return int(getattr(backend, "spec").hidden_size)  # noqa: B009 (every backend here keeps its spec)


def test_only_the_requested_heads_come_back(m3: tuple[Backend, TextTokenizer]) -> None:
    backend, tokenizer = m3
    out = backend.forward(_batch(tokenizer, MULTILINGUAL[:3]), HeadRequest(sparse=True))
    assert out.sparse is not None and out.dense is None and out.colbert is None and out.logits is None


def test_launches_before_collecting_equal_one_at_a_time(m3: tuple[Backend, TextTokenizer]) -> None:
    backend, tokenizer = m3
    batches = [_batch(tokenizer, MULTILINGUAL[i : i + 3]) for i in (0, 3, 6)]
    one_by_one = [backend.forward(b, ALL) for b in batches]
    pending = [backend.launch(b, ALL) for b in batches]  # all queued, none collected
    assert all(isinstance(p.done(), bool) for p in pending)
    for got, want in zip([p.result() for p in pending], one_by_one, strict=True):
        _close(got, want)
    assert all(p.done() for p in pending)


def test_warmup_leaves_outputs_unchanged(m3: tuple[Backend, TextTokenizer]) -> None:
    backend, tokenizer = m3
    batch = _batch(tokenizer, MULTILINGUAL[:2])
    before = backend.forward(batch, ALL)
    backend.warmup(BatchLimits(max_tokens=512, max_seqs=8, max_length=128, heads=(ALL,)))
    _close(backend.forward(batch, ALL), before)


def test_outputs_match_the_reference(
    m3: tuple[Backend, TextTokenizer], oracle: tuple[Backend, TextTokenizer]
) -> None:
    batch = _batch(m3[1], MULTILINGUAL[:6])
    _close(m3[0].forward(batch, ALL), oracle[0].forward(batch, ALL))


def test_cross_encoder_logits(cross: tuple[Backend, TextTokenizer], reranker_dir: Path) -> None:
    backend, tokenizer = cross
    reference, _ = _load("reference", reranker_dir)
    pairs = tokenizer.encode_pairs(["q"] * 3, MULTILINGUAL[:3], 64, 48, True)
    batch = PackedBatch.from_encoded(pairs)
    got = backend.forward(batch, LOGITS).logits
    want = reference.forward(batch, LOGITS).logits
    assert got is not None and want is not None and got.shape == (3, 1)
    np.testing.assert_allclose(got, want, atol=1e-4)
