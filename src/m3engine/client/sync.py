"""The blocking client: `Client("http://127.0.0.1:8080").embed(["text"], sparse=True)`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from m3engine.client import protocol
from m3engine.client.protocol import RankedDocument, Texts
from m3engine.results import Embedding, HybridScore


class Client:
    """m3engine's routes that OpenAI's SDK cannot express: BGE-M3's three outputs from one pass,
    hybrid scores, reranking. `model` (embed, score) and `reranker` (rerank) pick served models
    (default: the server's for each task); 429 and 503 answers are retried `retries` times after
    the delay the server asks for."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        model: str | None = None,
        reranker: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        batch_size: int = 256,
        http: httpx.Client | None = None,
    ) -> None:
        # `http`: a ready httpx client instead, with its own base_url, headers and transport
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout, headers=headers)
        self.model, self.reranker = model, reranker
        self.retries, self.batch_size = retries, batch_size

    def embed(
        self,
        texts: Texts,
        *,
        dense: bool = True,
        sparse: bool = True,
        colbert: bool = False,
        input_type: Literal["query", "passage"] = "passage",
        truncate: bool = True,
        dimensions: int | None = None,
        sparse_top_k: int | None = None,
        model: str | None = None,
    ) -> list[Embedding]:
        """One `Embedding` per text, in order (sent `batch_size` texts per request)."""
        items = protocol.as_list(texts)
        out: list[Embedding] = []
        for offset, batch in protocol.batches(items, self.batch_size):
            body = protocol.embed_body(
                batch,
                model=model or self.model,
                dense=dense,
                sparse=sparse,
                colbert=colbert,
                input_type=input_type,
                truncate=truncate,
                dimensions=dimensions,
                sparse_top_k=sparse_top_k,
            )
            out += protocol.parse_embeddings(self._post("/v1/embed_m3", body), offset)
        return out

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        *,
        model: str | None = None,
    ) -> list[HybridScore]:
        """FlagEmbedding's compute_score for each (query, passage) pair, computed by the server."""
        body = protocol.score_body(pairs, weights, model or self.model)
        return protocol.parse_scores(self._post("/v1/score", body))

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        raw_scores: bool = False,
        return_documents: bool = False,
        max_chunks_per_doc: int | None = None,
        model: str | None = None,
    ) -> list[RankedDocument]:
        """Documents best first, scored by the cross-encoder (sigmoid unless `raw_scores`)."""
        body = protocol.rerank_body(
            query,
            documents,
            model=model or self.reranker,
            top_n=top_n,
            raw_scores=raw_scores,
            return_documents=return_documents,
            max_chunks_per_doc=max_chunks_per_doc,
        )
        return protocol.parse_ranking(self._post("/v1/rerank", body))

    def models(self) -> list[str]:
        """The names the server answers to (each can be sent as `model`)."""
        return [m["id"] for m in protocol.check(self.http.get("/v1/models"))["data"]]

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            response = self.http.post(path, json=protocol.without_nones(body))
            delay = protocol.retry_delay(response, attempt, self.retries)
            if delay is None:
                return protocol.check(response)
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
