"""dtype=auto on a CPU (precision/trial.py): bf16 where the CPU has bf16 units and bf16 keeps fp32's
answers and runs faster, checked at load; fp32 otherwise, with the reason in /info.

The verdict logic runs with the fp32 reference wrapped (tests/precision_doubles.py) as the bf16
candidate, made inaccurate or slow on demand; the CPU flags come from cpuinfo files written here.
The last test loads the real all-MiniLM-L6-v2 weights with auto and reads /info from a real server.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx

from m3engine import Engine
from m3engine.backends.base import Backend
from m3engine.metrics import Metrics
from m3engine.precision.gated import gated_backend
from m3engine.precision.trial import cpu_trial, trial_for
from m3engine.process.cpu_features import bf16_units, cpu_name
from m3engine.settings import EngineSettings, ServerSettings
from tests.api.live import LiveServer
from tests.precision_doubles import NoisyBackend
from tests.texts import MULTILINGUAL

ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx512f avx512_vnni avx512_bf16\n"
SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t: avx512f avx512_bf16 amx_bf16 amx_tile\n"
SKYLAKE = "model name\t: Intel(R) Xeon(R) Platinum 8175M\nflags\t: avx2 avx512f avx512_vnni\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16 svebf16\nCPU part\t: 0xd40\n"


def test_bf16_units_are_read_from_cpuinfo(tmp_path: Path) -> None:
    found = {}
    cpus = {"zen4": ZEN4, "sapphire": SAPPHIRE, "skylake": SKYLAKE, "graviton3": GRAVITON3}
    for name, text in cpus.items():
        (tmp_path / name).write_text(text)
        found[name] = bf16_units(tmp_path / name)
    assert found == {
        "zen4": ["avx512_bf16"],
        "sapphire": ["amx_bf16", "avx512_bf16"],
        "skylake": [],
        "graviton3": ["bf16"],
    }
    assert cpu_name(tmp_path / "zen4") == "AMD EPYC 9R14"


def test_only_auto_on_a_cpu_with_a_torch_backend_runs_a_trial() -> None:
    trial = trial_for("auto", "fp32", "cpu", "reference", False)
    assert trial is not None and trial.requested == "auto" and trial.fallback == "fp32"
    assert trial.candidate == ("bf16" if bf16_units() else None)
    for requested, backend in [("fp32", "reference"), ("bf16", "fast"), ("auto", "onnx"), ("auto", "x.y:Z")]:
        assert trial_for(requested, "fp32", "cpu", backend, False) is None
    assert trial_for("auto", "bf16", "cuda", "fast", False) is None
    no_units = cpu_trial("reference", [], "Old CPU")
    assert no_units.candidate is None and "no bf16 units" in no_units.why
    assert cpu_trial("fast", ["amx_bf16"], "New CPU").must_be_faster


class CpuLoads:
    """Loads through auto's trial with the fp32 reference standing in for bf16, counting builds."""

    SLOW = 0.4  # seconds a slowed backend sleeps per batch: far above this machine's timing noise

    def __init__(self, reference: Engine, tmp: Path, *, noise: float = 0.0, slow_bf16: bool = False) -> None:
        self.reference, self.noise, self.slow_bf16 = reference, noise, slow_bf16
        sample = tmp / "calibration.txt"
        sample.write_text("\n".join(MULTILINGUAL[:12]), encoding="utf-8")
        self.settings = EngineSettings(
            model=str(reference.spec.path),
            device="cpu",
            calibration=str(sample),
            cache_dir=str(tmp / "cache"),
        )
        self.built: Counter[tuple[str, str]] = Counter()
        self.units = ["avx512_bf16"]

    def make(self, name: str, dtype: str) -> Backend:
        self.built[(name, dtype)] += 1
        bf16 = dtype == "bf16"
        delay = self.SLOW if bf16 == self.slow_bf16 else 0.0  # the slow one of the two
        return NoisyBackend(self.reference.backend, dtype, noise=self.noise if bf16 else 0.0, delay_s=delay)

    def load(self) -> Engine:
        e, trial = self.reference, cpu_trial("reference", self.units, "Fake CPU (avx512_bf16)")
        backend, verdict = gated_backend(
            e.spec, e.tokenizer, self.settings, "cpu", self.make, trial, "torch-x"
        )
        return Engine(e.spec, e.tokenizer, backend, self.settings, precision=verdict)


