"""FastBackend: the packed encoder (+ CUDA graphs on the GPU) and the heads over packed states."""

from __future__ import annotations

import torch

from m3engine.backends.base import BackendInfo
from m3engine.backends.fast.encoder import PackedInputs, classify, encode, to_device, uses_varlen
from m3engine.backends.fast.graphs import GraphRunner
from m3engine.backends.fast.outputs import head_outputs
from m3engine.backends.fast.weights import load_encoder
from m3engine.device import DTYPES
from m3engine.models.heads import M3Heads
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, TokenIds


class FastBackend:
    """Packed, unpadded batches: a batch costs sum(len) tokens, never n * max_len.

    >>> backend = FastBackend(spec, tokens, device="cuda", dtype="bf16")
    >>> out = backend.forward(PackedBatch.from_encoded(encoded), HeadRequest(dense=True, sparse=True))

    `graph_max_tokens` bounds the batches replayed through CUDA graphs (0 turns graphs off);
    larger batches run eagerly, where each kernel outlasts its launch anyway.
    """

    def __init__(
        self,
        spec: ModelSpec,
        tokens: TokenIds,
        device: str = "cpu",
        dtype: str = "fp32",
        graph_max_tokens: int = 4096,
    ) -> None:
        self.spec = spec
        self.info = BackendInfo(name="fast", device=device, dtype=dtype, padded=False)
        self._device = torch.device(device)
        self._dtype = DTYPES[dtype]
        self.weights = load_encoder(spec.path, self._device, self._dtype)
        if spec.is_cross_encoder and self.weights.classifier is None:
            raise ValueError(f"{spec.path}: a {spec.kind.value} checkpoint without a classification head")
        self._varlen = uses_varlen(self._device, self._dtype)
        self._special = torch.tensor(sorted(tokens.special_ids), dtype=torch.long, device=self._device)
        self._m3: M3Heads | None = None
        if spec.kind is ModelKind.BGE_M3:  # heads stay fp32: compute_outputs upcasts the states
            self._m3 = M3Heads.load(spec.path, spec.hidden_size).to(self._device).eval()
        self.graphs: GraphRunner | None = None
        if self._varlen and graph_max_tokens > 0:  # the CPU loop over sequences cannot be captured
            self.graphs = GraphRunner(self._encode, self._device, max_tokens=graph_max_tokens)

    def colbert_dim(self) -> int | None:
        return self._m3.colbert_dim if self._m3 is not None else None

    def _encode(self, inputs: PackedInputs) -> torch.Tensor:
        return encode(self.weights, inputs, self._varlen)

    @torch.inference_mode()
    def hidden_states(self, batch: PackedBatch, use_graphs: bool = True) -> tuple[torch.Tensor, PackedInputs]:
        """(T, H) final states of `batch` and its device inputs."""
        inputs = to_device(batch, self.weights.config.position_offset, self._device)
        hidden = self.graphs.run(inputs) if (self.graphs is not None and use_graphs) else None
        if hidden is None:
            hidden = self._encode(inputs)
        return hidden, inputs

    @torch.inference_mode()
    def forward(self, batch: PackedBatch, heads: HeadRequest) -> BatchOutputs:
        hidden, inputs = self.hidden_states(batch)
        cu = inputs.cu_seqlens.long()  # (N + 1,)
        if self.spec.is_cross_encoder:
            return BatchOutputs(logits=classify(self.weights, hidden, cu[:-1]).cpu().numpy())
        return head_outputs(
            hidden,
            inputs.input_ids,
            cu,
            inputs.lengths,
            heads,
            self.spec.pooling,
            self._m3,
            self._special,
            self.spec.vocab_size,
        )
