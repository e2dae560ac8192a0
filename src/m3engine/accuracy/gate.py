"""The accuracy gate: how far a backend / precision may drift from the fp32 reference, and the check.

One place for the thresholds and the comparison, used by `m3engine validate`, by `m3engine build`
(which records the result in the artifact's manifest), by int8's choice of what to quantize
(deploy/quantize.py) and by the check at load (precision/, with LOAD_GATE: fp8, auto's bf16 on a
CPU). It sits in the core layer, numpy only, so that the engine may use it without importing
deploy/. Metrics come as a flat dict of floats (accuracy/outputs.py computes most of them); a
threshold whose metric is absent (no ColBERT on a sentence embedder, no reranker scores on an
embedder) is not applied.

Defaults: dense cosine mean >= 0.99 and min >= 0.97, the top-10 neighbours of each query agreeing
>= 90 % with fp32 (issue 18's gate for int8 on CPUs), ColBERT cosine mean >= 0.99, sparse top-10
overlap >= 90 %, reranker Spearman >= 0.99 (the gate that keeps cross-encoders out of bf16,
backends/choose.py) and reranker top-10 agreement >= 90 %.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from m3engine.accuracy.outputs import cosines, spearman

FloatMatrix = np.ndarray


@dataclass(frozen=True)
class Gate:
    dense_cos_mean: float = 0.99
    dense_cos_min: float = 0.97
    retrieval_top10: float = 0.90
    colbert_cos_mean: float = 0.99
    sparse_top10_overlap_mean: float = 0.90
    spearman: float = 0.99
    top10_agreement: float = 0.90

    def check(self, metrics: dict[str, float]) -> dict[str, Any]:
        """{metric: {value, min, pass}} for every threshold whose metric was measured, and `pass`."""
        rows = {
            name: {"value": metrics[name], "min": bound, "pass": bool(metrics[name] >= bound)}
            for name, bound in dataclasses.asdict(self).items()
            if name in metrics
        }
        return {"checks": rows, "pass": all(r["pass"] for r in rows.values()) and bool(rows)}

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        for f in dataclasses.fields(Gate):
            parser.add_argument(
                "--min-" + f.name.replace("_", "-"),
                dest="gate_" + f.name,
                type=float,
                default=f.default,
                help=f"Fail when {f.name} is below this (default {f.default}).",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Gate:
        return cls(**{f.name: getattr(args, "gate_" + f.name) for f in dataclasses.fields(cls)})


def dense_metrics(ours: FloatMatrix, ref: FloatMatrix) -> dict[str, float]:
    cos = cosines(ours, ref)  # (N,)
    return {"dense_cos_mean": float(cos.mean()), "dense_cos_min": float(cos.min())}


def top_k(queries: FloatMatrix, passages: FloatMatrix, k: int) -> FloatMatrix:
    """(Q, k) indices of each query's k nearest passages by cosine, best first."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    p = passages / np.linalg.norm(passages, axis=1, keepdims=True)
    scores = q @ p.T  # (Q, P)
    best: FloatMatrix = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return best


def retrieval_agreement(
    ours: tuple[FloatMatrix, FloatMatrix], ref: tuple[FloatMatrix, FloatMatrix], k: int = 10
) -> dict[str, float]:
    """Mean share of each query's top-k passages that both sides find: (queries, passages) each."""
    k = min(k, len(ref[1]))
    mine, theirs = top_k(*ours, k), top_k(*ref, k)
    shared = [len(set(a) & set(b)) / k for a, b in zip(mine.tolist(), theirs.tolist(), strict=True)]
    return {"retrieval_top10": float(np.mean(shared))}


def ranking_metrics(ours: list[FloatMatrix], ref: list[FloatMatrix], k: int = 10) -> dict[str, float]:
    """Reranker scores per query: Spearman over every pair, and the mean top-k agreement per query."""
    flat_o, flat_r = np.concatenate(ours), np.concatenate(ref)
    agree = []
    for o, r in zip(ours, ref, strict=True):
        kk = min(k, len(r))
        agree.append(len(set(np.argsort(-o)[:kk]) & set(np.argsort(-r)[:kk])) / kk)
    return {
        "spearman": spearman(flat_o, flat_r),
        "top10_agreement": float(np.mean(agree)),
        "logit_abs_err_max": float(np.abs(flat_o - flat_r).max()),
    }


# The gate at load, for fp8 on request and for bf16 when auto chooses it on a CPU: stricter than
# int8's (Gate()'s defaults), since a reduced precision is chosen for speed alone and the user must
# get fp32's rankings back. Thresholds whose metric the check at load does not measure (retrieval,
# reranker top-10) are not applied.
LOAD_GATE = Gate(
    dense_cos_mean=0.999,
    dense_cos_min=0.995,
    sparse_top10_overlap_mean=0.95,
    colbert_cos_mean=0.999,
    spearman=0.99,
)
