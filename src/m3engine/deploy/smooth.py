"""Smoothing of activation outliers (SmoothQuant) for int8's dynamic quantization.

Dynamic quantization gives each MatMul's input one uint8 range per batch. A transformer's
LayerNorm and GELU outputs have a few channels 10-20x larger than the rest, so that range is set
by them and the other channels get a handful of levels. Smoothing divides each input channel j by
s_j and multiplies the weight's row j by s_j, which leaves the product unchanged in exact
arithmetic (X W = (X / s) (s W)) and moves the outliers into the weights, quantized per output
channel, where they cost less:

    s_j = max|X_j| ^ alpha / max|W_j| ^ (1 - alpha)

with max|X_j| measured on the calibration texts. The division is a Mul node before the MatMul (the
input also feeds the residual path, so it cannot be folded into the LayerNorm before it). ONNX
Runtime's own SmoothQuant (quantize_static's extra option) needs Intel Neural Compressor and
static quantization; this is the same transformation for the dynamic path, in numpy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SCALE_RANGE = (1e-2, 1e2)  # s_j clipped so that a dead channel or a zero weight row stays finite
PROTOBUF_LIMIT = 1_800_000_000  # bytes of weights from which a graph keeps them in an external file


def load_graph(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=True)


def save_graph(model: Any, path: Path) -> None:
    """Save `model`, its weights beside it in one file when they pass protobuf's 2 GB limit."""
    import onnx

    large = sum(len(t.raw_data) for t in model.graph.initializer) >= PROTOBUF_LIMIT
    path.with_name(path.name + ".data").unlink(missing_ok=True)  # onnx appends to an existing file
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
    )


def weight_inputs(model: Any) -> dict[str, tuple[str, str]]:
    """{node name: (activation input, weight initializer)} of every MatMul with a constant (K, N)
    weight and every fused Attention (its input and its packed (H, 3H) QKV weight)."""
    weights = {t.name for t in model.graph.initializer}
    return {
        n.name: (n.input[0], n.input[1])
        for n in model.graph.node
        if (n.op_type == "MatMul" and n.input[1] in weights) or n.op_type == "Attention"
    }


def activation_ranges(graph: Path, feeds: list[dict[str, np.ndarray]], nodes: list[str]) -> dict[str, Any]:
    """Per input channel, the largest |x| that each of `nodes`' activation inputs takes on `feeds`:
    {input name: (K,) float32}."""
    import onnx
    import onnxruntime as ort

    model = load_graph(graph)
    inputs = sorted({x for name, (x, _) in weight_inputs(model).items() if name in nodes})
    known = {o.name for o in model.graph.output}
    for name in inputs:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(prefix="m3engine-smooth-") as scratch:
        probe = Path(scratch) / "probe.onnx"
        save_graph(model, probe)  # from a file: a graph over 2 GB cannot be passed as bytes
        del model
        session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
        ranges: dict[str, Any] = {}
        for feed in feeds:
            for name, value in zip(inputs, session.run(inputs, feed), strict=True):
                peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)  # (K,)
                ranges[name] = np.maximum(ranges[name], peak) if name in ranges else peak
    return ranges


def scales(act_max: np.ndarray, weight: np.ndarray, alpha: float) -> np.ndarray:
    """(K,) smoothing scales for an input with channel maxima `act_max` and a (K, N) weight."""
    w_max = np.abs(weight).max(axis=1)  # (K,)
    s = np.maximum(act_max, 1e-5) ** alpha / np.maximum(w_max, 1e-5) ** (1 - alpha)
    out: np.ndarray = np.clip(s, *SCALE_RANGE).astype(np.float32)
    return out


def smooth(src: Path, dst: Path, ranges: dict[str, Any], nodes: list[str], alpha: float) -> None:
    """Write `src` with `nodes`' inputs smoothed (scales from `ranges`) to `dst`."""
    import onnx
    from onnx import numpy_helper

    model = load_graph(src)
    weights = {t.name: t for t in model.graph.initializer}
    targets = weight_inputs(model)
    nodes_out = []
    for node in model.graph.node:
        if node.name in nodes and node.name in targets:
            x, w = targets[node.name]
            tensor = weights[w]
            weight = numpy_helper.to_array(tensor)  # (K, N)
            s = scales(ranges[x], weight, alpha)
            tensor.CopyFrom(numpy_helper.from_array((weight * s[:, None]).astype(np.float32), w))
            inverse = numpy_helper.from_array((1.0 / s).astype(np.float32), f"{node.name}/smooth_inverse")
            model.graph.initializer.append(inverse)
            smoothed = f"{node.name}/smoothed_input"
            mul = onnx.helper.make_node("Mul", [x, inverse.name], [smoothed], f"{node.name}/smooth")
            nodes_out.append(mul)
            node.input[0] = smoothed
        nodes_out.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes_out)
    save_graph(model, dst)
