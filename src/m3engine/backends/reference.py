"""The correctness oracle: transformers' own model classes on padded batches (CPU or CUDA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from m3engine.backends.base import Backend, BackendInfo, Pending, Ready
from m3engine.backends.choose import torch_dtype
from m3engine.backends.transfer import collect_heads
from m3engine.models.heads import M3Heads, head_tensors
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, TokenIds


class ReferenceBackend(Backend):
    """AutoModel / AutoModelForSequenceClassification, SDPA attention, heads over the unpadded states."""

    def __init__(self, spec: ModelSpec, tokens: TokenIds, device: str = "cpu", dtype: str = "fp32") -> None:
        from transformers import AutoModel, AutoModelForSequenceClassification

        self.spec = spec
        self._pad_id = tokens.pad_id
        self._device = torch.device(device)
        self._special = np.array(sorted(tokens.special_ids), dtype=np.int64)
        auto = AutoModelForSequenceClassification if spec.is_cross_encoder else AutoModel
        model: Any = auto.from_pretrained(str(spec.path))
        self._model = model.to(device=self._device, dtype=torch_dtype(dtype)).eval()
        self._m3: M3Heads | None = None
        if spec.kind is ModelKind.BGE_M3:
            self._m3 = M3Heads.load(spec.path, spec.hidden_size).to(self._device).eval()
        colbert_dim = self._m3.colbert_dim if self._m3 is not None else None
        self.info = BackendInfo("reference", device, dtype, padded=True, colbert_dim=colbert_dim)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self._device)

    @torch.inference_mode()
    def launch(self, batch: PackedBatch, heads: HeadRequest) -> Pending:
        """Runs the batch at once (transformers' forward is synchronous on the CPU)."""
        ids, mask, types = batch.padded(self._pad_id)  # (N, L) each
        inputs = {"input_ids": self._tensor(ids), "attention_mask": self._tensor(mask)}
        if types is not None:
            inputs["token_type_ids"] = self._tensor(types)
        if self.spec.is_cross_encoder:
            logits = self._model(**inputs).logits  # (N, num_labels)
            return Ready(BatchOutputs(logits=logits.float().cpu().numpy()))
        hidden = self._model(**inputs).last_hidden_state  # (N, L, H)
        packed = hidden[inputs["attention_mask"].bool()]  # (T, H), row-major = packing order
        lengths = tuple(int(n) for n in batch.lengths)
        cu = self._tensor(batch.cu_seqlens)
        tensors = head_tensors(packed, cu, len(lengths), heads, self.spec.pooling, self._m3)
        pending = collect_heads(tensors, batch.input_ids, lengths, self._special, self.spec.vocab_size)
        return Ready(pending.result())
