"""The correctness oracle: transformers' own model classes on padded batches (CPU or CUDA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from m3engine.backends.base import BackendInfo
from m3engine.backends.choose import DTYPES
from m3engine.models.heads import M3Heads, launch_heads
from m3engine.models.kinds import ModelKind
from m3engine.models.spec import ModelSpec
from m3engine.types import BatchOutputs, HeadRequest, PackedBatch, TokenIds


class ReferenceBackend:
    """AutoModel / AutoModelForSequenceClassification, SDPA attention, heads over the unpadded states."""

    def __init__(self, spec: ModelSpec, tokens: TokenIds, device: str = "cpu", dtype: str = "fp32") -> None:
        from transformers import AutoModel, AutoModelForSequenceClassification

        self.spec = spec
        self.info = BackendInfo(name="reference", device=device, dtype=dtype, padded=True)
        self._pad_id = tokens.pad_id
        self._device = torch.device(device)
        self._special = np.array(sorted(tokens.special_ids), dtype=np.int64)
        auto = AutoModelForSequenceClassification if spec.is_cross_encoder else AutoModel
        model: Any = auto.from_pretrained(str(spec.path))
        self._model = model.to(device=self._device, dtype=DTYPES[dtype]).eval()
        self._m3: M3Heads | None = None
        if spec.kind is ModelKind.BGE_M3:
            self._m3 = M3Heads.load(spec.path, spec.hidden_size).to(self._device).eval()

    def colbert_dim(self) -> int | None:
        return self._m3.colbert_dim if self._m3 is not None else None

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self._device)

    @torch.inference_mode()
    def forward(self, batch: PackedBatch, heads: HeadRequest) -> BatchOutputs:
        ids, mask, types = batch.padded(self._pad_id)  # (N, L) each
        inputs = {"input_ids": self._tensor(ids), "attention_mask": self._tensor(mask)}
        if types is not None:
            inputs["token_type_ids"] = self._tensor(types)
        if self.spec.is_cross_encoder:
            logits = self._model(**inputs).logits  # (N, num_labels)
            return BatchOutputs(logits=logits.float().cpu().numpy())
        hidden = self._model(**inputs).last_hidden_state  # (N, L, H)
        packed = hidden[inputs["attention_mask"].bool()]  # (T, H), row-major = packing order
        return launch_heads(
            packed,
            batch.input_ids,
            self._tensor(batch.cu_seqlens),
            tuple(int(n) for n in batch.lengths),
            heads,
            self.spec.pooling,
            self._m3,
            self._special,
            self.spec.vocab_size,
        ).result()
