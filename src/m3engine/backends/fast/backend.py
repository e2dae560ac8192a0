"""FastBackend: the packed encoder (+ CUDA graphs on the GPU) and the heads over packed states."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import torch

from m3engine.backends.base import Backend, BackendInfo, BatchLimits
from m3engine.backends.choose import DTYPES, torch_dtype
from m3engine.backends.fast.encoder import LONG_SEQUENCE, classify, encode, per_sequence_faster, uses_varlen
from m3engine.backends.fast.graphs import GraphRunner
from m3engine.backends.fast.inputs import PackedInputs
from m3engine.backends.fast.staging import HostStager, cls_index, cls_rows, eager_rows, unpack
from m3engine.backends.fast.warmup import (
    cls_row_passes,
    eager_row_passes,
    kernel_passes,
    ladder_passes,
    largest_passes,
    placeholder_batch,
)
from m3engine.backends.fast.weights import EncoderWeights, load_encoder
from m3engine.backends.host_ring import HostRing
from m3engine.backends.transfer import HostCopy, PendingOutputs, collect_heads
from m3engine.models.heads import M3Heads, head_tensors
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, TokenIds

# fp8 runs the matrix products in e4m3 and everything else in bf16
COMPUTE_DTYPES = {name: torch_dtype(name) for name in DTYPES} | {"fp8": torch.bfloat16}


class DeviceStates(NamedTuple):
    """The final states of one batch and the device tensors the heads read."""

    # (T, H) compute dtype; with cls_only (R, H): the CLS rows in order, then copies of the first
    # (R = FastBackend._cls_rows(N): staging.cls_rows(N) where graphs run, else N)
    hidden: torch.Tensor
    cu_seqlens: torch.Tensor  # (N + 1,) int64
    lengths: tuple[int, ...]  # (N,) on the host
    cls_only: bool = False

    def cls_states(self, padded_to: int | None = None) -> torch.Tensor:
        """(N, H) the final states of each sequence's CLS row; (padded_to, H) for `padded_to` >= N,
        the rows past N copies of the first (staging.cls_index). A gather or an eager output, never
        a captured graph's static buffer."""
        n = len(self.lengths)
        count = n if padded_to is None else padded_to
        if self.cls_only:
            assert count <= self.hidden.shape[0], (count, self.hidden.shape)
            return self.hidden[:count]
        return self.hidden[cls_index(self.cu_seqlens, n, count)]


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


