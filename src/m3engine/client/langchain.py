"""LangChain `Embeddings` over an m3engine server: BGE-M3's dense vectors, queries embedded with the
query policy (instruction and length) and documents with the passage policy.

    from m3engine.client.langchain import M3Embeddings
    embeddings = M3Embeddings("http://127.0.0.1:8080")
    vectors = embeddings.embed_documents(["a passage"]); query = embeddings.embed_query("a question")

Needs langchain-core: `pip install 'm3engine[langchain]'`. Sparse weights for Qdrant's hybrid
retrieval: `m3engine.client.langchain_qdrant.M3SparseEmbeddings`.
"""

from __future__ import annotations

from typing import Literal

try:
    from langchain_core.embeddings import Embeddings
except ImportError as error:  # the adapter is optional; the rest of m3engine.client is not
    raise ImportError(
        "m3engine.client.langchain needs langchain-core; install it with: pip install 'm3engine[langchain]'"
    ) from error

from m3engine.client.aio import AsyncClient
from m3engine.client.sync import Client


class M3Embeddings(Embeddings):
    """`model`: a served model's name (default: the server's embedding model); `dimensions`: keep
    the first N values of each vector (then re-normalised)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        model: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        timeout: float = 60.0,
        batch_size: int = 256,
    ) -> None:
        self.base_url, self.dimensions = base_url, dimensions
        self._options = {"model": model, "api_key": api_key, "timeout": timeout, "batch_size": batch_size}
        self.client = Client(base_url, **self._options)  # type: ignore[arg-type]
        self._async: AsyncClient | None = None  # made on first use, inside the caller's event loop

    @property
    def async_client(self) -> AsyncClient:
        if self._async is None:
            self._async = AsyncClient(self.base_url, **self._options)  # type: ignore[arg-type]
        return self._async

    def _dense(self, texts: list[str], input_type: Literal["query", "passage"]) -> list[list[float]]:
        records = self.client.embed(texts, sparse=False, input_type=input_type, dimensions=self.dimensions)
        return [r.dense.tolist() for r in records if r.dense is not None]

    async def _adense(self, texts: list[str], input_type: Literal["query", "passage"]) -> list[list[float]]:
        records = await self.async_client.embed(
            texts, sparse=False, input_type=input_type, dimensions=self.dimensions
        )
        return [r.dense.tolist() for r in records if r.dense is not None]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._dense(texts, "passage")

    def embed_query(self, text: str) -> list[float]:
        return self._dense([text], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self._adense(texts, "passage")

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._adense([text], "query"))[0]
