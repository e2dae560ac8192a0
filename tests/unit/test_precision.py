"""fp8 behind the accuracy gate at load (precision/), with a fake fp8 backend on the CPU.

The candidate is the fp32 reference wrapped (tests/precision_doubles.py): exact, it passes the fp8
gate; with noise, it fails and the fallback dtype is served with the reason in /info.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from m3engine import Engine
from m3engine.backends.base import Backend
from m3engine.metrics import Metrics
from m3engine.precision.gated import gated_backend
from m3engine.precision.trial import Trial
from m3engine.precision.verdict import Verdict
from m3engine.settings import EngineSettings
from tests.precision_doubles import NoisyBackend
from tests.texts import MULTILINGUAL

NOISY = 0.2  # of each vector's norm: dense cosine about 0.98, far under the gate's 0.999


class Loads:
    """Loads through the gate with a fake fp8 candidate, counting what each load built and ran."""

    def __init__(self, reference: Engine, tmp: Path, noise: float, fallback: str = "bf16") -> None:
        self.reference, self.noise, self.fallback = reference, noise, fallback
        sample = tmp / "calibration.txt"
        sample.write_text("\n".join(MULTILINGUAL[:12]), encoding="utf-8")
        self.settings = EngineSettings(
            model=str(reference.spec.path), dtype="fp8", calibration=str(sample), cache_dir=str(tmp / "cache")
        )
        self.built: Counter[tuple[str, str]] = Counter()
        self.fail_to_build = False

    def make(self, name: str, dtype: str) -> Backend:
        self.built[(name, dtype)] += 1
        if name == "reference":
            return self.reference.backend
        if self.fail_to_build and dtype == "fp8":
            raise RuntimeError("no fp8 kernels for this GPU")
        return NoisyBackend(self.reference.backend, dtype, noise=self.noise if dtype == "fp8" else 0.0)

    def load(self) -> Engine:
        e = self.reference
        trial = Trial("fp8", "fast", "fp8", self.fallback, "Fake GPU")
        backend, verdict = gated_backend(
            e.spec, e.tokenizer, self.settings, "cpu", self.make, trial, "torch-x"
        )
        return Engine(e.spec, e.tokenizer, backend, self.settings, precision=verdict)


def test_an_accurate_fp8_is_served(bge_m3: Engine, tmp_path: Path) -> None:
    info = Loads(bge_m3, tmp_path, noise=0.0).load().info()
    assert info["dtype"] == "fp8" and info["dtype_requested"] == "fp8"
    verdict = info["precision"]
    assert verdict["passed"] and verdict["served"] == "fp8" and not verdict["cached"]
    # every metric of issue 23's gate for BGE-M3 was measured and checked
    assert {"dense_cos_mean", "dense_cos_min", "sparse_top10_overlap_mean", "colbert_cos_mean"} <= set(
        verdict["checks"]
    )


def test_an_inaccurate_fp8_falls_back_to_bf16_and_says_why(bge_m3: Engine, tmp_path: Path) -> None:
    loads = Loads(bge_m3, tmp_path, noise=NOISY)
    engine = loads.load()
    info = engine.info()
    assert info["dtype"] == "bf16" and info["dtype_requested"] == "fp8"
    verdict = info["precision"]
    assert not verdict["passed"] and verdict["served"] == "bf16"
    assert verdict["metrics"]["dense_cos_mean"] < 0.999
    assert "dense_cos_mean" in verdict["reason"] and "serving bf16" in verdict["reason"]
    assert loads.built == Counter({("reference", "fp32"): 1, ("fast", "fp8"): 1, ("fast", "bf16"): 1})
    assert engine.embed(["still serves"])[0].dense is not None


def test_a_cached_verdict_skips_the_comparison(bge_m3: Engine, tmp_path: Path) -> None:
    loads = Loads(bge_m3, tmp_path, noise=NOISY)
    first = loads.load()
    assert loads.built[("reference", "fp32")] == 1
    second = loads.load()
    assert loads.built[("reference", "fp32")] == 1  # no reference built: no comparison ran
    assert loads.built[("fast", "fp8")] == 1  # nor the failed candidate
    assert second.backend.info.dtype == "bf16" and second.backend.batches == 0  # type: ignore[attr-defined]
    assert second.precision is not None and second.precision.cached
    assert second.precision.reason == first.precision.reason  # type: ignore[union-attr]


def test_a_passing_cached_verdict_serves_fp8_without_measuring(bge_m3: Engine, tmp_path: Path) -> None:
    loads = Loads(bge_m3, tmp_path, noise=0.0)
    loads.load()
    second = loads.load()
    assert second.backend.info.dtype == "fp8" and second.backend.batches == 0  # type: ignore[attr-defined]
    assert loads.built[("reference", "fp32")] == 1


@pytest.mark.parametrize("content", ["{not json", '{"passed": "yes"}', "[]", '{"requested": 1}'])
def test_a_corrupt_cache_entry_is_measured_again(bge_m3: Engine, tmp_path: Path, content: str) -> None:
    loads = Loads(bge_m3, tmp_path, noise=0.0)
    loads.load()
    (entry,) = (tmp_path / "cache" / "precision").glob("*.json")
    entry.write_text(content)
    again = loads.load()
    assert loads.built[("reference", "fp32")] == 2
    assert again.precision is not None and again.precision.passed and not again.precision.cached
    assert Verdict.from_json(json.loads(entry.read_text())).passed  # rewritten whole


def test_another_calibration_sample_is_another_cache_entry(bge_m3: Engine, tmp_path: Path) -> None:
    loads = Loads(bge_m3, tmp_path, noise=0.0)
    loads.load()
    Path(loads.settings.calibration or "").write_text("\n".join(MULTILINGUAL[2:14]), encoding="utf-8")
    loads.load()
    assert loads.built[("reference", "fp32")] == 2
    assert len(list((tmp_path / "cache" / "precision").glob("*.json"))) == 2


def test_an_fp8_that_cannot_run_falls_back_uncached(bge_m3: Engine, tmp_path: Path) -> None:
    loads = Loads(bge_m3, tmp_path, noise=0.0)
    loads.fail_to_build = True
    engine = loads.load()
    assert engine.backend.info.dtype == "bf16"
    assert engine.precision is not None and "no fp8 kernels" in engine.precision.reason
    assert not list((tmp_path / "cache").rglob("*.json"))  # a crash is not a verdict on the weights


def test_a_reranker_is_gated_on_spearman(reranker: Engine, tmp_path: Path) -> None:
    (tmp_path / "good").mkdir()
    good = Loads(reranker, tmp_path / "good", noise=0.0, fallback="fp16")
    bad = Loads(reranker, tmp_path, noise=2.0, fallback="fp16")
    passed, failed = good.load().precision, bad.load().precision
    assert passed is not None and passed.passed and set(passed.checks) == {"spearman"}
    assert failed is not None and not failed.passed and failed.served == "fp16"
    assert failed.metrics["spearman"] < 0.99


def test_the_fallback_gauge(bge_m3: Engine, tmp_path: Path) -> None:
    from m3engine.server.state import ServerState
    from m3engine.settings import ServerSettings

    metrics = Metrics()
    ServerState(ServerSettings(), [Loads(bge_m3, tmp_path, noise=NOISY).load()], metrics=metrics)
    assert b"m3engine_precision_fallback{model=" in metrics.render()
    assert (
        metrics.registry.get_sample_value("m3engine_precision_fallback", {"model": bge_m3.spec.name}) == 1.0
    )


def test_engine_load_with_fp8_runs_the_gate_once_for_every_device(
    bge_m3: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engine.from_settings's wiring: fp8 resolved (as on CUDA), the fake built by the registry."""
    import m3engine.engine as engine_module

    built: list[tuple[str, str, str]] = []

    def create_backend(name: str, *, device: str, dtype: str, **_: object) -> Backend:
        built.append((name, dtype, device))
        if name == "reference":
            return bge_m3.backend
        return NoisyBackend(bge_m3.backend, dtype, noise=NOISY if dtype == "fp8" else 0.0)

    monkeypatch.setattr(engine_module, "resolve_dtype", lambda *a: "fp8")
    monkeypatch.setattr(engine_module, "create_backend", create_backend)
    engine = Engine.load(
        str(bge_m3.spec.path), devices="cpu,cpu", backend="fast", dtype="fp8", cache_dir=str(tmp_path)
    )
    # the gate ran on the first device only, and its verdict (the fallback is auto's dtype, fp32 on
    # the CPU) chose the second device's dtype too
    assert [b for b in built if b[0] == "reference"] == [("reference", "fp32", "cpu")]
    assert engine.precision is not None and not engine.precision.passed
    assert [b.info.dtype for b in engine.backends] == [engine.precision.served] * 2
