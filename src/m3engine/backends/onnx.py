"""The ONNX Runtime backend: a built artifact (`m3engine build --format onnx`) on CPU, CUDA or TensorRT.

The graph holds the encoder and its heads (deploy/export.py): for BGE-M3 the CLS state (N, H), the
per-token sparse weights relu(sparse_linear(h)) (N, L) and the L2-normalised ColBERT rows (N, L, D);
for sentence embedders the pooled vector (N, H); for cross-encoders the logits (N, labels). Batches
are padded (info.padded: the scheduler budgets max_len * n tokens and sorts by length): the padded
rows are dropped here with the attention mask, which leaves the packed rows every backend's heads
give, and what depends on the data's values runs in the host code they share
(models/head_outputs.py, numpy): the max per token id of the sparse weights, and the ColBERT split
(each text's rows 1..len, CLS dropped, EOS kept).

Nothing on this path imports torch: an install with onnxruntime, tokenizers and numpy loads and
serves an artifact (`pip install 'm3engine[onnx]'`; tests/deploy/test_torch_free.py).

The precision is the artifact's (fp32, fp16 or int8, its manifest.json); `dtype` only has to agree
with it: fp32 (the CPU default) is accepted for any artifact, fp16 / bf16 must be what was built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from m3engine.backends.base import Backend, BackendInfo, BatchLimits, Pending, Ready
from m3engine.backends.onnx_artifact import GRAPH, ArtifactError, Manifest, verify
from m3engine.backends.onnx_session import open_session
from m3engine.errors import UnsupportedTaskError
from m3engine.models.head_outputs import build_outputs
from m3engine.models.spec import ModelSpec
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, TokenIds


def padded_feeds(
    batch: PackedBatch, pad_id: int, inputs: list[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The graph's feeds for `batch`, right-padded: input_ids, attention_mask and, where the graph
    has it, token_type_ids (zeros when the batch has none); and the (N, L) mask."""
    ids, mask, types = batch.padded(pad_id)  # (N, L) each
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in inputs:
        feeds["token_type_ids"] = types if types is not None else np.zeros_like(ids)
    return feeds, mask


class OnnxRunner:
    """One ONNX Runtime session over a graph with m3engine's input and output names."""

    def __init__(
        self, graph: Path, spec: ModelSpec, tokens: TokenIds, device: str, threads: int | None = None
    ) -> None:
        self.spec = spec
        self.session: Any = open_session(graph, device, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = {o.name for o in self.session.get_outputs()}
        # each output's last axis where the graph fixes it (None where it is dynamic)
        self.widths = {
            o.name: o.shape[-1] if o.shape and isinstance(o.shape[-1], int) else None
            for o in self.session.get_outputs()
        }
        self._pad_id = tokens.pad_id
        self._special = np.array(sorted(tokens.special_ids), dtype=np.int64)

    def feeds(self, batch: PackedBatch) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return padded_feeds(batch, self._pad_id, self.inputs)

    def run(self, batch: PackedBatch, heads: HeadRequest) -> BatchOutputs:
        feeds, mask = self.feeds(batch)
        if self.spec.is_cross_encoder:
            (logits,) = self.session.run(["logits"], feeds)  # (N, labels)
            return BatchOutputs(logits=np.asarray(logits, dtype=np.float32))
        if (heads.sparse or heads.colbert) and not {"sparse", "colbert"} <= self.outputs:
            raise UnsupportedTaskError(
                "sparse and ColBERT outputs need a BGE-M3 checkpoint (colbert/sparse heads)"
            )
        names = [
            n
            for n, on in (("dense", heads.dense), ("sparse", heads.sparse), ("colbert", heads.colbert))
            if on
        ]
        if not names:  # ONNX Runtime reads an empty list as "every output"
            return BatchOutputs()
        got = dict(zip(names, self.session.run(names, feeds), strict=True))
        real = mask.astype(bool)  # (N, L): the padded graph's rows -> the packed (T, ...) rows
        packed: dict[str, np.ndarray] = {n: got[n][real] for n in ("sparse", "colbert") if n in got}
        if "dense" in got:
            packed["dense"] = np.asarray(got["dense"], dtype=np.float32)  # (N, H), unnormalised
        lengths = batch.lengths.tolist()
        return build_outputs(packed, batch.input_ids, lengths, self._special, self.spec.vocab_size)


class OnnxBackend(Backend):
    """`--backend onnx --model ARTIFACT_DIR`: a verified artifact run by ONNX Runtime."""

    def __init__(self, spec: ModelSpec, tokens: TokenIds, device: str = "cpu", dtype: str = "fp32") -> None:
        self.spec = spec
        self.manifest: Manifest = verify(spec.path, spec)
        colbert_dim = self.manifest.model.colbert_dim
        built = self.manifest.dtype
        if dtype != "fp32" and dtype != built:
            raise ArtifactError(
                f"{spec.path} was built for {built}, not {dtype}; rebuild with "
                f"`m3engine build SOURCE --format onnx --dtype {dtype}` or leave --dtype out"
            )
        self.info = BackendInfo("onnx", device, built, padded=True, colbert_dim=colbert_dim)
        self._runner = OnnxRunner(spec.path / GRAPH, spec, tokens, device)
        missing = set(self.manifest.outputs) - self._runner.outputs
        if missing:
            raise ArtifactError(f"{spec.path / GRAPH} lacks the outputs {sorted(missing)} its manifest lists")
        width = self._runner.widths.get("colbert")
        if width is not None and width != colbert_dim:
            raise ArtifactError(
                f"{spec.path / GRAPH}: its ColBERT rows are {width} wide, its manifest says {colbert_dim}; "
                "rebuild the artifact"
            )

    def launch(self, batch: PackedBatch, heads: HeadRequest) -> Pending:
        # ONNX Runtime's run() returns when the batch is done: there is nothing to overlap with
        return Ready(self._runner.run(batch, heads))

    def warmup(self, limits: BatchLimits) -> None:
        """One short batch, so that ONNX Runtime's first-run allocations happen before serving."""
        ids = np.array([5] * 4, dtype=np.int64)  # any ordinary ids: only the shapes matter
        batch = PackedBatch(input_ids=ids, cu_seqlens=np.array([0, 4], dtype=np.int64))
        heads = HeadRequest(dense=not self.spec.is_cross_encoder, logits=self.spec.is_cross_encoder)
        self.forward(batch, heads)