class FastBackend(Backend):
    """Packed, unpadded batches: a batch costs sum(len) tokens, never n * max_len.

    >>> backend = FastBackend(spec, tokens, device="cuda", dtype="bf16")
    >>> out = backend.forward(PackedBatch.from_encoded(encoded), HeadRequest(dense=True, sparse=True))

    The kernels follow from the device and dtype (`precision` says which ran):
    - CUDA in fp16/bf16 with Triton installed: the fused Triton row kernels (fused.py) and the Triton
      varlen attention kernel (varlen_attention.py; torch's flash varlen_attn for a head size the
      kernel cannot take); without Triton, the plain encoder (encoder.py) with flash attention;
    - the CPU, and fp32 anywhere: the plain encoder, attention one sequence at a time;
    - dtype "fp8" (CUDA with Triton only): the encoder's matrix products in e4m3 (fp8.py).
    Batches up to graphs.MAX_TOKENS tokens replay CUDA graphs on CUDA in half precision; the others
    (larger ones, and any whose graph is not captured yet) run eagerly there, their rows rounded up
    to staging.EAGER_ROW_STEP (the warm-up runs each count past the graphs').

    A batch whose outputs read only each sequence's CLS row (a cross-encoder's scores; CLS-pooled
    dense vectors without sparse or ColBERT), when it runs eagerly, runs its last layer's products
    after attention, and its LayerNorms, on those rows alone (encoder.layer; QKV and attention still
    see every row): 3.1 % of XLM-R large's matrix-product multiply-adds; measured on an H200, 2-3 %
    of the device time of the bench's passages (dense only) and 1.6-3.6 % of its rerank. Batches
    replayed through a captured graph keep every row. Where graphs run, the products over CLS rows
    (those, and a classifier's) run on the sequences rounded up to staging.CLS_ROW_STEP, the extra
    rows copies of the first, so that few row counts reach cuBLAS (the warm-up runs each).
    """

    def __init__(self, spec: ModelSpec, tokens: TokenIds, device: str = "cpu", dtype: str = "fp32") -> None:
        self.spec = spec
        self._device = torch.device(device)
        self._dtype = COMPUTE_DTYPES[dtype]
        self.weights = load_encoder(spec.path, self._device, self._dtype)
        if spec.is_cross_encoder and self.weights.classifier is None:
            raise ValueError(f"{spec.path}: a {spec.kind.value} checkpoint without a classification head")
        self._varlen = uses_varlen(self._device, self._dtype)
        self._fused = self._varlen and _triton_available()
        if dtype == "fp8" and not self._fused:
            raise ValueError("dtype fp8 needs CUDA and Triton (the fused kernels quantise activations)")
        self._triton_attention = self._fused
        if self._triton_attention:  # else the module (which imports triton) stays unloaded
            from m3engine.backends.fast.varlen_attention import supports_head_dim

            self._triton_attention = supports_head_dim(self.weights.config.head_dim)
        self.fp8 = None
        self.precision = f"{dtype} everywhere" + (", fused Triton row kernels" if self._fused else "")
        if self._varlen:
            self.precision += ", Triton varlen attention" if self._triton_attention else ", flash attention"
        if dtype == "fp8":
            from m3engine.backends.fast.fp8 import quantize_layers

            self.fp8 = quantize_layers(self.weights.layers)
            heads = "ColBERT head bf16 (float16 out), dense and sparse heads fp32"
            self.precision = self.fp8.describe(len(self.weights.layers)) + f"; the rest bf16, {heads}"
        self._stager = HostStager(self._device)
        self._special = np.array(sorted(tokens.special_ids), dtype=np.int64)
        # device -> host copies run beside the next batch's kernels (transfer.py)
        self._copy_stream = torch.cuda.Stream(self._device) if self._device.type == "cuda" else None  # type: ignore[no-untyped-call]
        # ... into reused pinned buffers: a fresh pin per launch costs more than the device's batch
        self.ring = HostRing() if self._device.type == "cuda" else None
        self._m3: M3Heads | None = None
        if spec.kind is ModelKind.BGE_M3:  # fp32 weights; M3Heads.colbert casts them for half states
            self._m3 = M3Heads.load(spec.path, spec.hidden_size).to(self._device).eval()
        colbert_dim = self._m3.colbert_dim if self._m3 is not None else None
        self.info = BackendInfo("fast", device, dtype, padded=False, colbert_dim=colbert_dim)
        self.graphs: GraphRunner | None = None
        if self._varlen:  # the CPU loop over sequences cannot be captured
            self.graphs = GraphRunner(self._encode, self._device, spec.max_length)

    @torch.inference_mode()
    def warmup(self, limits: BatchLimits) -> None:
        """Run every kernel variant eagerly, capture the CUDA graphs of every bucket, then run the
        largest batches (warmup.py says what each step prepares): in that order, since a capture
        must not meet a first compile, and it empties the allocator's cache that the largest
        batches fill. On CUDA only: the CPU has nothing to compile, capture or pin."""
        if self._device.type != "cuda":
            return
        from m3engine.backends.fast.fused import warmup_token_counts

        counts = warmup_token_counts(self.weights) if self._fused else []
        for step in kernel_passes(limits, counts):
            self.launch(placeholder_batch(step.lengths), step.heads).result()
        if self.graphs is not None:
            self.graphs.capture_ladder(limits.max_tokens, limits.max_seqs)
            self._choose_row_algorithms(limits, self.graphs.largest)
        for step in ladder_passes(limits, max(counts, default=0) + 1) + largest_passes(limits, LONG_SEQUENCE):
            self.launch(placeholder_batch(step.lengths), step.heads).result()
        self._stager.even_out()
        if self.ring is not None:
            self.ring.even_out()
        torch.cuda.synchronize(self._device)

    def _choose_row_algorithms(self, limits: BatchLimits, graphed: int) -> None:
        """Run each padded row count of the eager batches, and of the products over CLS rows, once
        through one layer (every layer's products have the same shapes), so that cuBLAS makes its
        choice per row count here (warmup.py)."""
        one_layer = dataclasses.replace(self.weights, layers=self.weights.layers[:1])
        for step in eager_row_passes(limits, graphed):
            self._eager_states(placeholder_batch(step.lengths), step.lengths, weights=one_layer)
        if not any(self.reads_cls_only(heads) for heads in limits.heads):
            return
        for step in cls_row_passes(limits):
            states = self._eager_states(placeholder_batch(step.lengths), step.lengths, True, one_layer)
            if self.spec.is_cross_encoder:
                classify(one_layer, states.cls_states(self._cls_rows(len(step.lengths))))

    def reads_cls_only(self, heads: HeadRequest) -> bool:
        """Whether `heads` read only each sequence's CLS row of the final states."""
        if self.spec.is_cross_encoder:
            return True
        return self.spec.pooling == "cls" and not (heads.sparse or heads.colbert)

    def _encode(
        self, inputs: PackedInputs, rows: torch.Tensor | None = None, weights: EncoderWeights | None = None
    ) -> torch.Tensor:
        """(T, H) final states, (R, H) of `rows` alone; `weights`: another layer stack than the model's
        (the warm-up's single layer)."""
        w = self.weights if weights is None else weights
        # Triton's varlen kernel takes long sequences too (encoder.LONG_SEQUENCE says why)
        varlen = self._varlen and (self._triton_attention or not per_sequence_faster(inputs.lengths))
        if varlen and self._triton_attention:  # one block table per batch, read by every layer
            from m3engine.backends.fast.varlen_attention import plan_attention

            inputs = plan_attention(inputs)
        if self._fused:
            from m3engine.backends.fast.fused import encode_fused

            return encode_fused(w, inputs, self.fp8, varlen, rows=rows)
        return encode(w, inputs, varlen, rows)

    def _hidden_states(self, batch: PackedBatch, use_graphs: bool, cls_only: bool = False) -> DeviceStates:
        """The final states of `batch`: through a captured graph when one fits, else eagerly (and
        then, with `cls_only`, of the CLS rows alone: see the class docstring). The caller holds
        torch.inference_mode."""
        t, n = batch.num_tokens, batch.num_seqs
        offset = self.weights.config.position_offset
        lengths = tuple(batch.lengths.tolist())
        max_len = max(lengths, default=0)  # batch.max_len is ~10 us of numpy at batch 1
        key = self.graphs.bucket(t, n, max_len) if (self.graphs is not None and use_graphs) else None
        if key is not None and self.graphs is not None:
            captured = self.graphs.get(key)
            flat = self._stager.stage(batch, offset, key.tokens, key.seqs, out=captured.flat)
            captured.graph.replay()
            return DeviceStates(captured.out[:t], flat[3 * key.tokens : 3 * key.tokens + n + 1], lengths)
        return self._eager_states(batch, lengths, cls_only)

    def _eager_states(
        self,
        batch: PackedBatch,
        lengths: tuple[int, ...],
        cls_only: bool = False,
        weights: EncoderWeights | None = None,
    ) -> DeviceStates:
        """The final states of `batch` run without a graph, its rows rounded up to
        staging.eager_rows where graphs run (the rows past T belong to no sequence); with `cls_only`,
        of `_cls_rows(N)` rows: each sequence's CLS row, then copies of the first."""
        t, n = batch.num_tokens, batch.num_seqs
        padded = eager_rows(t) if self.graphs is not None else t
        flat = self._stager.stage(batch, self.weights.config.position_offset, padded, n)
        cu = flat[3 * padded : 3 * padded + n + 1]  # (N + 1,) int64
        rows = cls_index(cu, n, self._cls_rows(n)) if cls_only else None  # (R,)
        inputs = unpack(flat, padded, n, max(lengths, default=0), lengths)
        hidden = self._encode(inputs, rows, weights)  # (padded, H), or (R, H) with cls_only
        return DeviceStates(hidden if cls_only else hidden[:t], cu, lengths, cls_only)

    def _cls_rows(self, seqs: int) -> int:
        """Rows of the products over one row per sequence: staging.cls_rows where graphs run."""
        return cls_rows(seqs) if self.graphs is not None else seqs

    @torch.inference_mode()
    def launch(self, batch: PackedBatch, heads: HeadRequest) -> PendingOutputs:
        """Queue `batch` on the device and return before it has run (`.result()` waits for it).

        Safe to call again before collecting: every step is queued on one stream in launch order, so
        a later replay of the same graph writes its static buffers only after this batch's heads have
        read them, and what the heads produce (copied on the side stream) is never a graph buffer.
        """
        cls_only = self.reads_cls_only(heads)
        states = self._hidden_states(batch, True, cls_only)  # inference mode entered once, here
        if self.spec.is_cross_encoder or states.cls_only:
            return self._launch_from_cls(states, heads)
        n = len(states.lengths)
        tensors = head_tensors(states.hidden, states.cu_seqlens, n, heads, self.spec.pooling, self._m3)
        return collect_heads(
            tensors,
            batch.input_ids,
            states.lengths,
            self._special,
            self.spec.vocab_size,
            self._copy_stream,
            self.ring,
        )

    def _launch_from_cls(self, states: DeviceStates, heads: HeadRequest) -> PendingOutputs:
        """Outputs read from the CLS rows alone: a cross-encoder's logits, or CLS-pooled dense vectors."""
        n = len(states.lengths)
        if self.spec.is_cross_encoder:
            logits = classify(self.weights, states.cls_states(self._cls_rows(n)))[:n]  # (N, C)
            copy = HostCopy({"logits": logits}, self._copy_stream, self.ring)
            return PendingOutputs(copy, lambda host: BatchOutputs(logits=host["logits"]))
        dense = {"dense": states.cls_states().float()} if heads.dense else {}  # (N, H) fp32
        copy = HostCopy(dense, self._copy_stream, self.ring)
        return PendingOutputs(copy, lambda host: BatchOutputs(dense=host.get("dense")))
