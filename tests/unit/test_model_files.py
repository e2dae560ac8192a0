"""Checkpoint layouts seen in the wild: sentence-transformers formats, default-config classifiers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from m3engine import Engine, ModelKind, UnknownModelKindError
from m3engine.tokenization.tokenizer import TextTokenizer


@pytest.fixture()
def minilm_copy(tmp_path: Path, minilm_dir: Path) -> Path:
    return Path(shutil.copytree(minilm_dir, tmp_path / "minilm"))


def test_sentence_transformers_v6_pooling_format(minilm_copy: Path, minilm_dir: Path) -> None:
    (minilm_copy / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": True})
    )
    new, old = Engine.load(str(minilm_copy)), Engine.load(str(minilm_dir))
    assert new.spec.pooling == "mean"
    np.testing.assert_allclose(new.embed(["a text"])[0].dense, old.embed(["a text"])[0].dense, atol=1e-6)


def test_pooling_without_prompt_tokens_is_refused(minilm_copy: Path) -> None:
    (minilm_copy / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode": "mean", "include_prompt": False})
    )
    with pytest.raises(UnknownModelKindError, match="include_prompt"):
        Engine.load(str(minilm_copy))


def test_an_unsupported_module_is_refused_not_skipped(minilm_copy: Path) -> None:
    modules = json.loads((minilm_copy / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (minilm_copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnknownModelKindError, match="Dense is not supported"):
        Engine.load(str(minilm_copy))


def test_classifier_saved_with_the_default_two_labels(tmp_path: Path, minilm_dir: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    BertForSequenceClassification(config).save_pretrained(str(tmp_path))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, tmp_path / name)
    engine = Engine.load(str(tmp_path))
    assert engine.spec.kind is ModelKind.CLASSIFIER and len(engine.spec.labels) == 2
    (result,) = engine.classify(["fine"])
    assert set(result.scores) == set(engine.spec.labels) and sum(result.scores.values()) == pytest.approx(1.0)


def test_sparse_drops_exactly_the_references_special_ids(minilm_dir: Path, bge_m3: Engine) -> None:
    # FlagEmbedding drops cls, eos, pad and unk; BERT has no eos, and its [SEP] (102) is kept
    assert TextTokenizer.load(minilm_dir).special_ids == {101, 0, 100}
    assert bge_m3.tokenizer.special_ids == {0, 1, 2, 3}
