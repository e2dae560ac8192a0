"""torch -> ONNX: the encoder with its heads in one graph, dynamic batch and sequence axes.

The graph's outputs are what the engine reads (backends/onnx.py), by name:
- BGE-M3: `dense` (N, H) the CLS state, unnormalised; `sparse` (N, L) relu(sparse_linear(h));
  `colbert` (N, L, D) colbert_linear(h) L2-normalised (every row, CLS and padding included: the host
  drops them, so the graph has no data-dependent shape);
- sentence embedders: `dense` (N, H), CLS or the masked mean as the checkpoint's Pooling says;
- rerankers and classifiers: `logits` (N, labels).
Inputs: `input_ids`, `attention_mask` (N, L) int64, and `token_type_ids` for models whose config has
more than one segment (BERT).

The exporter is torch's TorchScript one (`dynamo=False`) over transformers' eager attention: its
graph has the MatMul / Softmax / Add-mask pattern that ONNX Runtime's transformer optimizer fuses into
its Attention op. The SDPA export and the dynamo exporter fused none of the attention layers
(measured on all-MiniLM-L6-v2: 0 of 6 Attention fusions, against 6 of 6 here). Over 2 GB of weights
(BGE-M3 in fp32: 2.2 GB) the exporter writes them as external data beside the graph (protobuf's
2 GB limit); the optimizer (optimize.py) reads them and writes one data file into the artifact, so
export into a scratch directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from m3engine.models.heads import M3Heads
from m3engine.models.kinds import COLBERT_FILE, ModelKind
from m3engine.models.spec import ModelSpec

OPSET = 17  # LayerNormalization is a single op from 17; ONNX Runtime's fusions expect it


class M3Graph(nn.Module):
    def __init__(self, encoder: nn.Module, heads: M3Heads) -> None:
        super().__init__()
        self.encoder, self.heads = encoder, heads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # (N, L, H)
        dense = hidden[:, 0]  # (N, H)
        sparse = torch.relu(self.heads.sparse_linear(hidden)).squeeze(-1)  # (N, L)
        colbert = F.normalize(self.heads.colbert_linear(hidden), dim=-1)  # (N, L, D)
        return dense, sparse, colbert


class PooledGraph(nn.Module):
    def __init__(self, encoder: nn.Module, pooling: str, segments: bool) -> None:
        super().__init__()
        self.encoder, self.pooling, self.segments = encoder, pooling, segments

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *types: torch.Tensor
    ) -> torch.Tensor:
        extra = {"token_type_ids": types[0]} if types else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if self.pooling == "cls":
            cls: torch.Tensor = hidden[:, 0]  # (N, H)
            return cls
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        mean: torch.Tensor = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (N, H), as mean_pool
        return mean


class LogitsGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *types: torch.Tensor
    ) -> torch.Tensor:
        extra = {"token_type_ids": types[0]} if types else {}
        logits: torch.Tensor = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        return logits  # (N, labels)


def colbert_dim(spec: ModelSpec) -> int | None:
    """The ColBERT head's output size from colbert_linear.pt (None if not BGE-M3).

    Read here, at build time, into the manifest: a load then reads no torch file.
    """
    if spec.kind is not ModelKind.BGE_M3:
        return None
    state = torch.load(spec.path / COLBERT_FILE, map_location="cpu", weights_only=True)
    return int(state["weight"].shape[0])


def uses_segments(spec: ModelSpec) -> bool:
    from m3engine.models.kinds import read_json

    return int(read_json(spec.path / "config.json").get("type_vocab_size", 1)) > 1


def graph_module(spec: ModelSpec) -> tuple[nn.Module, list[str], list[str]]:
    """(module, input names, output names) for the checkpoint at spec.path, in fp32, eager attention."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    auto: Any = AutoModelForSequenceClassification if spec.is_cross_encoder else AutoModel
    model = auto.from_pretrained(str(spec.path), attn_implementation="eager", dtype=torch.float32).eval()
    segments = uses_segments(spec) and spec.kind is not ModelKind.BGE_M3
    inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if segments else [])]
    if spec.kind is ModelKind.BGE_M3:
        return (
            M3Graph(model, M3Heads.load(spec.path, spec.hidden_size).eval()),
            inputs[:2],
            [
                "dense",
                "sparse",
                "colbert",
            ],
        )
    if spec.is_cross_encoder:
        return LogitsGraph(model), inputs, ["logits"]
    return PooledGraph(model, spec.pooling, segments), inputs, ["dense"]


def sample_inputs(names: list[str], first_id: int = 5) -> tuple[torch.Tensor, ...]:
    """A (2, 8) batch with a padded row, so that the masking is traced as it is used."""
    ids = torch.arange(first_id, first_id + 16, dtype=torch.int64).reshape(2, 8)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    return (ids, mask, torch.zeros_like(ids))[: len(names)]


def export(spec: ModelSpec, out: Path) -> tuple[list[str], list[str]]:
    """Write spec's graph to `out` (an .onnx file in a scratch directory; weights beside it over 2 GB)."""
    module, inputs, outputs = graph_module(spec)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in inputs}
    for name in outputs:
        axes[name] = {0: "batch"} if name in ("dense", "logits") else {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        # Both warnings are about traced values that are constant for an encoder: transformers' mask
        # code compares the key length with the mask's (always equal here: no cache, no offset), and
        # the CLS row is taken with index 0 (the exporter warns about negative indices in general).
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            module,
            sample_inputs(inputs),
            str(out),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return inputs, outputs
