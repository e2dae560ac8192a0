"""`m3engine validate`: any backend and dtype against the fp32 reference, on the same texts.

Both sides run through the public Engine API, so what is compared is what a user gets (truncation,
pooling, normalisation, the sparse and ColBERT post-processing). Embedders: dense cosine, sparse
top-10 overlap and weight error, ColBERT per-vector cosine on the passages, and the top-10
neighbours of each query among the passages. Rerankers: each query against every passage, Spearman
over all the scores and top-10 agreement per query. Classifiers: the label probabilities.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from m3engine.accuracy.gate import Gate, ranking_metrics, retrieval_agreement
from m3engine.accuracy.outputs import embedding_accuracy
from m3engine.deploy.texts import ValidationTexts
from m3engine.engine import Engine
from m3engine.models.kinds import ModelKind
from m3engine.results import Embedding

RERANK_QUERIES = 8  # queries x passages pairs: enough for a rank correlation, small enough for CI


def _timed(run: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def _dense(records: list[Embedding]) -> np.ndarray:
    return np.stack([e.dense for e in records if e.dense is not None])  # (N, D)


def _embedder(ours: Engine, ref: Engine, texts: ValidationTexts) -> tuple[dict[str, float], dict[str, float]]:
    m3 = ref.spec.kind is ModelKind.BGE_M3
    mine, t_mine = _timed(lambda: ours.embed(texts.passages, sparse=m3, colbert=m3))
    theirs, t_ref = _timed(lambda: ref.embed(texts.passages, sparse=m3, colbert=m3))
    metrics = embedding_accuracy(mine, theirs)
    q_mine = _dense(ours.embed(texts.queries, input_type="query"))
    q_ref = _dense(ref.embed(texts.queries, input_type="query"))
    p_mine, p_ref = _dense(mine), _dense(theirs)
    metrics.update(retrieval_agreement((q_mine, p_mine), (q_ref, p_ref)))
    tokens = sum(e.num_tokens for e in theirs)
    return metrics, {"tokens": tokens, "seconds": t_mine, "reference_seconds": t_ref}


def _reranker(ours: Engine, ref: Engine, texts: ValidationTexts) -> tuple[dict[str, float], dict[str, float]]:
    queries = texts.queries[:RERANK_QUERIES]
    pairs = [[(q, p) for p in texts.passages] for q in queries]
    mine, t_mine = _timed(lambda: [np.array(ours.score_pairs(ps, normalize=False)) for ps in pairs])
    theirs, t_ref = _timed(lambda: [np.array(ref.score_pairs(ps, normalize=False)) for ps in pairs])
    return ranking_metrics(mine, theirs), {
        "pairs": sum(len(p) for p in pairs),
        "seconds": t_mine,
        "reference_seconds": t_ref,
    }


def _classifier(
    ours: Engine, ref: Engine, texts: ValidationTexts
) -> tuple[dict[str, float], dict[str, float]]:
    mine, t_mine = _timed(lambda: ours.classify(texts.passages))
    theirs, t_ref = _timed(lambda: ref.classify(texts.passages))
    labels = list(ref.spec.labels)
    a = np.array([[c.scores[label] for label in labels] for c in mine])  # (N, labels)
    b = np.array([[c.scores[label] for label in labels] for c in theirs])
    metrics = ranking_metrics(list(a.T), list(b.T))
    metrics["label_agreement"] = float(
        np.mean([x.label == y.label for x, y in zip(mine, theirs, strict=True)])
    )
    return metrics, {"texts": len(texts.passages), "seconds": t_mine, "reference_seconds": t_ref}


def compare(ours: Engine, ref: Engine, texts: ValidationTexts, gate: Gate) -> dict[str, Any]:
    """The metrics of `ours` against `ref`, the gate's verdict, and what ran."""
    kind = ref.spec.kind
    if kind is ModelKind.RERANKER:
        metrics, work = _reranker(ours, ref, texts)
    elif kind is ModelKind.CLASSIFIER:
        metrics, work = _classifier(ours, ref, texts)
    else:
        metrics, work = _embedder(ours, ref, texts)

    def side(engine: Engine) -> dict[str, str]:
        info = engine.backend.info
        return {
            "model": str(engine.spec.path),
            "backend": info.name,
            "device": info.device,
            "dtype": info.dtype,
        }

    return {
        "candidate": side(ours),
        "reference": side(ref),
        "work": work,
        "metrics": metrics,
        **gate.check(metrics),
    }


def table(report: dict[str, Any]) -> str:
    """The report as an aligned text table: every metric, its threshold and verdict where gated."""
    cand, ref = report["candidate"], report["reference"]
    lines = [
        f"candidate: {cand['backend']} {cand['dtype']} on {cand['device']} ({cand['model']})",
        f"reference: {ref['backend']} {ref['dtype']} on {ref['device']} ({ref['model']})",
        f"{'metric':<28}{'value':>12}{'min':>10}  verdict",
    ]
    for name, value in report["metrics"].items():
        check = report["checks"].get(name)
        bound = f"{check['min']:>10.4f}  {'pass' if check['pass'] else 'FAIL'}" if check else f"{'':>10}  -"
        lines.append(f"{name:<28}{value:>12.6f}{bound}")
    lines.append(f"overall: {'PASS' if report['pass'] else 'FAIL'}")
    return "\n".join(lines)
