"""A reduced precision only where the user's own weights keep fp32's answers: the gate runs at load.

A reduced precision's accuracy depends on the trained weights (outlier channels, layer
sensitivity), which no random-weight test can judge; every user who loads a model has them. So a
load with a trial (trial.py: fp8 on request, bf16 for auto on a CPU) embeds a calibration sample
(accuracy/sample.py, or `--calibration FILE`) twice: with the candidate and with the fp32
reference backend on the same device. The candidate is served only if accuracy.gate.LOAD_GATE
passes (and, for auto, only if it ran the sample faster); otherwise the trial's fallback is served
and the verdict says why.

`choose` holds the decision and knows nothing of CUDA: it takes factories, so the tests drive it
with a fake candidate on the CPU. `gated_backend` wires it to the sample and to the backends that
`make` builds, for the engine (engine.py).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from m3engine.accuracy.outputs import embedding_accuracy, spearman
from m3engine.accuracy.sample import calibration_texts, fingerprint, read_lines
from m3engine.backends.base import Backend
from m3engine.backends.choose import with_batch_tokens
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.precision.trial import Trial
from m3engine.precision.verdict import Verdict, VerdictCache, cache_key
from m3engine.scheduling.pipeline import run_all
from m3engine.settings import EngineSettings
from m3engine.tasks.builder import TaskBuilder
from m3engine.tasks.options import EmbedOptions, PairScoreOptions
from m3engine.tasks.prepared import Prepared
from m3engine.tokenization.tokenizer import TextTokenizer

log = logging.getLogger("m3engine.precision")

Factory = Callable[[], Backend]


def _free(device: str) -> None:
    """Return a dropped backend's device memory now, before the next one is built on it."""
    gc.collect()
    if device.startswith("cuda"):
        import torch  # here: engine.py imports this module on every load, torch-free ones included

        torch.cuda.empty_cache()


def _timed(measure: Callable[[Backend], Any], backend: Backend) -> tuple[Any, float]:
    start = time.perf_counter()
    outputs = measure(backend)
    return outputs, time.perf_counter() - start


def choose(
    trial: Trial,
    candidate: Factory,
    fallback: Factory | None,
    reference: Factory,
    measure: Callable[[Backend], Any],
    compare: Callable[[Any, Any], dict[str, float]],
    *,
    cache: VerdictCache | None = None,
    key: str | None = None,
    device: str = "cpu",
) -> tuple[Backend, Verdict]:
    """The backend to serve and the verdict: `candidate` if `trial.gate` passes on `compare`'s metrics.

    `fallback` None: the fp32 reference itself is the fallback (a CPU's auto), kept rather than
    built twice. Otherwise the reference is dropped before the candidate is built, so the two never
    share the device's memory. A cached verdict (same `key`) skips both runs."""
    assert trial.candidate is not None
    tried, fallback_dtype = trial.candidate, trial.fallback
    if cache is not None and key is not None:
        known = cache.load(key)
        if known is not None:
            log.info("precision %s: cached verdict, serving %s (%s)", tried, known.served, known.reason)
            return (candidate() if known.passed else (fallback or reference)()), known
    ref = reference()
    ref_outputs, ref_s = _timed(measure, ref)
    kept = ref if fallback is None else None
    del ref
    _free(device)

    def serve_fallback() -> Backend:
        return kept if kept is not None else (fallback or reference)()

    chosen: Backend | None = None
    try:
        chosen = candidate()
        outputs, took = _timed(measure, chosen)
        metrics = compare(outputs, ref_outputs)
    except Exception as error:  # a recipe that cannot run on this device is a failed gate, not a failed load
        chosen = None
        _free(device)
        reason = f"{tried} could not run ({type(error).__name__}: {error}); serving {fallback_dtype}"
        log.warning("precision %s: %s", tried, reason)
        return serve_fallback(), Verdict(trial.requested, fallback_dtype, False, reason, candidate=tried)
    verdict = _judge(trial, metrics | {"fp32_s": ref_s, f"{tried}_s": took})
    if cache is not None and key is not None:
        cache.store(key, verdict)
    if verdict.passed:
        log.info("precision %s: %s", tried, verdict.reason)
        assert chosen is not None
        return chosen, verdict
    log.warning("precision %s: %s", tried, verdict.reason)
    chosen = None
    _free(device)
    return serve_fallback(), verdict


