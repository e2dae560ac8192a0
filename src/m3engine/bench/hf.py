"""The baseline every speed is divided by: plain transformers, fp16, SDPA, length-sorted batches.

This is what a user writes without an inference engine: AutoModel / AutoModelForSequenceClassification,
the fast tokenizer with padding per batch, texts sorted by length so a batch pads little, CLS vectors
(or logits) copied to the host per batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class HFBaseline:
    def __init__(self, path: Path, cross_encoder: bool, device: str = "cuda", batch_size: int = 32) -> None:
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        auto = AutoModelForSequenceClassification if cross_encoder else AutoModel
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        dtype = torch.float16 if device.startswith("cuda") else torch.float32  # fp16 is the GPU baseline
        model = auto.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.cross_encoder = cross_encoder

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    @torch.inference_mode()
    def embed(self, texts: list[str], max_length: int) -> np.ndarray:
        """(N, H) CLS vectors, L2-normalised, in input order."""
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for idx in self._batches([len(t) for t in texts]):
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            cls = self.model(**enc).last_hidden_state[:, 0].float()
            out[idx] = torch.nn.functional.normalize(cls, dim=-1).cpu().numpy()
        return out

    @torch.inference_mode()
    def score(self, query: str, passages: list[str], max_length: int) -> np.ndarray:
        """(N,) logits of (query, passage) pairs."""
        out = np.zeros(len(passages), dtype=np.float32)
        for idx in self._batches([len(p) for p in passages]):
            enc = self.tokenizer(
                [query] * len(idx),
                [passages[i] for i in idx],
                padding=True,
                truncation="only_second",
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            out[idx] = self.model(**enc).logits[:, 0].float().cpu().numpy()
        return out

    @torch.inference_mode()
    def forward_ids(self, ids: torch.Tensor) -> None:
        """One forward over an (N, L) batch of ids, already on the device (no tokenization)."""
        self.model(input_ids=ids).last_hidden_state[:, 0].float().cpu()
