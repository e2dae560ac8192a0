"""Does the reranker's ranking in bf16 depend on the GELU form? Spearman vs fp32 on the tiny test
reranker (weights 20x a trained model's) and on a synthetic full-size one: plain, fused (tanh
epilogue), fused (exact erf). python tools/reranker_gelu_check.py TOKENIZER_DIR"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tests.checkpoints import build_reranker
from tests.texts import MULTILINGUAL
from tokenizers import Tokenizer

from m3engine.backends.fast import FastBackend
from m3engine.backends.reference import ReferenceBackend
from m3engine.bench.synthetic import build_synthetic
from m3engine.bench.texts import TextMaker
from m3engine.models.spec import inspect_model
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import HeadRequest, PackedBatch, TokenIds

scratch = Path(tempfile.mkdtemp())
tiny = build_reranker(scratch / "tiny")
full = build_synthetic("bge-reranker-v2-m3", scratch / "full", Path(sys.argv[1]))
maker = TextMaker(Tokenizer.from_file(str(Path(sys.argv[1]) / "tokenizer.json")))
for name, path in (("tiny", tiny), ("synthetic", full)):
    spec, tok = inspect_model(path), TextTokenizer.load(path)
    ids = TokenIds(tok.pad_id, tok.special_ids)
    if name == "tiny":
        queries, docs, limit = [MULTILINGUAL[0]] * (len(MULTILINGUAL) - 1), MULTILINGUAL[1:], 128
    else:
        docs = maker.texts(maker.uniform_lengths(100, 250, 350))
        queries, limit = [maker.text(24)] * 100, 512
    batch = PackedBatch.from_encoded(tok.encode_pairs(queries, docs, limit, limit * 3 // 4))
    want = HeadRequest(logits=True)
    truth = ReferenceBackend(spec, ids, "cuda", "fp32").forward(batch, want).logits
    assert truth is not None
    for label, dtype, opts in (
        ("plain bf16", "bf16", {"kernels": "torch"}),
        ("fused bf16", "bf16", {}),
        ("fused-erf bf16", "bf16", {"gelu_epilogue": False}),
        ("fused fp16", "fp16", {}),
    ):
        got = FastBackend(spec, ids, "cuda", dtype, **opts).forward(batch, want).logits  # type: ignore[arg-type]
        assert got is not None
        print(name, label, "spearman", round(float(spearmanr(got[:, 0], truth[:, 0]).statistic), 5),
              "max|dlogit|", round(float(np.abs(got - truth).max()), 4), flush=True)  # fmt: skip
