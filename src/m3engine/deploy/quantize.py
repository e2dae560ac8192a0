"""int8 for CPUs: which MatMuls to quantize, chosen by measuring each recipe against the gate.

Dynamic quantization: int8 weights per output channel, each batch's own uint8 range per input
tensor. Its error comes from the inputs' outlier channels (LayerNorm and GELU outputs, a few
channels 10-20x the median), which set the range for all. Measured on all-MiniLM-L6-v2 (real
weights; 2,000 passages of 256 tokens and 100 one-sentence queries, the top-10 check of
benchmarks/cpu_paths.py; against fp32; the 2-core AVX-512 VNNI machine, 2026-12-06):

    dynamic per-channel, every MatMul                       dense cos 0.988 (320 passages)
    one MatMul group at a time (1 - cos, 256 passages):  FFN-output of layers 0-2 0.0014-0.0029,
        FFN-input 0.0005 each, QKV 0.0002-0.0005, attention output < 0.00005
    smoothed (smooth.py), every MatMul, alpha 0.5 / 0.6 / 0.7 / 0.8 / 0.9:
        1 - cos 0.028 / 0.0082 / 0.0054 / 0.0092 / 0.0073 (unsmoothed 0.0116; 320 passages)
    smoothed, alpha per MatMul by simulated local error     0.993 / 0.959   top-10 0.889
    smoothed (0.7), every MatMul                            0.9946 / 0.9856 top-10 0.888
    smoothed, layer 0's FFN-output MatMul in fp32           0.9970 / 0.9934 top-10 0.925
    smoothed, FFN-output MatMuls of layers 0-2 in fp32      0.9984 / 0.9970 top-10 0.940
    smoothed, FFN-output MatMuls and layer 0 in fp32        0.9992 / 0.9983 top-10 0.949
    (unsmoothed: top-10 0.861 with layers 0-2's FFN-output in fp32, 0.893 with every
    FFN-output and layer 0)

SmoothQuant's usual alpha 0.5 makes the FFN-output MatMuls (GELU input) worse than no smoothing
(their simulated error grows 3-25x); alpha 0.7 did best end to end, and per-MatMul alphas chosen
by the simulated error (0.7-0.9) did no better and had a worse minimum. Static QDQ quantization
(per-channel weights) gave dense cosine 0.89-0.90 unsmoothed (MinMax or Percentile calibration);
smoothed (0.7, MinMax, the MatMuls but not the fused attention) 0.9973 / 0.9921 on 320 passages,
against 0.9946 for dynamic with attention quantized too: not measured further (speed, top-10).
The range of dynamic quantization is the batch's, so the probe batches as the engine does
(calibration_batches). So the recipes below are smoothed dynamic ones, from fastest to most conservative,
each measured against the fp32 graph on the probe texts (deploy/texts.py: by default issue 18's
retrieval check, drawn afresh), and the first that passes the gate is kept.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3engine.accuracy.gate import Gate, ranking_metrics, retrieval_agreement
from m3engine.accuracy.outputs import embedding_accuracy
from m3engine.backends.onnx import OnnxRunner
from m3engine.deploy.smooth import activation_ranges, smooth
from m3engine.deploy.texts import ValidationTexts
from m3engine.models.spec import ModelSpec
from m3engine.results import Embedding
from m3engine.tokenization.tokenizer import TextTokenizer
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, TokenIds

FFN_OUT = re.compile(r"/layer\.(\d+)/output/dense/MatMul$")  # the MatMul fed by GELU, per layer


@dataclass(frozen=True)
class Recipe:
    name: str
    keep_fp32: Callable[[list[str], int], list[str]]  # (node names, layers) -> nodes left in fp32
    smooth_alpha: float | None = None  # SmoothQuant's migration strength (smooth.py); None: no smoothing


def _ffn_out(names: list[str], below: int) -> list[str]:
    return [n for n in names if (m := FFN_OUT.search(n)) and int(m.group(1)) < below]


def _first(names: list[str]) -> list[str]:
    """The first layer's MatMuls and its fused attention (the optimizer numbers Attention nodes in graph
    order, so Attention_0 is layer 0's)."""
    return [n for n in names if "/layer.0/" in n and not FFN_OUT.search(n)] + [
        n for n in names if n == "Attention_0"
    ]


