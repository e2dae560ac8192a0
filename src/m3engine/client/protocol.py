"""What the client sends and what it makes of the answers, shared by the sync and async clients.

Answers become the records the in-process Engine returns (`Embedding` with numpy arrays and a
`SparseVector`, `HybridScore`), so code moves between `Engine` and a server unchanged.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from m3engine.errors import M3EngineError
from m3engine.results import Embedding, HybridScore
from m3engine.types import SparseVector

Texts = str | Sequence[str]
RETRY_STATUSES = (429, 503)  # overloaded, or a deadline / drain: the server says when to come back
MAX_RETRY_DELAY_S = 30.0


class ServerError(M3EngineError):
    """An error answer from the server: its HTTP status, its error type and its message."""

    def __init__(self, status: int, label: str, message: str) -> None:
        super().__init__(f"{status} {label}: {message}")
        self.status = status
        self.label = label
        self.message = message


@dataclass(frozen=True)
class RankedDocument:
    """One reranked document: its position in the request, its score, and its text when asked."""

    index: int
    score: float
    document: str | None = None


def as_list(texts: Texts) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def batches(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """(offset, items) in pieces of at most `size`: a server refuses more than its
    --max-inputs-per-request (1,024 by default) in one request."""
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def without_nones(body: dict[str, Any]) -> dict[str, Any]:
    """Fields left unset are left out, so that the server's defaults apply."""
    return {k: v for k, v in body.items() if v is not None}


def parse_embeddings(answer: dict[str, Any], offset: int) -> list[Embedding]:
    out = []
    for item in answer["data"]:
        sparse = item.get("sparse")
        colbert = item.get("colbert")
        out.append(
            Embedding(
                index=int(item["index"]) + offset,
                num_tokens=int(item["num_tokens"]),
                truncated=bool(item["truncated"]),
                dense=_decode(item["dense"], "<f4") if "dense" in item else None,
                sparse=SparseVector.from_lists(sparse["indices"], sparse["values"]) if sparse else None,
                # (num_tokens - 1, dim): one row per token but the first
                colbert=_decode(colbert, "<f2").reshape(int(item["num_tokens"]) - 1, -1) if colbert else None,
            )
        )
    return out


def _decode(data: str | list[float], dtype: str) -> np.ndarray:
    if isinstance(data, list):
        return np.asarray(data, dtype=np.float32)
    return np.frombuffer(base64.b64decode(data), dtype=dtype).astype(np.float32)


def parse_scores(answer: dict[str, Any]) -> list[HybridScore]:
    return [
        HybridScore(
            dense=item["dense"],
            sparse=item["sparse"],
            colbert=item["colbert"],
            sparse_dense=item["sparse+dense"],
            colbert_sparse_dense=item["colbert+sparse+dense"],
        )
        for item in answer["data"]
    ]


def parse_ranking(answer: dict[str, Any]) -> list[RankedDocument]:
    return [
        RankedDocument(int(r["index"]), float(r["relevance_score"]), (r.get("document") or {}).get("text"))
        for r in answer["results"]
    ]


def check(response: httpx.Response) -> dict[str, Any]:
    """The JSON answer, or a ServerError with the server's own message (which says how to fix it)."""
    if response.is_success:
        body: dict[str, Any] = response.json()
        return body
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    if isinstance(error, dict):
        raise ServerError(response.status_code, str(error.get("type")), str(error.get("message")))
    raise ServerError(response.status_code, "http", str(error or response.text[:200]))


def retry_delay(response: httpx.Response, attempt: int, retries: int) -> float | None:
    """Seconds to wait before sending again, or None to give up: 429 and 503 only, as the server's
    retry-after-ms (already spread +-50 % per answer) or Retry-After says, else a jittered backoff."""
    if response.status_code not in RETRY_STATUSES or attempt >= retries:
        return None
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = response.headers.get(header)
        if raw is not None:
            try:
                return min(MAX_RETRY_DELAY_S, max(0.0, float(raw) * scale))
            except ValueError:
                break
    return min(MAX_RETRY_DELAY_S, 0.1 * 2.0**attempt * (0.5 + random.random()))


class Retry:
    """The retry decision for one request, attempt after attempt, so that the sync and async clients
    keep only the sending and the sleeping:

        while (delay := retry.after(response := send())) is not None: sleep(delay)
    """

    def __init__(self, retries: int) -> None:
        self.retries, self.attempt = retries, 0

    def after(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again, or None when `response` is the answer."""
        delay = retry_delay(response, self.attempt, self.retries)
        self.attempt += 1
        return delay