def _judge(trial: Trial, metrics: dict[str, float]) -> Verdict:
    assert trial.candidate is not None
    candidate, fallback = trial.candidate, trial.fallback
    result = trial.gate.check(metrics)
    rows = result["checks"]
    if not result["pass"]:
        failed = [f"{n} {row['value']:.5f} < {row['min']}" for n, row in rows.items() if not row["pass"]]
        reason = (
            f"the accuracy gate failed against fp32 ({', '.join(failed) or 'no metric measured'}); "
            f"serving {fallback}"
        )
        return Verdict(trial.requested, fallback, False, reason, metrics, rows, candidate=candidate)
    took, fp32_took = metrics[f"{candidate}_s"], metrics["fp32_s"]
    if trial.must_be_faster and took >= fp32_took:
        reason = (
            f"the accuracy gate passed against fp32, but {candidate} ran the sample in {took:.2f} s, "
            f"fp32 in {fp32_took:.2f} s; serving {fallback}"
        )
        return Verdict(trial.requested, fallback, False, reason, metrics, rows, candidate=candidate)
    reason = f"the accuracy gate passed against fp32 ({len(rows)} checks); serving {candidate}"
    if trial.must_be_faster:
        reason += f", {fp32_took / took:.1f}x fp32's speed on the sample"
    return Verdict(trial.requested, candidate, True, reason, metrics, rows, candidate=candidate)


def _run(backend: Backend, task: Prepared[Any], settings: EngineSettings) -> Any:
    budget, size, padded = settings.batch_tokens, settings.max_batch_size, backend.info.padded
    return task.finish(run_all(backend.launch, task.encoded, task.heads, budget, size, padded))


def _probes(
    spec: ModelSpec, tokenizer: TextTokenizer, settings: EngineSettings, texts: list[str], queries: int
) -> tuple[Callable[[Backend], Any], Callable[[Any, Any], dict[str, float]]]:
    """What to run on each backend, and how to compare the two: the metrics issue 23's gate names."""
    tasks = TaskBuilder(spec, tokenizer, settings)
    if spec.kind is ModelKind.RERANKER:
        pairs = [(t.split(". ")[0], p) for t in texts[:queries] for p in texts]
        options = PairScoreOptions(normalize=False)
        return (
            lambda b: np.array(_run(b, tasks.score_pairs(pairs, options), settings)),
            lambda ours, ref: {"spearman": spearman(ours, ref)},
        )
    if spec.kind is ModelKind.CLASSIFIER:
        labels = list(spec.labels)

        def scores(b: Backend) -> np.ndarray:
            return np.array([[c.scores[x] for x in labels] for c in _run(b, tasks.classify(texts), settings)])

        return scores, lambda ours, ref: {"spearman": spearman(ours.ravel(), ref.ravel())}
    m3 = spec.kind is ModelKind.BGE_M3
    embed = EmbedOptions(sparse=m3, colbert=m3)
    return lambda b: _run(b, tasks.embed(texts, embed), settings), embedding_accuracy


def gated_backend(
    spec: ModelSpec,
    tokenizer: TextTokenizer,
    settings: EngineSettings,
    device: str,
    make: Callable[[str, str], Backend],
    trial: Trial,
    torch_version: str | None = None,
) -> tuple[Backend, Verdict]:
    """`trial`'s candidate if the gate passes on `device`, else its fallback (the engine's entry).

    `make(backend name, dtype)` builds a backend on `device`: the candidate is (trial.backend,
    trial.candidate), the reference ("reference", "fp32")."""
    settings = with_batch_tokens(settings, device)
    if trial.candidate is None:
        log.info("precision %s: %s", trial.requested, trial.why)
        return make(trial.backend, trial.fallback), Verdict(trial.requested, trial.fallback, False, trial.why)
    texts = read_lines(settings.calibration) if settings.calibration else calibration_texts()
    measure, compare = _probes(spec, tokenizer, settings, texts, trial.rerank_queries)
    parts = {
        "sample": fingerprint(texts),
        "gate": repr(trial.gate),
        "kind": spec.kind.value,
        "trial": [trial.requested, trial.backend, trial.candidate, trial.fallback, trial.must_be_faster],
        "queries": trial.rerank_queries,
    }
    if torch_version is None:
        import torch  # only a trial of a torch backend gets here

        torch_version = torch.__version__
    key = cache_key(Path(spec.path), trial.device_name, torch_version, parts)
    same = (trial.backend, trial.fallback) == ("reference", "fp32")  # the fallback is the reference
    return choose(
        trial,
        candidate=lambda: make(trial.backend, trial.candidate or trial.fallback),
        fallback=None if same else lambda: make(trial.backend, trial.fallback),
        reference=lambda: make("reference", "fp32"),
        measure=measure,
        compare=compare,
        cache=VerdictCache(settings.cache_dir),
        key=key,
        device=device,
    )