def test_an_accurate_and_faster_bf16_is_served(bge_m3: Engine, tmp_path: Path) -> None:
    loads = CpuLoads(bge_m3, tmp_path)
    info = loads.load().info()
    assert info["dtype"] == "bf16" and info["dtype_requested"] == "auto"
    verdict = info["precision"]
    assert verdict["requested"] == "auto" and verdict["candidate"] == "bf16" and verdict["passed"]
    assert "serving bf16" in verdict["reason"] and "x fp32's speed" in verdict["reason"]
    assert verdict["metrics"]["bf16_s"] < verdict["metrics"]["fp32_s"]
    assert loads.built == Counter({("reference", "fp32"): 1, ("reference", "bf16"): 1})


def test_an_inaccurate_bf16_serves_fp32_and_says_why(bge_m3: Engine, tmp_path: Path) -> None:
    loads = CpuLoads(bge_m3, tmp_path, noise=0.2)
    engine = loads.load()
    info = engine.info()
    assert info["dtype"] == "fp32" and info["precision"]["served"] == "fp32"
    reason = info["precision"]["reason"]
    assert "accuracy gate failed" in reason and "dense_cos_mean" in reason and "serving fp32" in reason
    # the fp32 reference measured against is the one served: built once, not twice
    assert loads.built == Counter({("reference", "fp32"): 1, ("reference", "bf16"): 1})
    assert engine.precision is not None and engine.precision.fell_back
    assert engine.embed(["still serves"])[0].dense is not None


def test_a_slower_bf16_serves_fp32(bge_m3: Engine, tmp_path: Path) -> None:
    verdict = CpuLoads(bge_m3, tmp_path, slow_bf16=True).load().precision
    assert verdict is not None and not verdict.passed and verdict.served == "fp32"
    assert verdict.checks and all(row["pass"] for row in verdict.checks.values())  # accurate, only slow
    assert "passed against fp32, but bf16 ran the sample in" in verdict.reason


def test_a_cpu_without_bf16_units_serves_fp32_without_the_gate(bge_m3: Engine, tmp_path: Path) -> None:
    loads = CpuLoads(bge_m3, tmp_path)
    loads.units = []
    engine = loads.load()
    assert loads.built == Counter({("reference", "fp32"): 1})
    assert engine.backend.batches == 0  # type: ignore[attr-defined]  # nothing measured
    verdict = engine.info()["precision"]
    assert verdict["served"] == "fp32" and verdict["candidate"] is None
    assert "no bf16 units" in verdict["reason"]
    assert not list((tmp_path / "cache").rglob("*.json"))
    metrics = Metrics()
    from m3engine.server.state import ServerState

    ServerState(ServerSettings(), [engine], metrics=metrics)
    assert metrics.registry.get_sample_value("m3engine_precision_fallback", {"model": bge_m3.spec.name}) == 0


def test_the_verdict_is_cached(bge_m3: Engine, tmp_path: Path) -> None:
    loads = CpuLoads(bge_m3, tmp_path, noise=0.2)
    first = loads.load()
    second = loads.load()
    # the cached failure: only the fp32 backend it serves is built, and nothing is measured
    assert loads.built == Counter({("reference", "fp32"): 2, ("reference", "bf16"): 1})
    assert second.backend.batches == 0  # type: ignore[attr-defined]
    assert second.precision is not None and second.precision.cached and second.precision.candidate == "bf16"
    assert first.precision is not None and second.precision.reason == first.precision.reason


def test_auto_on_real_weights_in_info(minilm_dir: Path, tmp_path: Path) -> None:
    """The real path: MiniLM's trained weights, real bf16 and fp32 backends, /info over HTTP."""
    engine = Engine.load(str(minilm_dir), device="cpu", cache_dir=str(tmp_path))
    with LiveServer([engine], ServerSettings()) as live:
        model = httpx.get(live.url + "/info").json()["models"][0]
    assert model["dtype_requested"] == "auto" and model["precision"]["requested"] == "auto"
    if not bf16_units():
        assert model["dtype"] == "fp32" and model["precision"]["candidate"] is None
        return
    verdict = model["precision"]
    assert verdict["candidate"] == "bf16" and verdict["metrics"]["dense_cos_mean"] > 0.999
    assert model["dtype"] == verdict["served"] == ("bf16" if verdict["passed"] else "fp32")
    assert verdict["passed"], verdict["reason"]  # trained weights keep fp32's answers in bf16
    again = Engine.load(str(minilm_dir), device="cpu", cache_dir=str(tmp_path))
    assert again.precision is not None and again.precision.cached and again.backend.info.dtype == "bf16"
