"""int8: the recipe ladder on a tiny checkpoint, and the gate on the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

from pathlib import Path

import onnx

from m3engine.accuracy.sample import calibration_texts, compose, sample_sentences
from m3engine.backends.onnx_artifact import GRAPH, verify
from m3engine.deploy.build import BuildOptions, build
from m3engine.deploy.quantize import RECIPES
from m3engine.deploy.tensorrt import PLAIN_GRAPH
from m3engine.deploy.texts import ValidationTexts
from m3engine.models.spec import inspect_model
from tests.deploy.test_trt_calibration import check_int8_tensorrt_files


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path / GRAPH)).graph.node}


def test_tiny_bge_m3_is_quantized_by_the_first_recipe_that_passes(bge_m3_dir: Path, tmp_path: Path) -> None:
    manifest = build(
        BuildOptions(
            model=str(bge_m3_dir),
            out=tmp_path / "q",
            dtype="int8",
            calibration=calibration_texts(24),
            validation=ValidationTexts.built_in(8, 32),
        )
    )
    tried = manifest.build["int8_tried"]
    assert [t["recipe"] for t in tried] == [r.name for r in RECIPES[: len(tried)]]
    assert all(not t["pass"] for t in tried[:-1])  # stopped at the first that passed
    assert manifest.build["int8_recipe"] == tried[-1]["recipe"]
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & _ops(tmp_path / "q") or "QAttention" in _ops(
        tmp_path / "q"
    )
    assert manifest.validation is not None
    metrics = manifest.validation["metrics"]
    assert metrics["dense_cos_mean"] > 0.99 and metrics["colbert_cos_mean"] > 0.99  # random weights: close
    # TensorRT's int8 files (the validation above loaded the artifact: its hashes held)
    check_int8_tensorrt_files(tmp_path / "q")
    calibration = manifest.build["tensorrt"]["int8_calibration"]
    for name in (calibration["onnxruntime_table"], calibration["trtexec_cache"], PLAIN_GRAPH):
        assert name in manifest.files
    assert calibration["texts"] == 24 + 24 and calibration["run"] is False  # the probe's passages and queries
    verify(tmp_path / "q", inspect_model(tmp_path / "q"))


def test_real_minilm_int8_passes_the_gate(minilm_dir: Path, tmp_path: Path) -> None:
    """Issue 18's gate on trained weights: dense cosine mean >= 0.99, min >= 0.97, top-10 >= 90 %."""
    manifest = build(
        BuildOptions(
            model=str(minilm_dir),
            out=tmp_path / "m",
            dtype="int8",
            calibration=calibration_texts(32),
            validation=ValidationTexts.built_in(24, 96),
        )
    )
    assert manifest.validation is not None and manifest.validation["pass"], manifest.validation
    graph = onnx.load(str(tmp_path / "m" / GRAPH)).graph
    smoothed = [n for n in graph.node if n.op_type == "Mul" and n.name.endswith("/smooth")]
    quantized = 24 - len(manifest.build["int8_fp32_nodes"])  # 6 layers x (Attention + 3 MatMuls)
    assert len(smoothed) == quantized  # every quantized MatMul's input is smoothed, none other
    assert "QAttention" in _ops(tmp_path / "m")
    size = (tmp_path / "m" / GRAPH).stat().st_size
    assert size < 0.75 * 90_000_000  # int8 weights: the fp32 graph is 90 MB


def test_recipes_tried_leave_no_stale_external_data(m3_artifact: Path, tmp_path: Path) -> None:
    """Each recipe rewrites the graph; onnx appends external data, so stale weights must not pile up."""
    from m3engine.accuracy.gate import Gate
    from m3engine.deploy.quantize import choose_int8
    from m3engine.models.spec import inspect_model

    fp32 = m3_artifact / GRAPH
    out = tmp_path / GRAPH
    strict = Gate(dense_cos_min=1.1)  # nothing passes: every recipe is tried, then the best rewritten
    probe = ValidationTexts.calibration(calibration_texts(8))
    notes = choose_int8(fp32, out, inspect_model(m3_artifact), 2, probe, strict, large=True)
    assert len(notes["int8_tried"]) == len(RECIPES) and notes["int8_gate_failed"]
    data = tmp_path / (GRAPH + ".data")
    assert data.is_file() and data.stat().st_size < fp32.stat().st_size  # one int8 copy, not five


def test_the_default_probe_is_issue_18s_retrieval_check_drawn_afresh() -> None:
    probe = ValidationTexts.calibration(None)
    assert probe.queries == sample_sentences() and len(probe.passages) == 2000  # each sentence once
    benchmark = compose(sample_sentences(), 2000, 20, seed=41)  # benchmarks/cpu_paths.py's passages
    assert not set(probe.passages) & set(benchmark)
    mine = ValidationTexts.calibration(["Erste Zeile. Mehr Text.", "Second one. More."])
    assert mine.queries == ["Erste Zeile", "Second one"] and len(mine.passages) == 2


def test_probe_margin_raises_the_bar_for_the_recipe_choice(bge_m3_dir: Path, tmp_path: Path) -> None:
    """A top-10 agreement cannot clear 0.9 + 0.2: every recipe is tried and the build says so."""
    manifest = build(
        BuildOptions(
            model=str(bge_m3_dir),
            out=tmp_path / "q",
            dtype="int8",
            calibration=calibration_texts(16),
            probe_margin=0.2,
            validate=False,
        )
    )
    assert manifest.build["probe_margin"] == 0.2 and manifest.build["int8_gate_failed"]
    assert len(manifest.build["int8_tried"]) == len(RECIPES)
