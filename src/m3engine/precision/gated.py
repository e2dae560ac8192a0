"""fp8 only where the user's own weights keep fp32's answers: the gate runs at load.

fp8's accuracy depends on the trained weights (outlier channels, layer sensitivity), which no
random-weight test can judge; every user who loads a model has them. So with `--dtype fp8` the load
embeds a calibration sample (accuracy/sample.py, or `--calibration FILE`) twice: with the fp8
candidate and with the fp32 reference backend on the same device. fp8 is served only if
accuracy.gate.FP8_GATE passes; otherwise the automatic half precision (bf16 for embedders, fp16 for
cross-encoders, backends/choose.py) is served and the verdict says why.

`choose` holds the decision and knows nothing of CUDA: it takes factories, so the tests drive it
with a fake fp8 backend on the CPU. `gated_backend` wires it to the sample and to the backends that
`make` builds; `gated_fp8` is the engine's entry (engine.py).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from m3engine.accuracy.gate import FP8_GATE, Gate
from m3engine.accuracy.outputs import embedding_accuracy, spearman
from m3engine.accuracy.sample import calibration_texts, fingerprint, read_lines
from m3engine.backends.base import Backend
from m3engine.backends.choose import resolve_dtype
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.precision.verdict import Verdict, VerdictCache, cache_key
from m3engine.scheduling.pipeline import run_all
from m3engine.settings import EngineSettings
from m3engine.tasks.builder import TaskBuilder
from m3engine.tasks.options import EmbedOptions, PairScoreOptions
from m3engine.tasks.prepared import Prepared
from m3engine.tokenization.tokenizer import TextTokenizer

log = logging.getLogger("m3engine.precision")

Factory = Callable[[], Backend]
RERANK_QUERIES = 8  # queries x sample texts pairs: enough for a rank correlation over hundreds of scores


def _free(device: str) -> None:
    """Return a dropped backend's device memory now, before the next one is built on it."""
    gc.collect()
    if device.startswith("cuda"):
        import torch  # here: engine.py imports this module on every load, torch-free ones included

        torch.cuda.empty_cache()


def choose(
    requested: str,
    fallback_dtype: str,
    candidate: Factory,
    fallback: Factory,
    reference: Factory,
    measure: Callable[[Backend], Any],
    compare: Callable[[Any, Any], dict[str, float]],
    *,
    gate: Gate = FP8_GATE,
    cache: VerdictCache | None = None,
    key: str | None = None,
    device: str = "cpu",
) -> tuple[Backend, Verdict]:
    """The backend to serve and the verdict: `candidate` if `gate` passes on `compare`'s metrics.

    The reference runs first and is dropped before the candidate is built, so the two never share
    the device's memory. A cached verdict (same `key`) skips both runs."""
    if cache is not None and key is not None:
        known = cache.load(key)
        if known is not None:
            log.info("precision %s: cached verdict, serving %s (%s)", requested, known.served, known.reason)
            return (candidate() if known.passed else fallback()), known
    ref = reference()
    ref_outputs = measure(ref)
    del ref
    _free(device)
    chosen: Backend | None = None
    try:
        chosen = candidate()
        metrics = compare(measure(chosen), ref_outputs)
    except Exception as error:  # a recipe that cannot run on this GPU is a failed gate, not a failed load
        chosen = None
        _free(device)
        reason = f"{requested} could not run ({type(error).__name__}: {error}); serving {fallback_dtype}"
        log.warning("precision %s: %s", requested, reason)
        return fallback(), Verdict(requested, fallback_dtype, False, reason)
    verdict = _judge(requested, fallback_dtype, metrics, gate)
    if cache is not None and key is not None:
        cache.store(key, verdict)
    if verdict.passed:
        log.info("precision %s: %s", requested, verdict.reason)
        assert chosen is not None
        return chosen, verdict
    log.warning("precision %s: %s", requested, verdict.reason)
    chosen = None
    _free(device)
    return fallback(), verdict


def _judge(requested: str, fallback_dtype: str, metrics: dict[str, float], gate: Gate) -> Verdict:
    result = gate.check(metrics)
    rows = result["checks"]
    if result["pass"]:
        reason = f"the accuracy gate passed against fp32 ({len(rows)} checks); serving {requested}"
        return Verdict(requested, requested, True, reason, metrics, rows)
    failed = [f"{name} {row['value']:.5f} < {row['min']}" for name, row in rows.items() if not row["pass"]]
    reason = (
        f"the accuracy gate failed against fp32 ({', '.join(failed) or 'no metric measured'}); "
        f"serving {fallback_dtype}"
    )
    return Verdict(requested, fallback_dtype, False, reason, metrics, rows)


def _run(backend: Backend, task: Prepared[Any], settings: EngineSettings) -> Any:
    budget, size, padded = settings.max_batch_tokens, settings.max_batch_size, backend.info.padded
    return task.finish(run_all(backend.launch, task.encoded, task.heads, budget, size, padded))


def _probes(
    spec: ModelSpec, tokenizer: TextTokenizer, settings: EngineSettings, texts: list[str]
) -> tuple[Callable[[Backend], Any], Callable[[Any, Any], dict[str, float]]]:
    """What to run on each backend, and how to compare the two: the metrics issue 23's gate names."""
    tasks = TaskBuilder(spec, tokenizer, settings)
    if spec.kind is ModelKind.RERANKER:
        pairs = [(t.split(". ")[0], p) for t in texts[:RERANK_QUERIES] for p in texts]
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
    fallback_dtype: str,
    device_name: str,
    torch_version: str,
) -> tuple[Backend, Verdict]:
    """`make(backend name, dtype)` builds a backend on `device`; the candidate is (fast, fp8)."""
    texts = read_lines(settings.calibration) if settings.calibration else calibration_texts()
    measure, compare = _probes(spec, tokenizer, settings, texts)
    parts = {"sample": fingerprint(texts), "gate": repr(FP8_GATE), "kind": spec.kind.value, "dtype": "fp8"}
    key = cache_key(Path(spec.path), device_name, torch_version, parts)
    return choose(
        "fp8",
        fallback_dtype,
        candidate=lambda: make("fast", "fp8"),
        fallback=lambda: make("fast", fallback_dtype),
        reference=lambda: make("reference", "fp32"),
        measure=measure,
        compare=compare,
        cache=VerdictCache(settings.cache_dir),
        key=key,
        device=device,
    )


def gated_fp8(
    spec: ModelSpec,
    tokenizer: TextTokenizer,
    settings: EngineSettings,
    device: str,
    make: Callable[[str, str], Backend],
) -> tuple[Backend, Verdict]:
    """The fast backend in fp8 if the gate passes on `device`, else in auto's half precision."""
    import torch

    fallback = resolve_dtype("auto", device, "fast", spec.is_cross_encoder)
    # The verdict is per GPU model: another card rounds the same products differently.
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    return gated_backend(spec, tokenizer, settings, device, make, fallback, name, torch.__version__)
