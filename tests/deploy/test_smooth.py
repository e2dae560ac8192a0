"""Smoothing (SmoothQuant for dynamic int8): exact in fp32, and it narrows the ranges int8 sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from m3engine.accuracy.sample import calibration_texts
from m3engine.backends.onnx import OnnxRunner
from m3engine.backends.onnx_artifact import GRAPH
from m3engine.deploy.quantize import calibration_batches, quantizable
from m3engine.deploy.smooth import activation_ranges, smooth, weight_inputs
from m3engine.models.spec import inspect_model
from m3engine.types import HeadRequest


def test_smoothed_graph_gives_the_same_outputs_and_flatter_activations(
    m3_artifact: Path, tmp_path: Path
) -> None:
    spec = inspect_model(m3_artifact)
    tokens, batches = calibration_batches(spec, calibration_texts(8), max_size=4)
    fp32 = OnnxRunner(m3_artifact / GRAPH, spec, tokens, "cpu")
    feeds = [fp32.feeds(b)[0] for b in batches]
    names = quantizable(m3_artifact / GRAPH)
    ranges = activation_ranges(m3_artifact / GRAPH, feeds, names)
    targets = weight_inputs(onnx.load(str(m3_artifact / GRAPH)))
    assert set(targets) == set(names) and {x for x, _ in targets.values()} == set(ranges)

    out = tmp_path / "smoothed.onnx"
    smooth(m3_artifact / GRAPH, out, ranges, names, alpha=0.7)
    model = onnx.load(str(out))
    assert sum(n.name.endswith("/smooth") for n in model.graph.node) == len(names)  # one Mul per input

    heads = HeadRequest(dense=True, sparse=True, colbert=True)
    ours = OnnxRunner(out, spec, tokens, "cpu")
    for batch in batches:  # X W == (X / s)(s W): only float rounding differs
        a, b = fp32.run(batch, heads), ours.run(batch, heads)
        assert a.dense is not None and b.dense is not None
        np.testing.assert_allclose(b.dense, a.dense, rtol=1e-4, atol=1e-5)

    # what int8 quantizes is the smoothed input: its channels' peaks are closer to each other
    smoothed = activation_ranges(out, feeds, names)
    for name, (x, _) in targets.items():
        before, after = ranges[x], smoothed[f"{name}/smoothed_input"]
        assert after.max() / np.median(after) < before.max() / np.median(before), name