ALPHA = 0.7
RANGE_TEXTS = 256  # calibration texts whose activations set the smoothing scales
RECIPES = [
    Recipe("smoothed (alpha 0.7), every MatMul", lambda names, layers: [], ALPHA),
    Recipe("smoothed, the first layer's FFN-output MatMul in fp32", lambda n, layers: _ffn_out(n, 1), ALPHA),
    Recipe(
        "smoothed, FFN-output MatMuls of the first half of layers in fp32",
        lambda n, layers: _ffn_out(n, layers // 2),
        ALPHA,
    ),
    Recipe(
        "smoothed, FFN-output MatMuls and the first layer in fp32",
        lambda n, layers: _ffn_out(n, layers) + _first(n),
        ALPHA,
    ),
]


def quantizable(graph: Path) -> list[str]:
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Attention")]


def quantize(src: Path, dst: Path, keep_fp32: list[str], large: bool) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnx appends external data to an existing file: a second recipe written to the same path would
    # leave the first one's weights in it (a 2.2 GB model's int8 data grew to 7.9 GB over 4 recipes)
    for stale in (dst, dst.with_name(dst.name + ".data")):
        stale.unlink(missing_ok=True)

    quantize_dynamic(
        str(src),
        str(dst),
        op_types_to_quantize=["MatMul", "Attention"],
        per_channel=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=keep_fp32,
        use_external_data_format=large,
        # the fused ops (SkipLayerNormalization, BiasGelu) have no ONNX shape inference: their outputs
        # are float; only MatMuls with a constant weight (not attention's activation products)
        extra_options={"DefaultTensorType": TensorProto.FLOAT, "MatMulConstBOnly": True},
    )


def probe_outputs(runner: OnnxRunner, batches: list[PackedBatch]) -> list[BatchOutputs]:
    """Every output the model has (dense, sparse, ColBERT; or logits) for the calibration batches."""
    m3 = {"sparse", "colbert"} <= runner.outputs
    cross = runner.spec.is_cross_encoder
    heads = HeadRequest(dense=not cross, sparse=m3, colbert=m3, logits=cross)
    return [runner.run(batch, heads) for batch in batches]


def _records(outputs: list[BatchOutputs]) -> list[Embedding]:
    """Batch outputs as per-text records, the form accuracy/outputs.py compares."""
    records: list[Embedding] = []
    for out in outputs:
        assert out.dense is not None
        for i, row in enumerate(out.dense):
            sparse = out.sparse[i] if out.sparse is not None else None
            colbert = out.colbert[i] if out.colbert is not None else None
            records.append(
                Embedding(
                    index=len(records),
                    num_tokens=0,
                    truncated=False,
                    dense=row,
                    sparse=sparse,
                    colbert=colbert,
                )
            )
    return records


def calibration_batches(
    spec: ModelSpec, texts: list[str], max_size: int | None = None
) -> tuple[TokenIds, list[PackedBatch]]:
    """`texts` tokenized and batched as the engine batches them by default on a CPU (its token
    budget and size limit, padded, longest first), or `max_size` texts a batch. Dynamic quantization takes
    each batch's range, so a larger batch gets a wider one: the probe must see the served batches
    (on all-MiniLM-L6-v2, 32-text batches gave top-10 0.911 where the engine's gave 0.895)."""
    from m3engine.backends.choose import default_batch_tokens
    from m3engine.scheduling.batching import plan_batches
    from m3engine.settings import EngineSettings

    tokenizer = TextTokenizer.load(spec.path)
    encoded = tokenizer.encode(texts, min(spec.default_max_length, 512))
    tokens = TokenIds(pad_id=tokenizer.pad_id, special_ids=tokenizer.special_ids)
    defaults = EngineSettings()
    budget = default_batch_tokens("cpu") if max_size is None else 1 << 62
    plan = plan_batches([len(e) for e in encoded], budget, max_size or defaults.max_batch_size, padded=True)
    return tokens, [PackedBatch.from_encoded([encoded[i] for i in batch]) for batch in plan]


def choose_int8(
    fp32_graph: Path,
    out: Path,
    spec: ModelSpec,
    layers: int,
    probe: ValidationTexts,
    gate: Gate,
    large: bool,
) -> dict[str, Any]:
    """Quantize `fp32_graph` into `out` with the fastest recipe that passes `gate` on `probe`'s texts
    (its passages are also the calibration texts that smoothing measures activations on)."""
    tokens, passages = calibration_batches(spec, probe.passages)
    queries = calibration_batches(spec, probe.queries)[1] if not spec.is_cross_encoder else []
    fp32 = OnnxRunner(fp32_graph, spec, tokens, "cpu")
    reference = probe_outputs(fp32, passages), probe_outputs(fp32, queries)
    names = quantizable(fp32_graph)
    ranges: dict[str, Any] | None = None
    tried: list[dict[str, Any]] = []
    best: tuple[float, Recipe] | None = None
    with tempfile.TemporaryDirectory(prefix="m3engine-int8-") as scratch:
        smoothed = Path(scratch) / "smoothed.onnx"

        def write(recipe: Recipe) -> list[str]:
            nonlocal ranges
            keep = recipe.keep_fp32(names, layers)
            source = fp32_graph
            if recipe.smooth_alpha is not None:
                if ranges is None:  # small batches: every MatMul input of a batch is held at once
                    texts = probe.passages[:RANGE_TEXTS]
                    feeds = [fp32.feeds(b)[0] for b in calibration_batches(spec, texts, 4)[1]]
                    ranges = activation_ranges(fp32_graph, feeds, names)
                quantized = [n for n in names if n not in keep]  # a node kept in fp32 gains nothing
                smooth(fp32_graph, smoothed, ranges, quantized, recipe.smooth_alpha)
                source = smoothed
            quantize(source, out, keep, large)
            return keep

        for recipe in RECIPES:
            keep = write(recipe)
            ours = OnnxRunner(out, spec, tokens, "cpu")
            candidate = probe_outputs(ours, passages), probe_outputs(ours, queries)
            metrics = _probe_metrics(candidate, reference, spec.is_cross_encoder)
            verdict = gate.check(metrics)  # the thresholds of what the probe measures
            tried.append({"recipe": recipe.name, "fp32_nodes": len(keep), **metrics, "pass": verdict["pass"]})
            if verdict["pass"]:
                return {"int8_recipe": recipe.name, "int8_fp32_nodes": keep, "int8_tried": tried}
            score = sum(check["value"] for check in verdict["checks"].values())
            if best is None or score > best[0]:
                best = (score, recipe)
        assert best is not None
        keep = write(best[1])  # the most accurate one
    chosen = {"int8_recipe": best[1].name, "int8_fp32_nodes": keep, "int8_tried": tried}
    return chosen | {"int8_gate_failed": True}


def _probe_metrics(
    ours: tuple[list[BatchOutputs], list[BatchOutputs]],
    ref: tuple[list[BatchOutputs], list[BatchOutputs]],
    cross_encoder: bool,
) -> dict[str, float]:
    """The gate's metrics that one pass over the probe's (passages, queries) gives.

    Embedders: dense cosine on the passages, and each query's 10 nearest passages (retrieval
    agreement); BGE-M3 also sparse top-10 overlap and ColBERT cosine. Cross-encoders: the first
    logit of every passage as one ranking (Spearman, top-10).
    """
    if cross_encoder:
        mine = np.concatenate([o.logits[:, 0] for o in ours[0] if o.logits is not None])
        theirs = np.concatenate([o.logits[:, 0] for o in ref[0] if o.logits is not None])
        return ranking_metrics([mine], [theirs])
    metrics: dict[str, float] = embedding_accuracy(_records(ours[0]), _records(ref[0]))

    def queries_passages(side: tuple[list[BatchOutputs], list[BatchOutputs]]) -> tuple[Any, Any]:
        passages, queries = (np.concatenate([o.dense for o in part if o.dense is not None]) for part in side)
        return queries, passages  # (Q, H), (P, H)

    return metrics | retrieval_agreement(queries_passages(ours), queries_passages(ref))
