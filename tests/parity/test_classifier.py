"""A BERT sequence classifier with three labels against transformers' own forward and softmax."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from m3engine import Engine, ModelKind
from tests.texts import LONG, MULTILINGUAL


def test_classifier_matches_transformers(classifier_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    engine = Engine.load(str(classifier_dir), device="cpu", dtype="fp32")
    assert engine.spec.kind is ModelKind.CLASSIFIER
    texts = [*MULTILINGUAL, LONG]
    tok = AutoTokenizer.from_pretrained(str(classifier_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(classifier_dir)).eval()
    with torch.inference_mode():
        batch = tok(texts, padding=True, truncation=True, max_length=engine.max_length, return_tensors="pt")
        ref = torch.softmax(model(**batch).logits, dim=-1).numpy()
    mine = engine.classify(texts)
    np.testing.assert_allclose(
        np.array([[r.scores[k] for k in engine.spec.labels] for r in mine]), ref, atol=1e-5
    )
    assert [r.label for r in mine] == [engine.spec.labels[i] for i in ref.argmax(1)]
    assert engine.spec.labels == ("negative", "neutral", "positive")
