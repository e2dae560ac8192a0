"""The asyncio client: `await AsyncClient("http://127.0.0.1:8080").embed(["text"], sparse=True)`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from m3engine.client import protocol
from m3engine.client.protocol import RankedDocument, Texts
from m3engine.results import Embedding, HybridScore


class AsyncClient:
    """The same calls as `Client`, awaitable; the batches of one `embed` call are sent at once
    (up to `concurrency`), since the server batches across requests anyway."""

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
        concurrency: int = 4,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        # `http`: a ready httpx client instead, with its own base_url, headers and transport
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=headers)
        self.model, self.reranker = model, reranker
        self.retries, self.batch_size = retries, batch_size
        self._slots = asyncio.Semaphore(concurrency)

    async def embed(
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
        """One `Embedding` per text, in order."""

        async def one(offset: int, batch: Sequence[str]) -> list[Embedding]:
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
            return protocol.parse_embeddings(await self._post("/v1/embed_m3", body), offset)

        items = protocol.as_list(texts)
        parts = await asyncio.gather(*(one(o, b) for o, b in protocol.batches(items, self.batch_size)))
        return [e for part in parts for e in part]

    async def score(
        self,
        pairs: Sequence[tuple[str, str]],
        weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        *,
        model: str | None = None,
    ) -> list[HybridScore]:
        body = protocol.score_body(pairs, weights, model or self.model)
        return protocol.parse_scores(await self._post("/v1/score", body))

    async def rerank(
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
        body = protocol.rerank_body(
            query,
            documents,
            model=model or self.reranker,
            top_n=top_n,
            raw_scores=raw_scores,
            return_documents=return_documents,
            max_chunks_per_doc=max_chunks_per_doc,
        )
        return protocol.parse_ranking(await self._post("/v1/rerank", body))

    async def models(self) -> list[str]:
        return [m["id"] for m in protocol.check(await self.http.get("/v1/models"))["data"]]

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        async with self._slots:
            while True:
                response = await self.http.post(path, json=protocol.without_nones(body))
                delay = protocol.retry_delay(response, attempt, self.retries)
                if delay is None:
                    return protocol.check(response)
                await asyncio.sleep(delay)
                attempt += 1

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
