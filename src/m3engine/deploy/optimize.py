"""ONNX Runtime's transformer optimizer, and the fp16 conversion for GPUs.

The optimizer fuses what ONNX Runtime's generic passes do not: the whole attention block (QKV
MatMuls, mask, Softmax) into one Attention op, the residual Add + LayerNorm into SkipLayerNormalization,
the embeddings' sum + LayerNorm into EmbedLayerNormalization, the bias + GELU into BiasGelu. It runs
once here and the result is saved, so a load does not redo it. `opt_level=0`: only these Python
fusions; ONNX Runtime's own graph passes run at each load (backends/onnx_session.py) and are quick.

fp16 (GPUs only; ONNX Runtime's CPU provider lacks fp16 kernels for most of these ops): every
MatMul and the fused attention in half precision, but LayerNorm (and its fused forms), Softmax and
the final L2 normalisation and its reductions stay in fp32 (their sums of squares overflow fp16's
65,504: the LayerNorm overflow users of BERT and RoBERTa in TensorRT report), with casts inserted
around them. Inputs and outputs keep their types (int64 in, float32 out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m3engine.models.kinds import read_json
from m3engine.models.spec import ModelSpec

# ops kept in fp32 in an fp16 graph, on top of onnxruntime's default list
FP32_OPS = [
    "LayerNormalization",
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "SimplifiedLayerNormalization",
    "Softmax",
    "ReduceL2",
    "ReduceSum",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Div",
    "Clip",
    "Max",
]


def save(model: Any, out: Path, large: bool) -> None:
    """Write an onnxruntime OnnxModel; `large`: weights to one file beside it (protobuf's 2 GB limit)."""
    model.save_model_to_file(str(out), use_external_data_format=large, all_tensors_to_one_file=True)


def optimize(src: Path, spec: ModelSpec) -> tuple[Any, dict[str, Any]]:
    """The fused model (an onnxruntime OnnxModel) and the fusion counts, for the manifest."""
    from onnxruntime.transformers import optimizer

    config = read_json(spec.path / "config.json")
    model = optimizer.optimize_model(
        str(src),
        model_type="bert",  # BERT and XLM-R share the encoder layer that the fusions match
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
        opt_level=0,
    )
    fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    return model, {"optimizer": "onnxruntime.transformers bert", "fused": fused}


def to_fp16(model: Any) -> dict[str, Any]:
    """Convert an optimized OnnxModel to fp16 in place, keeping FP32_OPS and the I/O in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    model.convert_float_to_float16(keep_io_types=True, op_block_list=block)
    return {"fp16_kept_fp32_ops": block}
